# install() rules and the exported package: a consumer does find_package(tram)
# and links tram::tram (which brings LibTorch through find_dependency), and
# tram::hf when it was built (its dependencies come the same way).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(TARGETS tram EXPORT tramTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY include/tram DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
if(TARGET tram_hf)
  install(TARGETS tram_hf EXPORT tramTargets ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
  install(DIRECTORY hf/include/tram/hf DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/tram)
endif()
install(EXPORT tramTargets NAMESPACE tram:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/tram)

configure_package_config_file(cmake/tram-config.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/tram-config.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/tram)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/tram-config-version.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/tram-config.cmake
              ${CMAKE_CURRENT_BINARY_DIR}/tram-config-version.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/tram)

# Run-time search path of what is installed. CMake drops the build tree's
# RPATH at install time and by default puts nothing in its place, so an
# installed tram-trace (or a shared libtram) would find LibTorch only through
# LD_LIBRARY_PATH. tram_install_rpath(<target>) sets INSTALL_RPATH to
#   $ORIGIN/../<libdir>   a shared libtram, for an executable in <prefix>/bin
#                         ($ORIGIN for libtram itself), and
#   the directory of every shared library the target links that is not in a
#   system directory: LibTorch's lib/ (libtorch, libtorch_cpu, libtorch_cuda,
#   libc10, ...) and, with CUDA, the directory of the CUDA runtime LibTorch
#   links (torch::cudart -> CUDA::cudart).
# Only the target's own NEEDED entries use its RUNPATH; LibTorch's libraries
# find their dependencies through their own RPATH ($ORIGIN/...).
function(_tram_link_closure_dirs out)
  set(queue ${ARGN})
  set(seen "")
  set(dirs "")
  string(TOUPPER "${CMAKE_BUILD_TYPE}" config)
  while(queue)
    list(POP_FRONT queue item)
    # Generator expressions: follow the targets named in $<LINK_ONLY:t>,
    # $<TARGET_FILE:t> and $<TARGET_PROPERTY:t,...> (LibTorch's
    # torch_library / torch_cpu_library wrappers use the last two); drop
    # the rest.
    if(item MATCHES "\\$<")
      string(REGEX MATCHALL "\\$<(LINK_ONLY|TARGET_FILE|TARGET_LINKER_FILE|TARGET_PROPERTY):[^,>]+" refs "${item}")
      foreach(ref IN LISTS refs)
        string(REGEX REPLACE "^\\$<[A-Z_]+:" "" ref "${ref}")
        list(APPEND queue "${ref}")
      endforeach()
      continue()
    endif()
    if(item IN_LIST seen)
      continue()
    endif()
    list(APPEND seen "${item}")
    if(TARGET "${item}")
      get_target_property(aliased "${item}" ALIASED_TARGET)
      if(aliased)
        list(APPEND queue "${aliased}")
        continue()
      endif()
      get_target_property(type "${item}" TYPE)
      get_target_property(imported "${item}" IMPORTED)
      if(imported AND type MATCHES "^(SHARED|UNKNOWN)_LIBRARY$")
        set(location "")
        if(config)
          get_target_property(location "${item}" IMPORTED_LOCATION_${config})
        endif()
        if(NOT location)
          get_target_property(location "${item}" IMPORTED_LOCATION)
        endif()
        if(NOT location)
          get_target_property(configs "${item}" IMPORTED_CONFIGURATIONS)
          if(configs)
            list(GET configs 0 first)
            get_target_property(location "${item}" IMPORTED_LOCATION_${first})
          endif()
        endif()
        if(location MATCHES "\\.so(\\.|$)")
          get_filename_component(dir "${location}" DIRECTORY)
          list(APPEND dirs "${dir}")
        endif()
      endif()
      if(NOT type STREQUAL "INTERFACE_LIBRARY" AND NOT imported)
        get_target_property(links "${item}" LINK_LIBRARIES)
        if(links)
          list(APPEND queue ${links})
        endif()
      endif()
      get_target_property(links "${item}" INTERFACE_LINK_LIBRARIES)
      if(links)
        list(APPEND queue ${links})
      endif()
    elseif(IS_ABSOLUTE "${item}" AND item MATCHES "\\.so(\\.|$)")
      get_filename_component(dir "${item}" DIRECTORY)
      list(APPEND dirs "${dir}")
    endif()
  endwhile()
  set(system_dirs ${CMAKE_PLATFORM_IMPLICIT_LINK_DIRECTORIES} ${CMAKE_CXX_IMPLICIT_LINK_DIRECTORIES})
  set(result "")
  foreach(dir IN LISTS dirs)
    get_filename_component(dir "${dir}" ABSOLUTE)
    # A toolkit's stubs/ (libcuda.so for linking) must never be searched at
    # run time: it would shadow the driver's library.
    if(NOT dir IN_LIST system_dirs AND NOT dir IN_LIST result AND NOT dir MATCHES "/stubs$")
      list(APPEND result "${dir}")
    endif()
  endforeach()
  set(${out} "${result}" PARENT_SCOPE)
endfunction()

function(tram_install_rpath target)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
    set(own "${CMAKE_INSTALL_LIBDIR}")
  else()
    # $ORIGIN is <prefix>/bin for an executable, <prefix>/<libdir> for libtram.
    get_target_property(type ${target} TYPE)
    if(type STREQUAL "EXECUTABLE")
      set(own "$ORIGIN/../${CMAKE_INSTALL_LIBDIR}")
    else()
      set(own "$ORIGIN")
    endif()
  endif()
  _tram_link_closure_dirs(dirs ${target})
  set_target_properties(${target} PROPERTIES INSTALL_RPATH "${own};${dirs}")
endfunction()

get_target_property(_tram_type tram TYPE)
if(_tram_type STREQUAL "SHARED_LIBRARY")
  tram_install_rpath(tram)
endif()
if(TARGET tram-trace)
  tram_install_rpath(tram-trace)
  install(TARGETS tram-trace RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()
