// The test runner's main for Catch2 v2; with v3, Catch2::Catch2WithMain is linked instead.
#define CATCH_CONFIG_MAIN
#include "catch.hpp"
