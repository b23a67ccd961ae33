# TRAM_WITH_CUDA: compile tram's CUDA kernels. Defaults on when the LibTorch
# that was found is CUDA-enabled and a CUDA compiler is available.
set(_tram_torch_has_cuda OFF)
if(TARGET torch_cuda OR TORCH_CUDA_LIBRARIES)
  set(_tram_torch_has_cuda ON)
endif()
include(CheckLanguage)
check_language(CUDA)
if(_tram_torch_has_cuda AND CMAKE_CUDA_COMPILER)
  set(_tram_cuda_default ON)
else()
  set(_tram_cuda_default OFF)
endif()
option(TRAM_WITH_CUDA "Compile tram's CUDA kernels" ${_tram_cuda_default})
if(TRAM_WITH_CUDA)
  if(NOT _tram_torch_has_cuda)
    message(FATAL_ERROR "TRAM_WITH_CUDA=ON but the LibTorch found at ${Torch_DIR} has no CUDA")
  endif()
  # One CUDA runtime per process: LibTorch's shared libcudart. CMake's
  # default (static) would link a second runtime into every executable, and
  # tram's kernels would then be registered with and launched through a
  # runtime other than the one that created LibTorch's streams.
  set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)
  enable_language(CUDA)
  # find_package(Torch) overrides CMAKE_CUDA_ARCHITECTURES; tram sets them per
  # target instead (sm_80 A100, sm_90 H100/H200; nvcc 13 builds sm_75+).
  set(TRAM_CUDA_ARCHITECTURES "80;90" CACHE STRING "CUDA architectures of tram's kernels")
  # find_package(Torch) also appends "-gencode arch=...,code=..." for its own
  # architecture list to CMAKE_CUDA_FLAGS (without a GPU: about a dozen,
  # sm_50 included, which nvcc 13 cannot build). tram's kernels take their
  # architectures from TRAM_CUDA_ARCHITECTURES alone.
  string(REGEX REPLACE "-gencode[ =]+arch=[^ ]+" "" CMAKE_CUDA_FLAGS "${CMAKE_CUDA_FLAGS}")
endif()
message(STATUS "tram: TRAM_WITH_CUDA=${TRAM_WITH_CUDA}")
