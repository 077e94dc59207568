# Builds one consumer project the way a user would, runs it, and checks what
# it prints. Run by ctest (see tests/packaging/CMakeLists.txt) as
#   cmake -DKIND=... -DWORK=... [-D...] -P run_consumer.cmake
#
# KIND=sh        a fresh folder WORK/src holding main.cpp (a copy of MAIN),
#                the files of CONSUMER and a link `convmat` to the source tree
#                SOURCE_DIR; runs `sh -e SCRIPT` (default build.sh) there, with
#                the compiler CXX as `c++`, this cmake first on PATH,
#                PKG_CONFIG_PATH=PKG_CONFIG_DIR and prefix=PREFIX when given;
#                then ./my_app unless RUN is OFF.
# KIND=cmake     the same folder; configures it with CXX, GENERATOR,
#                MAKE_PROGRAM and CMAKE_ARGS (arguments separated by |, as
#                ctest would split a ;-list), builds it and runs my_app.
#                LINK_AS puts the source-tree link at that relative path;
#                EXPECT_CONVMAT_DIR and EXPECT_EIGEN3_DIR check where
#                find_package found convmat and Eigen.
#                With EXPECT_CONFIGURE_ERROR (a regex) the configuration must
#                fail with a message that matches it, and nothing is built.
# my_app must exit 0 and print exactly the file EXPECTED.

cmake_minimum_required(VERSION 3.14)

# run(<what> COMMAND ... [WORKING_DIRECTORY dir] [MAY_FAIL]): fails loudly
# unless MAY_FAIL; sets `output` (stdout) and `result` (exit code, output and
# errors) in the caller.
function(run what)
  cmake_parse_arguments(ARG "MAY_FAIL" "WORKING_DIRECTORY" "COMMAND" ${ARGN})
  if(NOT ARG_WORKING_DIRECTORY)
    set(ARG_WORKING_DIRECTORY "${WORK}")
  endif()
  string(REPLACE ";" " " shown "${ARG_COMMAND}")
  message(STATUS "${what}: ${shown}")
  execute_process(COMMAND ${ARG_COMMAND} WORKING_DIRECTORY "${ARG_WORKING_DIRECTORY}"
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  set(result "${rc}\n${out}${err}" PARENT_SCOPE)
  if(NOT rc EQUAL 0 AND NOT ARG_MAY_FAIL)
    message(FATAL_ERROR "${what} failed (${rc}) in ${ARG_WORKING_DIRECTORY}:\n  ${shown}\n${out}${err}")
  endif()
  set(output "${out}" PARENT_SCOPE)
endfunction()

foreach(required KIND WORK)
  if(NOT DEFINED ${required})
    message(FATAL_ERROR "run_consumer.cmake: -D${required}=... is required")
  endif()
endforeach()

file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}")

# The user's project folder.
set(src "${WORK}/src")
file(MAKE_DIRECTORY "${src}")
file(GLOB consumer_files "${CONSUMER}/*")
file(COPY ${consumer_files} DESTINATION "${src}")
configure_file("${MAIN}" "${src}/main.cpp" COPYONLY)
if(NOT LINK_AS)
  set(LINK_AS convmat)
endif()
get_filename_component(link_parent "${src}/${LINK_AS}" DIRECTORY)
file(MAKE_DIRECTORY "${link_parent}")
file(CREATE_LINK "${SOURCE_DIR}" "${src}/${LINK_AS}" SYMBOLIC)

if(KIND STREQUAL "sh")
  # `c++` in the script is the compiler under test, `cmake` this one.
  file(MAKE_DIRECTORY "${WORK}/bin")
  file(CREATE_LINK "${CXX}" "${WORK}/bin/c++" SYMBOLIC)
  get_filename_component(cmake_bin "${CMAKE_COMMAND}" DIRECTORY)
  set(environment "PATH=${WORK}/bin:${cmake_bin}:$ENV{PATH}")
  if(PKG_CONFIG_DIR)
    list(APPEND environment "PKG_CONFIG_PATH=${PKG_CONFIG_DIR}")
  endif()
  if(PREFIX)
    list(APPEND environment "prefix=${PREFIX}")
  endif()
  if(NOT SCRIPT)
    set(SCRIPT build.sh)
  endif()
  run(${SCRIPT} COMMAND "${CMAKE_COMMAND}" -E env ${environment} sh -e ${SCRIPT} WORKING_DIRECTORY "${src}")
  if(DEFINED RUN AND NOT RUN)
    return()
  endif()
  set(program "${src}/my_app")
elseif(KIND STREQUAL "cmake")
  string(REPLACE "|" ";" CMAKE_ARGS "${CMAKE_ARGS}")
  set(configure "${CMAKE_COMMAND}" -S "${src}" -B "${WORK}/build" -G "${GENERATOR}"
      "-DCMAKE_CXX_COMPILER=${CXX}" -DCMAKE_BUILD_TYPE=Release ${CMAKE_ARGS})
  if(MAKE_PROGRAM)
    list(APPEND configure "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}")
  endif()
  if(EXPECT_CONFIGURE_ERROR)
    run(configure COMMAND ${configure} MAY_FAIL)
    string(REGEX REPLACE "[ \t\r\n]+" " " result "${result}")  # CMake wraps its messages
    if(result MATCHES "^0 ")
      message(FATAL_ERROR "the configuration succeeded; expected it to fail with '${EXPECT_CONFIGURE_ERROR}':\n${result}")
    elseif(NOT result MATCHES "${EXPECT_CONFIGURE_ERROR}")
      message(FATAL_ERROR "the configuration failed, but without '${EXPECT_CONFIGURE_ERROR}':\n${result}")
    endif()
    message(STATUS "the configuration failed as expected: ${EXPECT_CONFIGURE_ERROR}")
    return()
  endif()
  run(configure COMMAND ${configure})
  run(build COMMAND "${CMAKE_COMMAND}" --build "${WORK}/build")
  foreach(package convmat Eigen3)
    string(TOUPPER "${package}" upper)
    if(EXPECT_${upper}_DIR)
      file(STRINGS "${WORK}/build/CMakeCache.txt" found REGEX "^${package}_DIR:")
      string(REGEX REPLACE "^[^=]*=" "" found "${found}")
      get_filename_component(found "${found}" REALPATH)
      get_filename_component(expected "${EXPECT_${upper}_DIR}" REALPATH)
      if(NOT found STREQUAL expected)
        message(FATAL_ERROR "find_package found ${package} in '${found}', expected '${expected}'")
      endif()
    endif()
  endforeach()
  set(program "${WORK}/build/my_app")
else()
  message(FATAL_ERROR "run_consumer.cmake: unknown KIND '${KIND}' (sh or cmake)")
endif()

run(run COMMAND "${program}")
file(READ "${EXPECTED}" expected_output)
if(NOT output STREQUAL expected_output)
  message(FATAL_ERROR "${program} printed:\n${output}\nexpected (${EXPECTED}):\n${expected_output}")
endif()
message(STATUS "${program} printed the expected output")
