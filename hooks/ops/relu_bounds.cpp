// SPDX-License-Identifier: MIT
// relu_bounds.cpp: the ReLU family's bound arithmetic (relu_bounds.h).
#include "relu_bounds.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace memsave {

double max_finite(at::ScalarType t) {
  switch (t) {
    case at::kDouble: return std::numeric_limits<double>::max();
    case at::kBFloat16: return static_cast<double>(std::numeric_limits<c10::BFloat16>::max());
    case at::kHalf: return static_cast<double>(std::numeric_limits<c10::Half>::max());
    default: return static_cast<double>(std::numeric_limits<float>::max());
  }
}

double round_to(double v, at::ScalarType t) {
  if (std::isnan(v) || t == at::kDouble) return v;
  if (std::abs(v) > static_cast<double>(std::numeric_limits<float>::max())) return v > 0 ? kInf : -kInf;
  const float f = static_cast<float>(v);
  switch (t) {
    case at::kBFloat16: return static_cast<float>(c10::BFloat16(f));
    case at::kHalf: return static_cast<float>(c10::Half(f));
    default: return f;
  }
}

namespace {

// The bound as the kernels may compare it: rounded to the dtype, or to float.
double round_low(double v, at::ScalarType t) { return std::max(round_to(v, t), round_to(v, t == at::kDouble ? t : at::kFloat)); }
double round_high(double v, at::ScalarType t) { return std::min(round_to(v, t), round_to(v, t == at::kDouble ? t : at::kFloat)); }

}  // namespace

bool real_scalar(const at::Scalar& s) { return s.isFloatingPoint() || s.isIntegral(/*includeBool=*/false); }

bool bound_is_exact(const at::Scalar& s, at::ScalarType t) {
  if (s.isIntegral(false)) {
    const int64_t i = s.toLong();
    if (i > (int64_t{1} << 53) || i < -(int64_t{1} << 53)) return false;  // not exact in double
  }
  const double v = s.toDouble();
  if (std::isnan(v) || std::isinf(v)) return true;
  if (std::abs(v) > max_finite(t)) return false;  // stock's conversion throws; let its kernel say so
  return t == at::kFloat || t == at::kDouble || round_to(v, t) == round_to(v, at::kFloat);
}

c10::optional<double> hardtanh_inside(double min, double max, at::ScalarType t) {
  if (std::isnan(min) || std::isnan(max)) return c10::nullopt;
  const double lo = round_low(min, t), hi = round_high(max, t);
  double c;
  if (lo == -kInf && hi == kInf) c = 0;
  else if (lo == -kInf) c = -max_finite(t);
  else if (hi == kInf) c = max_finite(t);
  else c = round_to(lo / 2 + hi / 2, t);
  if (lo < c && c < hi) return c;
  return c10::nullopt;
}

}  // namespace memsave
