# Runs PROGRAM [ARGS] on RANKS MPI ranks (MPIEXEC NP_FLAG RANKS) and fails
# unless it exits 0 and, when EXPECTED exists, prints exactly EXPECTED.
separate_arguments(args UNIX_COMMAND "${ARGS}")
execute_process(COMMAND ${MPIEXEC} ${NP_FLAG} ${RANKS} ${PROGRAM} ${args}
                OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${MPIEXEC} ${NP_FLAG} ${RANKS} ${PROGRAM} ${ARGS} exited with ${rc}:\n${out}\n${err}")
endif()
if(EXISTS "${EXPECTED}")
  file(READ ${EXPECTED} expected)
  if(NOT out STREQUAL expected)
    message(FATAL_ERROR "${PROGRAM} printed:\n${out}\nexpected (${EXPECTED}):\n${expected}\nstderr:\n${err}")
  endif()
else()
  message("${out}")
endif()
