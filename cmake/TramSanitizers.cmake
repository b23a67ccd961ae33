# TRAM_SANITIZE: build tram, its tests, tools and examples with the compiler's
# sanitizers. A comma-separated list passed to -fsanitize=, e.g.
#   -DTRAM_SANITIZE=address,undefined
# or OFF (the default). LibTorch itself stays uninstrumented; see
# docs/SANITIZERS.md for the run-time options and the suppressions file
# cmake/sanitizers/ubsan.supp.
#
# Included after find_package(Torch) and before any tram target is defined, so
# that the flags apply to every target of this project (and of nothing else:
# directory-scoped options do not leak into a consumer's targets).
set(TRAM_SANITIZE "OFF" CACHE STRING
  "Sanitizers for tram and its tests/examples (e.g. address,undefined), or OFF")

if(TRAM_SANITIZE AND NOT TRAM_SANITIZE STREQUAL "OFF")
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    message(FATAL_ERROR "TRAM_SANITIZE needs GCC or Clang (compiler: ${CMAKE_CXX_COMPILER_ID})")
  endif()
  string(REPLACE " " "" _tram_san "${TRAM_SANITIZE}")
  string(REPLACE ";" "," _tram_san "${_tram_san}")
  if(_tram_san MATCHES "address" AND _tram_san MATCHES "(^|,)thread")
    message(FATAL_ERROR "TRAM_SANITIZE: address and thread cannot be combined")
  endif()
  set(_tram_san_flags
    -fsanitize=${_tram_san}
    -fno-omit-frame-pointer
    -g)
  # C++ only: nvcc does not take -fsanitize, and the CUDA kernels run on the
  # device where host sanitizers see nothing.
  add_compile_options("$<$<COMPILE_LANGUAGE:CXX>:${_tram_san_flags}>")
  add_link_options(-fsanitize=${_tram_san})
  set(TRAM_SANITIZE_FLAGS "${_tram_san}")
  message(STATUS "tram: TRAM_SANITIZE=${_tram_san} (run the tests with the options in docs/SANITIZERS.md)")
endif()
