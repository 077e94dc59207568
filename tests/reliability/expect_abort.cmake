# Runs PROGRAM and passes only if it ends abnormally (not exit code 0) and
# its stderr contains the literal text EXPECTED.
#   cmake -DPROGRAM=path -DEXPECTED=text -P expect_abort.cmake
execute_process(COMMAND "${PROGRAM}" RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE err)
message(STATUS "exit: ${result}\nstderr: ${err}")
if("${result}" STREQUAL "0")
  message(FATAL_ERROR "${PROGRAM} exited normally; expected it to abort")
endif()
string(FIND "${err}" "${EXPECTED}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "stderr of ${PROGRAM} does not contain: ${EXPECTED}")
endif()
