# The README's install line (python/tests/install.sh, its `cmake --install`
# line as it stands, on the build under test) into a clean prefix; then the
# README's examples run from that prefix alone — outside the source tree,
# without the user's site-packages — and must print what they printed when
# they were written. Arguments: PYTHON, BUILD_DIR, PREFIX, SITE_PACKAGES
# (relative to PREFIX), SOURCE_DIR.
file(REMOVE_RECURSE "${PREFIX}")
set(work "${PREFIX}/work")
file(MAKE_DIRECTORY "${work}")
file(CREATE_LINK "${BUILD_DIR}" "${work}/convmat-build" SYMBOLIC)

file(STRINGS "${SOURCE_DIR}/python/tests/install.sh" install_line REGEX "^cmake --install ")
list(LENGTH install_line count)
if(NOT count EQUAL 1)
  message(FATAL_ERROR "python/tests/install.sh must have one `cmake --install` line, not ${count}")
endif()
execute_process(COMMAND sh -c "prefix='${PREFIX}'; ${install_line}" WORKING_DIRECTORY "${work}"
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the install line failed (${rc}):\n${install_line}\n${out}")
endif()

set(site "${PREFIX}/${SITE_PACKAGES}")
foreach(file __init__.py __init__.pyi _layer.py _modules.py _operator.py py.typed)
  if(NOT EXISTS "${site}/convmat/${file}")
    message(FATAL_ERROR "not installed: ${site}/convmat/${file}")
  endif()
endforeach()
set(python ${CMAKE_COMMAND} -E env PYTHONPATH=${site} PYTHONNOUSERSITE=1 PYTHONDONTWRITEBYTECODE=1 ${PYTHON} -s)

execute_process(COMMAND ${python} -c "import convmat, sys; sys.stdout.write(convmat.__file__)"
                WORKING_DIRECTORY "${work}" RESULT_VARIABLE rc OUTPUT_VARIABLE where ERROR_VARIABLE error)
if(NOT rc EQUAL 0 OR NOT where STREQUAL "${site}/convmat/__init__.py")
  message(FATAL_ERROR "import convmat from ${site} gave '${where}' (${rc}):\n${error}")
endif()

foreach(example quickstart to_linear tour)
  file(COPY "${SOURCE_DIR}/python/examples/${example}.py" DESTINATION "${work}")
  execute_process(COMMAND ${python} "${example}.py" WORKING_DIRECTORY "${work}"
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE error)
  file(READ "${SOURCE_DIR}/python/examples/${example}.txt" expected)
  if(NOT rc EQUAL 0 OR NOT out STREQUAL expected)
    message(FATAL_ERROR "python/examples/${example}.py from ${site} exited with ${rc}, printing:\n${out}\n"
                        "expected (python/examples/${example}.txt):\n${expected}\n${error}")
  endif()
endforeach()
message(STATUS "installed into ${site}; import convmat and the README's examples work from there")
