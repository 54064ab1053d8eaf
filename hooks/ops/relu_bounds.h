// SPDX-License-Identifier: MIT
// relu_bounds.h: the bound arithmetic of the ReLU family's masks (Note [Proxy] in relu.cpp):
// how stock's kernels round a Scalar bound for each dtype, whether the mask test can compare
// against it exactly, and a value strictly inside hardtanh's bounds.
#pragma once

#include <c10/core/Scalar.h>
#include <c10/core/ScalarType.h>
#include <c10/util/Optional.h>

#include <limits>

namespace memsave {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// The largest finite value of `t` (float for any other dtype).
double max_finite(at::ScalarType t);

// `v` rounded to `t` (as Scalar::to does), saturating to +-inf instead of overflowing.
double round_to(double v, at::ScalarType t);

// A real (floating-point or integral, not bool or complex) Scalar.
bool real_scalar(const at::Scalar& s);

// Whether the mask test, comparing against `s` rounded to `t`, decides every element as
// stock's kernels do in every version (they compare bfloat16/half against the bound rounded
// to that dtype in 1.13, in float in 2.x).
bool bound_is_exact(const at::Scalar& s, at::ScalarType t);

// A value of dtype `t` strictly inside (min, max) for every way the kernels round the bounds;
// nullopt when there is none (or a bound is NaN).
c10::optional<double> hardtanh_inside(double min, double max, at::ScalarType t);

}  // namespace memsave
