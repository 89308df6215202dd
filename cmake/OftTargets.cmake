# Helpers for one-target-per-component libraries and one-gtest-per-file tests.

# oft_test(NAME SRC LIBS... [LABELS l1 l2])
function(oft_test name src)
  cmake_parse_arguments(T "" "" "LIBS;LABELS" ${ARGN})
  add_executable(${name} ${src})
  target_link_libraries(${name} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main)
  # List-valued properties pass through gtest_discover_tests' generated script: escape
  # their separators, or only the first element survives.
  set(_labels unit ${T_LABELS})
  string(REPLACE ";" "\\;" _labels "${_labels}")
  gtest_discover_tests(${name}
    DISCOVERY_TIMEOUT 120
    TEST_PREFIX "${name}."
    PROPERTIES LABELS "${_labels}" ENVIRONMENT "OMP_NUM_THREADS=1\\;MKL_NUM_THREADS=1")
endfunction()
