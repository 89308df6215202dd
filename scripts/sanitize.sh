#!/usr/bin/env bash
# `make sanitize`: the test suite under sanitizers, CPU only.
#   address: ASan + UBSan build (build-asan), then the unit and integration tests
#   thread:  TSan build (build-tsan), then the concurrency tests (executor, scheduler, event hub,
#            WatchJob, adapter registry, serving engine)
#   scripts/sanitize.sh [address|thread|all]
#   SANITIZE_SCOPE=quick: ASan over the LibTorch-free components' tests only (common, jobs,
#     data, tokenizer, train options, client, reflection): no test there links LibTorch.
#   SANITIZE_TARGETS="a_test b_test": ASan over exactly these test targets (a subset of the
#     full run when there is no time for the whole tree).
#   JOBS=N: build and test jobs (default: all cores).
# Run times on the 2-core development VM: docs/hardening.md, "Sanitizers".
set -euo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-all}"
SCOPE="${SANITIZE_SCOPE:-full}"
JOBS="${JOBS:-$(nproc)}"
SUPP="$PWD/scripts/sanitize"
export CCACHE_BASEDIR="$PWD"

QUICK_TARGETS="common_echo_test common_client_regex_test common_data_dir_test common_path_redact_test
  common_executor_test common_grpc_status_test common_log_test sqlite_db_test job_store_test
  dataset_store_test api_key_store_test scheduler_test job_events_test oft_dataset_test
  oft_chat_template_test oft_batching_test oft_sample_dataset_test tokenizer_test tokenizer_utf8_test
  tokenizer_regex_test tokenizer_normalizers_test tokenizer_pre_tokenizers_test
  tokenizer_bpe_model_test tokenizer_added_tokens_test tokenizer_post_processors_test
  tokenizer_decoders_test oft_train_options_test oft_lr_schedule_test oft_cpu_isa_test
  dist_launch_env_test
  client_job_file_test client_progress_test client_fake_server_test service_reflection_v1_test"
TSAN_TARGETS="common_executor_test scheduler_test service_event_hub_test service_watch_job_test
  serving_registry_test serving_engine_test"

# ctest regex of the tests of these targets: gtest_discover_tests names them "<target>.<Suite>.<Test>".
test_regex() { echo "^($(echo "$@" | tr -s ' \n' '|' | sed 's/|$//'))\\."; }

# Existing targets only (some names change as the tree is split).
existing() {
  local dir="$1"; shift
  local all; all=$(ninja -C "$dir" -t targets all 2>/dev/null | cut -d: -f1)
  for t in "$@"; do grep -qx "$t" <<<"$all" && echo "$t"; done
}

build() {  # build DIR MODE [targets...]
  local dir="$1" mode="$2"; shift 2
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DOFT_CUDA=OFF \
    -DOFT_SANITIZE="$mode" >/dev/null
  if [ $# -gt 0 ]; then
    # shellcheck disable=SC2046
    cmake --build "$dir" -j "$JOBS" --target $(existing "$dir" "$@")
  else
    cmake --build "$dir" -j "$JOBS"
  fi
}

status=0
if [ "$MODE" = address ] || [ "$MODE" = all ]; then
  start=$(date +%s)
  export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1"
  export LSAN_OPTIONS="suppressions=$SUPP/lsan.supp:print_suppressions=0"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
  if [ -n "${SANITIZE_TARGETS:-}" ]; then
    SCOPE="targets: $SANITIZE_TARGETS"
    # shellcheck disable=SC2086
    build build-asan address $SANITIZE_TARGETS
    # shellcheck disable=SC2086
    (cd build-asan && ctest --output-on-failure -j "$JOBS" -R "$(test_regex $SANITIZE_TARGETS)") || status=1
  elif [ "$SCOPE" = quick ]; then
    # shellcheck disable=SC2086
    build build-asan address $QUICK_TARGETS
    # shellcheck disable=SC2086
    (cd build-asan && ctest --output-on-failure -j "$JOBS" -R "$(test_regex $QUICK_TARGETS)") || status=1
  else
    build build-asan address
    (cd build-asan && ctest --output-on-failure -j "$JOBS" -L 'unit|integration' -LE gpu --timeout 1800) || status=1
  fi
  echo "sanitize: address ($SCOPE) took $(( $(date +%s) - start ))s, status $status"
fi
if [ "$MODE" = thread ] || [ "$MODE" = all ]; then
  start=$(date +%s)
  export TSAN_OPTIONS="suppressions=$SUPP/tsan.supp:halt_on_error=1:second_deadlock_stack=1"
  export OMP_NUM_THREADS=1
  # shellcheck disable=SC2086
  build build-tsan thread $TSAN_TARGETS
  # shellcheck disable=SC2086
  (cd build-tsan && ctest --output-on-failure -j "$JOBS" -R "$(test_regex $TSAN_TARGETS)") || status=1
  echo "sanitize: thread took $(( $(date +%s) - start ))s, status $status"
fi
exit "$status"
