// SPDX-License-Identifier: MIT
// test_relu_bounds: the ReLU family's bound arithmetic (hooks/ops/relu_bounds.h), alone:
// rounding as Scalar::to does with saturation, which bounds the mask test can compare
// exactly, and that the value chosen inside hardtanh's bounds passes stock's own kernel for
// every dtype, while bounds with nothing between them are refused.
//
// The hooks library is not linked into tests, so this test compiles hooks/ops/relu_bounds.cpp in.
#include <ATen/ATen.h>

#include <cmath>

#include "../hooks/ops/relu_bounds.h"
#include "testing.h"

namespace {

using namespace memsave;

const at::ScalarType kTypes[] = {at::kFloat, at::kDouble, at::kBFloat16, at::kHalf};

TEST(ReluBounds, RoundingSaturatesAndKeepsNaN) {
  EXPECT_EQ(round_to(1e39, at::kFloat), kInf);
  EXPECT_EQ(round_to(-1e39, at::kHalf), -kInf);
  EXPECT_EQ(round_to(1e39, at::kDouble), 1e39);
  EXPECT_TRUE(std::isnan(round_to(kNaN, at::kBFloat16)));
  EXPECT_EQ(round_to(0.1, at::kBFloat16), static_cast<float>(c10::BFloat16(0.1f)));
  EXPECT_EQ(round_to(0.1, at::kFloat), static_cast<double>(0.1f));
  EXPECT_EQ(max_finite(at::kHalf), 65504.0);
}

TEST(ReluBounds, ExactBounds) {
  for (at::ScalarType t : kTypes) {
    EXPECT_TRUE(bound_is_exact(0, t)) << t;
    EXPECT_TRUE(bound_is_exact(0.5, t)) << t;
    EXPECT_TRUE(bound_is_exact(kInf, t)) << t;
    EXPECT_TRUE(bound_is_exact(kNaN, t)) << t;
    EXPECT_FALSE(bound_is_exact(int64_t{1} << 60, t)) << t;  // not exact in double
  }
  EXPECT_TRUE(bound_is_exact(0.1, at::kFloat));
  EXPECT_FALSE(bound_is_exact(0.1, at::kBFloat16));  // rounds differently in bfloat16 and in float
  EXPECT_FALSE(bound_is_exact(70000.0, at::kHalf));  // beyond half: stock's conversion decides
  EXPECT_TRUE(real_scalar(at::Scalar(1)));
  EXPECT_FALSE(real_scalar(at::Scalar(true)));
  EXPECT_FALSE(real_scalar(at::Scalar(c10::complex<double>(1, 1))));
}

TEST(ReluBounds, HardtanhInsidePassesStockKernel) {
  const std::pair<double, double> bounds[] = {{-1, 1},       {0, 6},        {-kInf, kInf}, {-kInf, 2},
                                              {-3, kInf},    {0.1, 0.3},    {1, 1.01},     {-1e-30, 1e-30},
                                              {65000, 1e38}, {-1e38, -1e37}};
  for (at::ScalarType t : kTypes) {
    for (auto [lo, hi] : bounds) {
      const c10::optional<double> c = hardtanh_inside(lo, hi, t);
      if (!c) continue;  // checked below where it must exist
      const std::string where = c10::str(t, " (", lo, ", ", hi, ") chose ", *c);
      EXPECT_EQ(round_to(*c, t), *c) << where << ": not a value of the dtype";
      // Strictly inside however the kernels round the bounds: to the dtype (1.13) or to float (2.x).
      for (at::ScalarType r : {t, t == at::kDouble ? t : at::kFloat})
        EXPECT_TRUE(round_to(lo, r) < *c && *c < round_to(hi, r)) << where << " rounding to " << r;
      // And stock's own kernel lets the gradient through, where this LibTorch has one for t.
      const at::Tensor x = at::full({4}, *c, at::TensorOptions().dtype(t));
      at::Tensor g;
      if (!memsave_test::error_of([&] { g = at::hardtanh_backward(at::ones({4}, x.options()), x, lo, hi); }).empty())
        continue;  // 1.13's CPU kernel has no bfloat16/half
      EXPECT_TRUE(g.ne(0).all().item<bool>()) << where;
    }
    EXPECT_TRUE(hardtanh_inside(-1, 1, t)) << t;
    EXPECT_TRUE(hardtanh_inside(-kInf, kInf, t)) << t;
    EXPECT_FALSE(hardtanh_inside(1, 1, t)) << t;
    EXPECT_FALSE(hardtanh_inside(2, 1, t)) << t;
    EXPECT_FALSE(hardtanh_inside(kNaN, 1, t)) << t;
  }
  EXPECT_FALSE(hardtanh_inside(1, 1.001, at::kBFloat16));  // no bfloat16 strictly between
  EXPECT_TRUE(hardtanh_inside(1, 1.001, at::kFloat));
}

}  // namespace
