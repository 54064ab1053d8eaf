// SPDX-License-Identifier: MIT
// test_skeleton: what the kernel skeleton (hooks/core/kernel.h, Note [Kernel skeleton]) does
// for every family alike: a node is counted only once its forward has returned, so a forward
// that raises after the route chose our path leaves the counters as they were; and the
// route's outcomes (stock, passthrough, fallback, ours) are counted as such.
#include <ATen/ATen.h>

#include <torch/csrc/autograd/forward_grad.h>

#include <functional>

#include "testing.h"

namespace {

using memsave_test::error_of;
using memsave_test::stats;

struct Raising {
  const char* what;
  memsave_family_t family;
  std::function<void()> call;  // takes our path, then stock's forward raises
};

at::Tensor leaf(at::IntArrayRef sizes) { return at::randn(sizes).requires_grad_(true); }

TEST(Skeleton, ForwardThatRaisesCountsNothing) {
  const std::vector<Raising> cases = {
      {"conv: weight with other channels", MEMSAVE_FAMILY_CONV,
       [] { at::conv2d(leaf({1, 3, 8, 8}), at::randn({4, 5, 3, 3})); }},
      {"batch norm: running statistics of another size", MEMSAVE_FAMILY_BATCHNORM,
       [] { at::batch_norm(leaf({2, 3, 4, 4}), {}, {}, at::zeros({5}), at::ones({5}), false, 0.1, 1e-5, false); }},
      {"max pool: window larger than the input", MEMSAVE_FAMILY_POOL,
       [] { at::max_pool2d(leaf({1, 1, 2, 2}), {5, 5}); }},
      {"avg pool: window larger than the input", MEMSAVE_FAMILY_POOL,
       [] { at::avg_pool2d(leaf({1, 1, 2, 2}), {5, 5}); }},
      {"adaptive avg pool: negative output size", MEMSAVE_FAMILY_POOL,
       [] { at::adaptive_avg_pool2d(leaf({1, 1, 4, 4}), {-1, 2}); }},
      {"linear: inner sizes differ", MEMSAVE_FAMILY_LINEAR, [] { at::linear(leaf({2, 3}), at::randn({4, 5})); }},
  };
  for (const Raising& c : cases) {
    const memsave_stats before = stats();
    EXPECT_NE(error_of(c.call), "") << c.what << ": stock's forward should raise";
    const memsave_stats after = stats();
    EXPECT_EQ(after.substituted[c.family], before.substituted[c.family]) << c.what;
    EXPECT_EQ(after.bytes_stock, before.bytes_stock) << c.what;
  }
}

// One call of each route on convolution, the family with all four.
TEST(Skeleton, RoutesAreCountedAsSuch) {
  constexpr auto F = MEMSAVE_FAMILY_CONV;
  const at::Tensor w = at::randn({2, 2, 3, 3});
  auto delta = [&](const std::function<void()>& fn) {
    const memsave_stats a = stats();
    fn();
    const memsave_stats b = stats();
    return std::array<uint64_t, 3>{b.substituted[F] - a.substituted[F], b.passthrough[F] - a.passthrough[F],
                                   b.fallbacks[F] - a.fallbacks[F]};
  };
  using R = std::array<uint64_t, 3>;
  EXPECT_EQ(delta([&] { at::conv2d(at::randn({1, 2, 5, 5}), w); }), (R{0, 0, 0})) << "nothing requires grad: stock";
  EXPECT_EQ(delta([&] { at::conv2d(at::randn({1, 2, 5, 5}), w.clone().requires_grad_()); }), (R{0, 1, 0}))
      << "trainable weight: passthrough";
  EXPECT_EQ(delta([&] { at::conv2d(leaf({1, 2, 5, 5}).to(at::kDouble), w.to(at::kDouble)); }), (R{1, 0, 0}))
      << "frozen weight: ours";
  const uint64_t level = torch::autograd::ForwardADLevel::get_next_idx();
  const at::Tensor x = at::randn({1, 2, 5, 5});
  const at::Tensor dual = at::_make_dual(x, at::ones_like(x), level).requires_grad_(true);
  // (stock's tangent formula runs convolutions of its own, which may take our path)
  EXPECT_EQ(delta([&] { at::conv2d(dual, w); })[2], 1u) << "forward-mode AD: fallback";
  torch::autograd::ForwardADLevel::release_idx(level);
}

}  // namespace
