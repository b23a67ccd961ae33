# TRAM_WITH_NCCL: compile tram::make_nccl_process_group (include/tram/
# distributed.h). Defaults on when the LibTorch that was found has c10d NCCL
# (its torch_cuda target carries USE_C10D_NCCL, as the CUDA wheels' does) and
# nccl.h is found (the CUDA toolkit, /usr/local/include, or NCCL_ROOT /
# NCCL_INCLUDE_DIR). Off, the function still exists and throws a message that
# says how to rebuild. Only src/distributed.cpp sees the definitions
# (TRAM_HAVE_NCCL, USE_C10D_NCCL) and nccl.h; no consumer needs them.
set(_tram_torch_has_nccl OFF)
if(TARGET torch_cuda)
  get_target_property(_tram_torch_cuda_defs torch_cuda INTERFACE_COMPILE_DEFINITIONS)
  if(_tram_torch_cuda_defs MATCHES "USE_C10D_NCCL")
    set(_tram_torch_has_nccl ON)
  endif()
endif()
find_path(TRAM_NCCL_INCLUDE_DIR nccl.h
  HINTS ENV NCCL_INCLUDE_DIR ENV NCCL_ROOT ${NCCL_ROOT} ${CUDAToolkit_INCLUDE_DIRS} ${CUDA_INCLUDE_DIRS}
  PATHS /usr/local/cuda /usr/local /usr
  PATH_SUFFIXES include)
if(_tram_torch_has_nccl AND TRAM_NCCL_INCLUDE_DIR)
  set(_tram_nccl_default ON)
else()
  set(_tram_nccl_default OFF)
endif()
option(TRAM_WITH_NCCL "Compile tram::make_nccl_process_group (LibTorch with c10d NCCL)" ${_tram_nccl_default})
if(TRAM_WITH_NCCL)
  if(NOT _tram_torch_has_nccl)
    message(FATAL_ERROR "TRAM_WITH_NCCL=ON but the LibTorch found at ${Torch_DIR} has no c10d NCCL "
                        "(its torch_cuda target does not define USE_C10D_NCCL)")
  endif()
  if(NOT TRAM_NCCL_INCLUDE_DIR)
    message(FATAL_ERROR "TRAM_WITH_NCCL=ON but nccl.h was not found; set NCCL_INCLUDE_DIR or NCCL_ROOT")
  endif()
endif()
message(STATUS "tram: TRAM_WITH_NCCL=${TRAM_WITH_NCCL}")
