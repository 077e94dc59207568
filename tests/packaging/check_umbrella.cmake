# Fails unless include/convmat/convmat.hpp includes every public header at
# the top of include/convmat/ (detail/ and optional backends in their own
# folders are not public headers of the umbrella).
#   cmake -DINCLUDE_DIR=<repo>/include -P check_umbrella.cmake
file(GLOB headers RELATIVE "${INCLUDE_DIR}/convmat" "${INCLUDE_DIR}/convmat/*.hpp")
file(READ "${INCLUDE_DIR}/convmat/convmat.hpp" umbrella)
set(missing "")
foreach(header IN LISTS headers)
  string(REPLACE "." "\\." pattern "${header}")
  if(NOT header STREQUAL "convmat.hpp" AND NOT umbrella MATCHES "\n#include \"${pattern}\"")
    list(APPEND missing "${header}")
  endif()
endforeach()
if(missing)
  string(REPLACE ";" ", " missing "${missing}")
  message(FATAL_ERROR "include/convmat/convmat.hpp does not include: ${missing}\n"
                      "Add #include \"<header>\" for each, then regenerate the single header "
                      "(python3 tools/make_single_header.py).")
endif()
list(LENGTH headers count)
message(STATUS "the umbrella includes all ${count} public headers (itself counted)")
