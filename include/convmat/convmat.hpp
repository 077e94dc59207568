// convmat — the matrix of a convolution layer.
// SPDX-License-Identifier: MIT
//
// The umbrella header: everything convmat offers.
#pragma once

#include "config.hpp"
#include "dense.hpp"
#include "direct.hpp"
#include "error.hpp"
#include "layers.hpp"
#include "limits.hpp"
#include "operator.hpp"
#include "size.hpp"
#include "sparse.hpp"
#include "spec.hpp"
#include "spectral.hpp"
#include "unfold.hpp"
