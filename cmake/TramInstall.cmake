# install() rules and the exported package: a consumer does find_package(tram)
# and links tram::tram (which brings LibTorch through find_dependency).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(TARGETS tram EXPORT tramTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY include/tram DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT tramTargets NAMESPACE tram:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/tram)

configure_package_config_file(cmake/tram-config.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/tram-config.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/tram)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/tram-config-version.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/tram-config.cmake
              ${CMAKE_CURRENT_BINARY_DIR}/tram-config-version.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/tram)
if(TARGET tram-trace)
  install(TARGETS tram-trace RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()
