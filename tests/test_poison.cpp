// SPDX-License-Identifier: MIT
// test_poison: MEMSAVE_POISON does what it is for (Note [Poisoned stand-in] in
// hooks/core/standin.h). A planted fault, a node that drops an input its backward really
// needs, must give stock's gradient without poison, where the live input is borrowed
// (Note [Live stand-in]) and hides the fault, and a different one under each pattern. Then
// each pattern's values, every dtype a stand-in can have, and the stand-in shapes the
// families use (strided, mapped, expanded, in place of a tensor backward has).
//
// The hooks library is not linked into tests, so this test compiles hooks/core/standin.cpp
// in, and switches its copy of the poison with memsave::set_poison.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <limits>
#include <memory>

#include "../hooks/core/standin.h"
#include "../shim/hooks_abi.h"
#include "testing.h"

namespace {

using memsave_test::bitwise_equal;

struct Poison {  // sets the pattern for a scope
  explicit Poison(int pattern) { memsave::set_poison(pattern); }
  ~Poison() { memsave::set_poison(MEMSAVE_POISON_OFF); }
};

// The planted fault: y = x * w keeps only x's geometry, yet w's gradient needs x's values.
std::unique_ptr<memsave::Geometry> g_dropped;
struct DropsNeededInput : torch::autograd::Function<DropsNeededInput> {
  static at::Tensor forward(torch::autograd::AutogradContext*, const at::Tensor& x, const at::Tensor& w) {
    g_dropped = std::make_unique<memsave::Geometry>(x);
    return x * w;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*, torch::autograd::variable_list g) {
    return {at::Tensor(), g[0] * g_dropped->stand_in()};
  }
};

at::Tensor weight_grad(bool planted, const at::Tensor& x) {
  const at::Tensor w = at::randn_like(x).requires_grad_(true);
  const at::Tensor y = planted ? DropsNeededInput::apply(x, w) : x * w;
  return torch::autograd::grad({y.sum()}, {w}).at(0);
}

TEST(Poison, PlantedFaultPassesWithoutPoisonAndFailsUnderIt) {
  // Small (an allocation) and large (a mapping, Note [Untouched stand-in]).
  for (const int64_t n : {int64_t{1000}, int64_t{1} << 19}) {
    const at::Tensor x = at::randn({n});  // alive during backward: borrowed without poison
    const at::Tensor stock = weight_grad(false, x);
    EXPECT_TRUE(bitwise_equal(stock, weight_grad(true, x))) << n << " elements, no poison";
    for (const int pattern : {MEMSAVE_POISON_NAN, MEMSAVE_POISON_MAX}) {
      Poison on(pattern);
      const uint64_t before = *memsave::poisoned_count();
      const at::Tensor ours = weight_grad(true, x);
      EXPECT_FALSE(bitwise_equal(stock, ours)) << n << " elements, pattern " << pattern << ": the fault went unseen";
      EXPECT_EQ(*memsave::poisoned_count(), before + 1);
    }
  }
}

TEST(Poison, PatternsFillEveryStandInShape) {
  const std::vector<int64_t> sizes{4, 3, 5, 7}, cl_strides{105, 1, 21, 3};
  for (const at::ScalarType t : {at::kFloat, at::kDouble, at::kHalf, at::kBFloat16, at::kLong, at::kBool}) {
    const at::TensorOptions o = at::TensorOptions().dtype(t);
    {
      Poison on(MEMSAVE_POISON_NAN);
      for (const at::Tensor& s : {memsave::untouched_strided(sizes, cl_strides, o),
                                  memsave::untouched_strided({1024, 1024}, {1024, 1}, o),  // mapped
                                  memsave::expanded_stand_in(sizes, o),
                                  memsave::stand_in_for(at::zeros(sizes, o))}) {
        EXPECT_EQ(s.sizes(), at::IntArrayRef(s.dim() == 2 ? std::vector<int64_t>{1024, 1024} : sizes));
        const at::Tensor d = s.to(at::kDouble);
        if (at::isFloatingType(t)) EXPECT_TRUE(d.isnan().all().item<bool>()) << t;
        else EXPECT_TRUE(d.ne(0).all().item<bool>()) << t;  // integers and bool: the largest value
      }
      EXPECT_EQ(memsave::untouched_strided(sizes, cl_strides, o).strides(), at::IntArrayRef(cl_strides));
    }
    {
      Poison on(MEMSAVE_POISON_MAX);
      const at::Tensor d = memsave::untouched_strided(sizes, cl_strides, o).to(at::kDouble);
      EXPECT_TRUE(d.isfinite().all().item<bool>()) << t;
      if (t == at::kHalf) EXPECT_EQ(d.max().item<double>(), 65504.0);
      if (t == at::kFloat) EXPECT_EQ(d.max().item<double>(), std::numeric_limits<float>::max());
      EXPECT_TRUE(d.eq(d.max()).all().item<bool>()) << t;
    }
  }
  // Off: a tensor backward already has stands in for itself; nothing is filled.
  const at::Tensor g = at::randn(sizes);
  const uint64_t before = *memsave::poisoned_count();
  EXPECT_TRUE(memsave::stand_in_for(g).is_same(g));
  EXPECT_EQ(*memsave::poisoned_count(), before);
}

}  // namespace
