# Fails unless include/convmat/convmat.hpp includes every public header at
# the top of include/convmat/ (detail/ and optional backends in their own
# folders are not public headers of the umbrella), except those that stand
# outside it on purpose — and that it does not include those.
#   cmake -DINCLUDE_DIR=<repo>/include -P check_umbrella.cmake
#
# Outside the umbrella: npy.hpp reads and writes files (<fstream>,
# <filesystem>), which the header-only core never does; it is included on
# its own and has its own single header (single_include/convmat/npy.hpp).
cmake_policy(SET CMP0057 NEW)  # if(IN_LIST)
set(outside_umbrella npy.hpp)
file(GLOB headers RELATIVE "${INCLUDE_DIR}/convmat" "${INCLUDE_DIR}/convmat/*.hpp")
file(READ "${INCLUDE_DIR}/convmat/convmat.hpp" umbrella)
set(missing "")
set(unwanted "")
foreach(header IN LISTS headers)
  string(REPLACE "." "\\." pattern "${header}")
  if(header STREQUAL "convmat.hpp")
    continue()
  endif()
  if(header IN_LIST outside_umbrella)
    if(umbrella MATCHES "\n#include \"${pattern}\"")
      list(APPEND unwanted "${header}")
    endif()
  elseif(NOT umbrella MATCHES "\n#include \"${pattern}\"")
    list(APPEND missing "${header}")
  endif()
endforeach()
if(missing)
  string(REPLACE ";" ", " missing "${missing}")
  message(FATAL_ERROR "include/convmat/convmat.hpp does not include: ${missing}\n"
                      "Add #include \"<header>\" for each, then regenerate the single header "
                      "(python3 tools/make_single_header.py).")
endif()
if(unwanted)
  string(REPLACE ";" ", " unwanted "${unwanted}")
  message(FATAL_ERROR "include/convmat/convmat.hpp includes ${unwanted}, which stands outside the umbrella "
                      "(see check_umbrella.cmake)")
endif()
list(LENGTH headers count)
list(LENGTH outside_umbrella outside)
math(EXPR count "${count} - ${outside}")
message(STATUS "the umbrella includes all ${count} public headers (itself counted); ${outside_umbrella} stands outside it")
