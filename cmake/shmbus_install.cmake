# Install rules: `cmake --install` puts the headers, libshmbus.a and
# libshmbus.so, the `shmbus` CLI (tools/), a CMake package (find_package(shmbus)
# gives shmbus::shmbus and shmbus::shmbus_shared) and a pkg-config file.
# Included from the top-level CMakeLists.txt when SHMBUS_INSTALL is on.
include(CMakePackageConfigHelpers)

set(SHMBUS_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/shmbus)

# The targets carry $<INSTALL_INTERFACE:include>; a custom include dir is added.
set(_shmbus_includes "")
if(NOT CMAKE_INSTALL_INCLUDEDIR STREQUAL "include")
  set(_shmbus_includes INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
endif()
install(TARGETS shmbus shmbus_shared
  EXPORT shmbusTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  ${_shmbus_includes})

# include/shmbus is the whole contract: its headers include nothing but the
# standard library and each other (tests/package checks each one alone), so
# bus/ and shm/ stay private to the library.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/shmbus
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  FILES_MATCHING PATTERN "*.hpp" PATTERN "*.h")

install(EXPORT shmbusTargets
  NAMESPACE shmbus::
  FILE shmbusTargets.cmake
  DESTINATION ${SHMBUS_CMAKE_DIR})

configure_package_config_file(
  ${PROJECT_SOURCE_DIR}/cmake/shmbusConfig.cmake.in
  ${PROJECT_BINARY_DIR}/shmbusConfig.cmake
  INSTALL_DESTINATION ${SHMBUS_CMAKE_DIR})
# 0.x: a minor release may break compatibility, so only the same minor matches.
write_basic_package_version_file(
  ${PROJECT_BINARY_DIR}/shmbusConfigVersion.cmake
  VERSION ${PROJECT_VERSION}
  COMPATIBILITY SameMinorVersion)
install(FILES
    ${PROJECT_BINARY_DIR}/shmbusConfig.cmake
    ${PROJECT_BINARY_DIR}/shmbusConfigVersion.cmake
  DESTINATION ${SHMBUS_CMAKE_DIR})

# pkg-config: relocatable (paths relative to the .pc file's own directory),
# so `cmake --install --prefix ANY` gives a working file.
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}" OR IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  set(SHMBUS_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
  set(SHMBUS_PC_LIBDIR "${CMAKE_INSTALL_FULL_LIBDIR}")
  set(SHMBUS_PC_INCLUDEDIR "${CMAKE_INSTALL_FULL_INCLUDEDIR}")
else()
  file(RELATIVE_PATH _shmbus_up "/prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/prefix")
  string(REGEX REPLACE "/$" "" _shmbus_up "${_shmbus_up}")
  set(SHMBUS_PC_PREFIX "\${pcfiledir}/${_shmbus_up}")
  set(SHMBUS_PC_LIBDIR "\${prefix}/${CMAKE_INSTALL_LIBDIR}")
  set(SHMBUS_PC_INCLUDEDIR "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
endif()
configure_file(${PROJECT_SOURCE_DIR}/cmake/shmbus.pc.in ${PROJECT_BINARY_DIR}/shmbus.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/shmbus.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

# The licence travels with the binaries (Apache-2.0, section 4).
install(FILES ${PROJECT_SOURCE_DIR}/LICENSE ${PROJECT_SOURCE_DIR}/NOTICE
  DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/shmbus)
