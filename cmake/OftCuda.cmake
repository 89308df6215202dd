# Decides whether to build the CUDA kernels (OFT_WITH_CUDA) and prepares the CUDA language.
# Torch's own CMake config probes GPUs unless TORCH_CUDA_ARCH_LIST is set; no GPU exists at
# build time here, so it is always set.
set(TORCH_CUDA_ARCH_LIST "8.0;9.0" CACHE STRING "CUDA archs for Torch's CMake config")
# AUTO: on when nvcc exists and the torch wheel is CUDA-enabled (libtorch_cuda.so present).
set(OFT_WITH_CUDA OFF)
file(GLOB _torch_cuda_lib "${OFT_VENV}/lib/python3*/site-packages/torch/lib/libtorch_cuda.so")
if(NOT OFT_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER AND _torch_cuda_lib)
    set(OFT_WITH_CUDA ON)
  elseif(OFT_CUDA STREQUAL "ON")
    message(FATAL_ERROR "OFT_CUDA=ON but nvcc (${CMAKE_CUDA_COMPILER}) or a CUDA LibTorch was not found")
  endif()
endif()
if(OFT_WITH_CUDA)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 80 90)   # A100, H100/H200
  endif()
  enable_language(CUDA)
  set(CMAKE_CUDA_STANDARD 17)   # CMake 3.25 does not know nvcc 13's C++20 flag
  find_package(CUDAToolkit REQUIRED)
endif()
