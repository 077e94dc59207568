# Install rules, the exported package and the pkg-config file. Included by the
# top-level CMakeLists.txt when CONVMAT_INSTALL is on.
#
#   <prefix>/include/convmat/...                       the headers
#   <prefix>/share/cmake/convmat/convmatConfig.cmake   find_package(convmat)
#   <prefix>/share/pkgconfig/convmat.pc                pkg-config --cflags convmat
#
# convmat is header-only, so the package is architecture independent and goes
# under share/. All of it is the install component convmat_library, which
# needs nothing built:
#   cmake --install <build dir> --component convmat_library --prefix <prefix>
# (a plain `cmake --install` also installs the component convmat_tools,
# convmat and convmat-onnx in bin/, and convmat_python, when they are built). The build tree is exported
# too: -Dconvmat_DIR=<build dir> works without installing.

include(CMakePackageConfigHelpers)

# The version is written twice, in project() and in config.hpp; refuse to
# package if they disagree.
file(STRINGS "${PROJECT_SOURCE_DIR}/include/convmat/config.hpp" convmat_version_line
     REGEX "^#define CONVMAT_VERSION_STRING ")
if(NOT convmat_version_line MATCHES "\"${PROJECT_VERSION}\"")
  message(FATAL_ERROR "convmat: project(VERSION ${PROJECT_VERSION}) in CMakeLists.txt and "
                      "include/convmat/config.hpp (${convmat_version_line}) disagree")
endif()

set(CONVMAT_INSTALL_CMAKEDIR "${CMAKE_INSTALL_DATADIR}/cmake/convmat"
    CACHE STRING "Where convmatConfig.cmake is installed, relative to the prefix")
set(CONVMAT_INSTALL_PKGCONFIGDIR "${CMAKE_INSTALL_DATADIR}/pkgconfig"
    CACHE STRING "Where convmat.pc is installed, relative to the prefix")
mark_as_advanced(CONVMAT_INSTALL_CMAKEDIR CONVMAT_INSTALL_PKGCONFIGDIR)

set(component COMPONENT convmat_library)
install(TARGETS convmat EXPORT convmatTargets ${component})
install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/" DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}" ${component}
        FILES_MATCHING PATTERN "*.hpp")
install(EXPORT convmatTargets NAMESPACE convmat:: DESTINATION "${CONVMAT_INSTALL_CMAKEDIR}" ${component})

# One config file serves the install tree and the build tree: it includes
# convmatTargets.cmake from its own directory.
configure_package_config_file("${CMAKE_CURRENT_LIST_DIR}/convmatConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/convmatConfig.cmake"
  INSTALL_DESTINATION "${CONVMAT_INSTALL_CMAKEDIR}")
write_basic_package_version_file("${PROJECT_BINARY_DIR}/convmatConfigVersion.cmake"
  COMPATIBILITY SameMajorVersion ARCH_INDEPENDENT)
install(FILES "${PROJECT_BINARY_DIR}/convmatConfig.cmake" "${PROJECT_BINARY_DIR}/convmatConfigVersion.cmake"
        DESTINATION "${CONVMAT_INSTALL_CMAKEDIR}" ${component})
export(EXPORT convmatTargets NAMESPACE convmat:: FILE "${PROJECT_BINARY_DIR}/convmatTargets.cmake")

# pkg-config: relocatable, the prefix is found from the .pc file's own place.
if(IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  set(CONVMAT_PC_INCLUDEDIR "${CMAKE_INSTALL_INCLUDEDIR}")
else()
  file(RELATIVE_PATH convmat_pc_to_prefix "/prefix/${CONVMAT_INSTALL_PKGCONFIGDIR}" "/prefix")
  string(REGEX REPLACE "/$" "" convmat_pc_to_prefix "${convmat_pc_to_prefix}")
  set(CONVMAT_PC_INCLUDEDIR "\${pcfiledir}/${convmat_pc_to_prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
endif()
configure_file("${CMAKE_CURRENT_LIST_DIR}/convmat.pc.in" "${PROJECT_BINARY_DIR}/convmat.pc" @ONLY)
install(FILES "${PROJECT_BINARY_DIR}/convmat.pc" DESTINATION "${CONVMAT_INSTALL_PKGCONFIGDIR}" ${component})
