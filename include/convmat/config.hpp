// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// Version and the two macros through which convmat reports errors.
#pragma once

#define CONVMAT_VERSION_MAJOR 0
#define CONVMAT_VERSION_MINOR 1
#define CONVMAT_VERSION_PATCH 0
#define CONVMAT_VERSION_STRING "0.1.0"

// CONVMAT_THROW(message) reports a spec or argument that cannot describe a
// real layer. `message` is a std::string. By default it throws
// convmat::spec_error; without exceptions (-fno-exceptions) it prints the
// message to stderr and aborts. Define it before including convmat to route
// errors elsewhere; the replacement must not return.
//
// CONVMAT_THROW_MEMORY(message) reports a size the memory guard refuses
// (max_dense_bytes()). By default it throws convmat::memory_limit_error, a
// spec_error; where CONVMAT_THROW is user-defined it calls that instead.
//
// CONVMAT_THROW_CONVERGENCE(message) reports an iteration (the Lanczos
// singular values) that did not reach its tolerance where the caller asked
// for the values alone. By default it throws convmat::convergence_error;
// where CONVMAT_THROW is user-defined it calls that instead.
#if !defined(CONVMAT_THROW_MEMORY) && defined(CONVMAT_THROW)
#define CONVMAT_THROW_MEMORY(message) CONVMAT_THROW(message)
#endif
#if !defined(CONVMAT_THROW_CONVERGENCE) && defined(CONVMAT_THROW)
#define CONVMAT_THROW_CONVERGENCE(message) CONVMAT_THROW(message)
#endif
#ifndef CONVMAT_THROW
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS) || defined(_CPPUNWIND)
#define CONVMAT_THROW(message) throw ::convmat::spec_error(message)
#else
#include <cstdio>
#include <cstdlib>
#define CONVMAT_THROW(message)                                   \
  do {                                                           \
    std::fprintf(stderr, "%s\n", std::string(message).c_str()); \
    std::abort();                                                \
  } while (false)
#endif
#endif
#ifndef CONVMAT_THROW_MEMORY
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS) || defined(_CPPUNWIND)
#define CONVMAT_THROW_MEMORY(message) throw ::convmat::memory_limit_error(message)
#else
#define CONVMAT_THROW_MEMORY(message) CONVMAT_THROW(message)
#endif
#endif
#ifndef CONVMAT_THROW_CONVERGENCE
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS) || defined(_CPPUNWIND)
#define CONVMAT_THROW_CONVERGENCE(message) throw ::convmat::convergence_error(message)
#else
#define CONVMAT_THROW_CONVERGENCE(message) CONVMAT_THROW(message)
#endif
#endif

// CONVMAT_ASSERT(condition, message) checks an internal invariant that no
// input can break. It costs nothing unless CONVMAT_ENABLE_ASSERTS is defined.
#ifndef CONVMAT_ASSERT
#ifdef CONVMAT_ENABLE_ASSERTS
#define CONVMAT_ASSERT(condition, message)                                 \
  do {                                                                     \
    if (!(condition)) CONVMAT_THROW(std::string("convmat: internal: ") + (message)); \
  } while (false)
#else
#define CONVMAT_ASSERT(condition, message) static_cast<void>(0)
#endif
#endif
