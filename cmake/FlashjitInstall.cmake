# What `cmake --install` puts where: the C library, its header and a CMake
# package (find_package(flashjit) gives flashjit::flashjit), and the CLI.
# The Python wheel (SKBUILD) installs its own component, `python`, from
# python/CMakeLists.txt.
include(CMakePackageConfigHelpers)

set(FLASHJIT_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/flashjit)
install(TARGETS flashjit_shared EXPORT flashjitTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT library)
install(FILES ${PROJECT_SOURCE_DIR}/runtime/include/flashjit/flashjit.h
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/flashjit COMPONENT library)
install(EXPORT flashjitTargets NAMESPACE flashjit::
  DESTINATION ${FLASHJIT_CMAKE_DIR} COMPONENT library)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/flashjitConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/flashjitConfig.cmake
  INSTALL_DESTINATION ${FLASHJIT_CMAKE_DIR})
write_basic_package_version_file(
  ${CMAKE_CURRENT_BINARY_DIR}/flashjitConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/flashjitConfig.cmake
              ${CMAKE_CURRENT_BINARY_DIR}/flashjitConfigVersion.cmake
  DESTINATION ${FLASHJIT_CMAKE_DIR} COMPONENT library)
install(TARGETS flashjit RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  COMPONENT cli)
