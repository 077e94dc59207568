# Eigen's own version file says SameMajorVersion: a requested version with
# another major number is refused, which is why convmat requests none.
set(PACKAGE_VERSION "${FAKE_EIGEN_VERSION}")
set(PACKAGE_VERSION_COMPATIBLE TRUE)
if(PACKAGE_FIND_VERSION)
  string(REGEX MATCH "^[0-9]+" major "${PACKAGE_VERSION}")
  if(PACKAGE_VERSION VERSION_LESS PACKAGE_FIND_VERSION OR NOT major EQUAL PACKAGE_FIND_VERSION_MAJOR)
    set(PACKAGE_VERSION_COMPATIBLE FALSE)
  endif()
endif()
