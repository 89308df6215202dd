# OFT_SANITIZE: build the project's code with sanitizers (scripts/sanitize.sh, `make sanitize`).
#   address  AddressSanitizer + UndefinedBehaviorSanitizer (leaks, overflows, use-after-free, UB)
#   thread   ThreadSanitizer (data races, lock-order inversions)
# LibTorch and the Debian libraries stay uninstrumented; the run-time options and suppressions
# for their internals live in scripts/sanitize/.
set(OFT_SANITIZE "" CACHE STRING "Sanitizers: address (ASan+UBSan), thread (TSan) or empty")
set_property(CACHE OFT_SANITIZE PROPERTY STRINGS "" address thread)
if(OFT_SANITIZE STREQUAL "address")
  # vptr checks need RTTI from every library (LibTorch's classes cross our code): off.
  add_compile_options(-fsanitize=address,undefined -fno-sanitize=vptr -fno-sanitize-recover=undefined
                      -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
elseif(OFT_SANITIZE STREQUAL "thread")
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer)
  add_link_options(-fsanitize=thread)
elseif(NOT OFT_SANITIZE STREQUAL "")
  message(FATAL_ERROR "OFT_SANITIZE must be address, thread or empty, got '${OFT_SANITIZE}'")
endif()
if(OFT_SANITIZE AND OFT_CUDA STREQUAL "ON")
  message(FATAL_ERROR "OFT_SANITIZE builds are CPU-only: configure with -DOFT_CUDA=OFF")
endif()
