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
  # One CUDA runtime per process: the shared one LibTorch loads, never a static copy.
  set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)
  enable_language(CUDA)
  set(CMAKE_CUDA_STANDARD 17)   # CMake 3.25 does not know nvcc 13's C++20 flag
  find_package(CUDAToolkit REQUIRED)
  # Link the CUDA runtime and cuBLAS of the torch wheel (nvidia/cu*/lib), the copies
  # libtorch_cuda.so itself loads, not /usr/local/cuda's: with the wheel's directory first in
  # the run path, the process maps exactly one libcudart and one libcublas. Falls back to the
  # toolkit's when the wheel does not carry them (e.g. a system LibTorch).
  file(GLOB _wheel_cuda_dirs "${OFT_VENV}/lib/python3*/site-packages/nvidia/cu*/lib")
  foreach(_lib cudart cublas cublasLt)
    unset(_found)
    foreach(_dir ${_wheel_cuda_dirs})
      file(GLOB _found "${_dir}/lib${_lib}.so.[0-9]*")
      if(_found)
        list(GET _found 0 _found)
        break()
      endif()
    endforeach()
    if(NOT TARGET oft_cuda::${_lib})
      add_library(oft_cuda::${_lib} SHARED IMPORTED)
      if(_found)
        set_target_properties(oft_cuda::${_lib} PROPERTIES IMPORTED_LOCATION "${_found}")
      else()
        get_target_property(_loc CUDA::${_lib} IMPORTED_LOCATION)
        set_target_properties(oft_cuda::${_lib} PROPERTIES IMPORTED_LOCATION "${_loc}")
      endif()
      target_include_directories(oft_cuda::${_lib} INTERFACE ${CUDAToolkit_INCLUDE_DIRS})
    endif()
    message(STATUS "CUDA ${_lib}: ${_found}")
  endforeach()
  # CMake orders the run path by link directories, which puts the toolkit's lib directory
  # (from LibTorch's CUDA targets) ahead of the wheel's; a run path given on the command line
  # comes first, so the loader resolves libcudart/libcublas in the wheel.
  if(_wheel_cuda_dirs)
    list(GET _wheel_cuda_dirs 0 _wheel_cuda_dir)
    foreach(_kind EXE SHARED MODULE)
      string(APPEND CMAKE_${_kind}_LINKER_FLAGS " -Wl,-rpath,${_wheel_cuda_dir}")
    endforeach()
  endif()
endif()
