// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// The command's own error: a problem with its arguments or files.
#pragma once

#include <stdexcept>

namespace convmat_cli {

/// A problem with the command's arguments or files: printed, exit status 1.
class cli_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace convmat_cli
