# Interop and deploy tests (issue 5), include()d from tests/integration/CMakeLists.txt.
# Python tests run with the project venv's interpreter (grpcio, grpcio-tools, PyYAML:
# scripts/setup.sh). Labels: "integration;interop". Exit code 77 = skipped.
set(_oft_py "${OFT_VENV}/bin/python")
set(_oft_itest "${PROJECT_SOURCE_DIR}/tests/integration")

# deploy/ and the Dockerfile: YAML/JSON structure, metric names vs. the server's.
add_test(NAME interop.deploy_manifests
         COMMAND "${_oft_py}" "${_oft_itest}/python/deploy_manifests_test.py" "${PROJECT_SOURCE_DIR}")
# deploy/prometheus with promtool (config, rules, rule unit tests).
add_test(NAME interop.promtool_check
         COMMAND bash "${_oft_itest}/prometheus/promtool_check_test.sh" "${PROJECT_SOURCE_DIR}")
set_tests_properties(interop.deploy_manifests interop.promtool_check PROPERTIES
                     LABELS "integration;interop" SKIP_RETURN_CODE 77 TIMEOUT 120)

if(TARGET oft_server)
  # A Python grpcio client (stubs generated from proto/) runs a job end to end.
  add_test(NAME interop.grpcio_client
           COMMAND "${_oft_py}" "${_oft_itest}/python/grpcio_client_test.py"
                   "$<TARGET_FILE:oft_server>" "${PROJECT_SOURCE_DIR}")
  # A real Prometheus scrapes the server; its query API returns our series.
  add_test(NAME interop.prometheus_scrape
           COMMAND "${_oft_py}" "${_oft_itest}/prometheus/prometheus_scrape_test.py"
                   "$<TARGET_FILE:oft_server>" "${PROJECT_SOURCE_DIR}")
  # The official openai client against the HTTP API (issue 14): same seed == gRPC Generate.
  add_test(NAME interop.openai_client
           COMMAND "${_oft_py}" "${_oft_itest}/python/openai_api_test.py"
                   "$<TARGET_FILE:oft_server>" "${PROJECT_SOURCE_DIR}")
  # Files and fine-tuning jobs through the same client: upload, train, events, chat with the result.
  add_test(NAME interop.openai_fine_tuning
           COMMAND "${_oft_py}" "${_oft_itest}/python/openai_fine_tuning_test.py"
                   "$<TARGET_FILE:oft_server>" "${PROJECT_SOURCE_DIR}")
  # Jobs in supervised worker processes (issue 12): crash/restart, cancel, orphans.
  add_test(NAME interop.worker_process
           COMMAND "${_oft_py}" "${_oft_itest}/python/worker_process_test.py"
                   "$<TARGET_FILE:oft_server>" "${PROJECT_SOURCE_DIR}")
  # Multi-device jobs (issue 12): 2 CPU devices, a 2-rank job, gang scheduling, rank kill, cancel.
  add_test(NAME interop.gang_process
           COMMAND "${_oft_py}" "${_oft_itest}/python/gang_process_test.py"
                   "$<TARGET_FILE:oft_server>" "${PROJECT_SOURCE_DIR}")
  # Worker and rank faults with company, 2-rank restart exhaustion, server SIGKILL mid-gang (issue 12).
  add_test(NAME interop.gang_fault
           COMMAND "${_oft_py}" "${_oft_itest}/python/gang_fault_test.py"
                   "$<TARGET_FILE:oft_server>" "${PROJECT_SOURCE_DIR}")
  # A job's result does not depend on what else runs (issue 12): same spec alone and beside
  # another job -> bitwise identical adapter and losses (process mode; thread mode recorded).
  add_test(NAME interop.reproducibility
           COMMAND "${_oft_py}" "${_oft_itest}/python/reproducibility_test.py"
                   "$<TARGET_FILE:oft_server>" "${PROJECT_SOURCE_DIR}")
  # ImportAdapter (issue 12): an adapter made by Hugging Face PEFT imported through grpcio.
  add_test(NAME interop.import_peft_adapter
           COMMAND "${_oft_py}" "${_oft_itest}/python/import_peft_adapter_test.py"
                   "$<TARGET_FILE:oft_server>" "${PROJECT_SOURCE_DIR}")
  # Server reflection v1 and v1alpha through grpcio (stubs generated from proto/grpc/reflection/v1).
  add_test(NAME interop.reflection_v1
           COMMAND "${_oft_py}" "${_oft_itest}/python/reflection_v1_test.py"
                   "$<TARGET_FILE:oft_server>" "${PROJECT_SOURCE_DIR}")
  set_tests_properties(interop.reflection_v1 PROPERTIES
                       LABELS "integration;interop" SKIP_RETURN_CODE 77 TIMEOUT 180)
  set_tests_properties(interop.grpcio_client interop.prometheus_scrape interop.openai_client
                       interop.openai_fine_tuning interop.worker_process interop.gang_process
                       interop.gang_fault interop.reproducibility interop.import_peft_adapter PROPERTIES
                       LABELS "integration;interop" SKIP_RETURN_CODE 77 TIMEOUT 600
                       ENVIRONMENT "OMP_NUM_THREADS=1;MKL_NUM_THREADS=1")
endif()
