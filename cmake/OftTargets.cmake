# Helpers for one-target-per-component libraries and one-gtest-per-file tests.

# oft_test(NAME SRC LIBS... [LABELS l1 l2])
function(oft_test name src)
  cmake_parse_arguments(T "" "" "LIBS;LABELS" ${ARGN})
  add_executable(${name} ${src})
  # oft_test_main (tests/test_main.cc): a private ::testing::TempDir() per test process.
  target_link_libraries(${name} PRIVATE ${T_LIBS} GTest::gtest oft_test_main)
  # gtest_discover_tests passes each list element of PROPERTIES as a separate argument of
  # set_tests_properties, so a list-valued property would spill into property names: every
  # property here holds exactly one value. A test gets its own label (e.g. "gpu") instead
  # of "unit"; MKL follows OMP_NUM_THREADS when MKL_NUM_THREADS is unset.
  if(T_LABELS)
    list(LENGTH T_LABELS _n)
    if(NOT _n EQUAL 1)
      message(FATAL_ERROR "oft_test(${name}): give exactly one label, got ${T_LABELS}")
    endif()
    set(_label ${T_LABELS})
  else()
    set(_label unit)
  endif()
  gtest_discover_tests(${name}
    DISCOVERY_TIMEOUT 120
    TEST_PREFIX "${name}."
    PROPERTIES LABELS ${_label} ENVIRONMENT OMP_NUM_THREADS=1)
endfunction()

# oft_use_parallel_for(TARGET SRC...): SRC call at::parallel_for; compile them with OpenMP
# and link LibTorch's OpenMP runtime (see OFT_TORCH_OPENMP_LIB in CMakeLists.txt).
function(oft_use_parallel_for target)
  if(OFT_TORCH_OPENMP_LIB)
    set_source_files_properties(${ARGN} TARGET_DIRECTORY ${target} PROPERTIES COMPILE_OPTIONS -fopenmp)
    target_link_libraries(${target} PRIVATE ${OFT_TORCH_OPENMP_LIB})
  endif()
endfunction()
