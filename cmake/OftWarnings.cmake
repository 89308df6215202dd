# Warning flags of the project's own C++ code: the one place that sets them.
#
#   OFT_WERROR (default ON): warnings are errors. Turn it off for a compiler whose warnings this
#   tree has not been checked against (the tree is checked with GCC 12 and Clang 14).
#
# oft_enable_warnings() adds -Wall -Wextra (and -Werror) to every C++ target defined from then
# on in the calling directory and the directories it adds. Call it after add_subdirectory(proto)
# (the protoc output is not our code) and before the project's own directories. The flags
# apply to C++ only, never to nvcc's .cu files. Third-party headers stay out of it because
# they are included as SYSTEM: imported targets (LibTorch, gRPC, protobuf, Abseil,
# prometheus-cpp, pkg-config modules) are SYSTEM by default, and oft_proto's generated *.pb.h
# are marked SYSTEM where the library is defined.
option(OFT_WERROR "Treat warnings in the project's own C++ code as errors" ON)

function(oft_enable_warnings)
  set(_flags -Wall -Wextra)
  if(OFT_WERROR)
    list(APPEND _flags -Werror)
  endif()
  # GCC's sanitizer instrumentation makes -Wmaybe-uninitialized report values that are
  # initialised (GCC's manual, -fsanitize=address: "sanitizers tend to increase the rate of
  # false positive warnings, most notably those around -Wmaybe-uninitialized"). GCC 12 with
  # -fsanitize=thread flags the string bound by OFT_ASSIGN_OR_RETURN in pre_tokenizers.cc.
  # The normal build keeps the warning, so the code is still checked for it there.
  if(OFT_SANITIZE AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    list(APPEND _flags -Wno-maybe-uninitialized)
  endif()
  foreach(_flag IN LISTS _flags)
    add_compile_options($<$<COMPILE_LANGUAGE:CXX>:${_flag}>)
  endforeach()
endfunction()

# oft_gtest_prints_protobuf(TARGET...): for test targets whose gtest assertions print protobuf
# messages. GCC 12 reports a false -Wrestrict inside GoogleTest's own printer
# (gtest-printers.h, ProtobufPrinter::PrintValue: "<" + ShortDebugString() + ">", inlined
# into the test): GCC bugs 105329 / 105651, fixed in GCC 13. Only for those targets, only
# for GCC before 13.
function(oft_gtest_prints_protobuf)
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
    foreach(_target IN LISTS ARGN)
      target_compile_options(${_target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Wno-restrict>)
    endforeach()
  endif()
endfunction()
