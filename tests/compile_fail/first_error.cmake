# Compiles SOURCE (which must fail) and requires that the first line saying
# "error" carries EXPECTED: convmat's message comes before any other.
#   cmake -DCXX=... -DSOURCE=... -DINCLUDES=a;b -DDEFINES=... -DEXPECTED=... -P first_error.cmake
set(flags -std=c++17 -fsyntax-only)
foreach(dir IN LISTS INCLUDES)
  list(APPEND flags -I${dir})
endforeach()
foreach(def IN LISTS DEFINES)
  list(APPEND flags -D${def})
endforeach()
execute_process(COMMAND ${CXX} ${flags} ${SOURCE} RESULT_VARIABLE result ERROR_VARIABLE errors OUTPUT_VARIABLE out)
if(result EQUAL 0)
  message(FATAL_ERROR "${SOURCE} compiled, but mixing float and double must not")
endif()
string(REGEX MATCH "[^\n]*error[^\n]*" first "${errors}")
if(NOT first MATCHES "${EXPECTED}")
  message(FATAL_ERROR "the first error is not convmat's message '${EXPECTED}':\n${first}\n\nall of it:\n${errors}")
endif()
message(STATUS "first error: ${first}")
