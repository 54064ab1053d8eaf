// SPDX-License-Identifier: MIT
// test_reuse: Note [Reusing the incoming gradient] (hooks/core/rules.h). The ReLU family and batch
// norm in eval write their result into an incoming gradient that nothing else holds. Each way
// a host can hold that gradient (retain_grad, a hook that keeps it or an alias of it, the other
// branch of an addition, autograd.grad capturing it, retain_graph) is compared with stock bit
// for bit, and the memory the reuse saves is measured. On MEMSAVE_TEST_DEVICE (default cpu).
#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/variable.h>

#include <cstdio>
#include <string>
#include <vector>

#include "testing.h"

namespace {

using namespace memsave_test;  // the harness: tests/testing.h

enum class Op { kRelu, kRelu6, kLeakyRelu, kBatchNormEval };

const char* name_of(Op op) {
  switch (op) {
    case Op::kRelu: return "relu";
    case Op::kRelu6: return "relu6";
    case Op::kLeakyRelu: return "leaky_relu";
    case Op::kBatchNormEval: return "batch_norm eval";
  }
  return "?";
}

// How the host holds the gradient that reaches the operator's backward.
enum class Hold { kNothing, kRetainGrad, kHookKeeps, kHookKeepsAlias, kHookReplaces, kTwoBranches, kCaptured, kTwice };

const char* name_of(Hold h) {
  switch (h) {
    case Hold::kNothing: return "nothing";
    case Hold::kRetainGrad: return "retain_grad";
    case Hold::kHookKeeps: return "hook keeps it";
    case Hold::kHookKeepsAlias: return "hook keeps a detached alias";
    case Hold::kHookReplaces: return "hook returns a new gradient";
    case Hold::kTwoBranches: return "two branches of an addition";
    case Hold::kCaptured: return "autograd.grad captures it";
    case Hold::kTwice: return "retain_graph, backward twice";
  }
  return "?";
}

constexpr int64_t kN = 8, kC = 32, kH = 64, kW = 64;
constexpr int64_t kActivationBytes = kN * kC * kH * kW * 4;

struct Params {
  at::Tensor w, b, rm, rv, weight;  // batch norm's (frozen), and the loss weight
};

Params make_params() {
  at::manual_seed(99);
  Params p;
  p.w = at::rand({kC}) + 0.5;
  p.b = at::randn({kC});
  p.rm = at::randn({kC});
  p.rv = at::rand({kC}) + 0.25;
  p.weight = at::randn({kN, kC, kH, kW});
  for (at::Tensor* t : {&p.w, &p.b, &p.rm, &p.rv, &p.weight}) *t = to_test_device(*t);
  return p;
}

at::Tensor apply(Op op, const at::Tensor& x, const Params& p) {
  switch (op) {
    case Op::kRelu: return at::relu(x);
    case Op::kRelu6: return at::hardtanh(x, 0, 6);
    case Op::kLeakyRelu: return at::leaky_relu(x, 0.1);
    case Op::kBatchNormEval:
      return at::batch_norm(x, p.w, p.b, p.rm, p.rv, /*training=*/false, 0.1, 1e-5, /*cudnn_enabled=*/false);
  }
  return {};
}

// Runs forward and backward; returns every gradient the host can see.
std::vector<at::Tensor> run(Op op, Hold hold) {
  const Params p = make_params();
  at::manual_seed(7);
  at::Tensor x = to_test_device(at::randn({kN, kC, kH, kW}) * 3).requires_grad_(true);
  at::Tensor y = apply(op, x, p), kept;
  if (hold == Hold::kTwoBranches) y = y + apply(op, x * 2, p);
  if (hold == Hold::kRetainGrad) y.retain_grad();
  if (hold == Hold::kHookKeeps) y.register_hook([&](const at::Tensor& g) { kept = g; });
  if (hold == Hold::kHookKeepsAlias) y.register_hook([&](const at::Tensor& g) { kept = g.detach(); });
  if (hold == Hold::kHookReplaces) y.register_hook([](const at::Tensor& g) { return g * 1.5; });
  at::Tensor loss = (y * p.weight).sum();  // MulBackward0: a fresh gradient for y
  if (hold == Hold::kCaptured) return torch::autograd::grad({loss}, {y, x});
  if (hold == Hold::kTwice) {
    loss.backward({}, /*retain_graph=*/true);
    at::Tensor first = x.grad().clone();
    loss.backward();
    return {first, x.grad()};
  }
  loss.backward();
  std::vector<at::Tensor> out{x.grad()};
  if (hold == Hold::kRetainGrad) out.push_back(y.grad());
  if (kept.defined()) out.push_back(kept);
  return out;
}

TEST(Reuse, EveryWayOfHoldingTheGradientMatchesStock) {
  for (Op op : {Op::kRelu, Op::kRelu6, Op::kLeakyRelu, Op::kBatchNormEval})
    for (Hold hold : {Hold::kNothing, Hold::kRetainGrad, Hold::kHookKeeps, Hold::kHookKeepsAlias, Hold::kHookReplaces,
                      Hold::kTwoBranches, Hold::kCaptured, Hold::kTwice}) {
      const std::string where = std::string(name_of(op)) + ", " + name_of(hold);
      const auto stock = with_memsave(false, [&] { return run(op, hold); });
      const auto ours = with_memsave(true, [&] { return run(op, hold); });
      ASSERT_EQ(stock.size(), ours.size()) << where;
      for (size_t i = 0; i < stock.size(); i++) EXPECT_TRUE(bitwise_equal(stock[i], ours[i])) << where << " #" << i;
    }
}

// Peak tensor bytes of the backward above what is alive before it, and the input's gradient.
std::pair<int64_t, at::Tensor> backward_peak(Op op) {
  const Params p = make_params();
  at::manual_seed(7);
  at::Tensor x = to_test_device(at::randn({kN, kC, kH, kW}) * 3).requires_grad_(true);
  at::Tensor loss = (apply(op, x, p) * p.weight).sum();
  const int64_t base = step_start();
  loss.backward();
  return {peak_since(base), x.grad()};
}

// Stock's step holds the incoming gradient and its result (batch norm in 1.13: and a second,
// unused result); ours holds the gradient and at most two pieces of 1 MiB (batch norm) or one
// proxy piece of 65536 elements (ReLU family). The input's gradient (AccumulateGrad steals
// the result) is counted in both.
TEST(Reuse, BackwardStepHoldsOneActivation) {
  MEMSAVE_CPU_ONLY("the peak is the CPU allocator's");
  for (Op op : {Op::kRelu, Op::kRelu6, Op::kLeakyRelu, Op::kBatchNormEval}) {
    const auto stock = with_memsave(false, [&] { return backward_peak(op); });
    const auto ours = with_memsave(true, [&] { return backward_peak(op); });
    std::printf("%-16s backward peak above live (activation %lld): stock %lld, libmemsave %lld\n", name_of(op),
                (long long)kActivationBytes, (long long)stock.first, (long long)ours.first);
    EXPECT_TRUE(bitwise_equal(stock.second, ours.second)) << name_of(op);
    EXPECT_GE(stock.first, 2 * kActivationBytes) << name_of(op);
    const int64_t slack = op == Op::kBatchNormEval ? (int64_t{3} << 20) : 65536 * 4 + 4096;
    EXPECT_LE(ours.first, kActivationBytes + slack) << name_of(op);
  }
}

// A gradient under create_graph is recorded by the engine: it is never reused.
TEST(Reuse, CreateGraphMatchesStock) {
  for (Op op : {Op::kRelu, Op::kBatchNormEval}) {
    auto run_cg = [&] {
      const Params p = make_params();
      at::manual_seed(7);
      at::Tensor x = to_test_device(at::randn({kN, kC, kH, kW}) * 3).requires_grad_(true);
      at::Tensor w = p.weight.clone().requires_grad_(true);
      at::Tensor loss = (apply(op, x, p) * w).sum();
      at::Tensor gx = torch::autograd::grad({loss}, {x}, {}, /*retain_graph=*/true, /*create_graph=*/true)[0];
      at::Tensor gw = torch::autograd::grad({(gx * gx).sum()}, {w})[0];
      return std::make_pair(gx.detach(), gw);
    };
    const auto stock = with_memsave(false, run_cg);
    const auto ours = with_memsave(true, run_cg);
    EXPECT_TRUE(bitwise_equal(stock.first, ours.first)) << name_of(op);
    EXPECT_TRUE(bitwise_equal(stock.second, ours.second)) << name_of(op);
  }
}

// Batch norm in pieces over batch sizes that do not divide evenly, other dtypes and a
// 2-D input, against stock.
TEST(Reuse, BatchNormPiecesMatchStockOverShapes) {
  struct Shape {
    std::vector<int64_t> sizes;
    at::ScalarType dtype;
  };
  const std::vector<Shape> shapes{{{7, 32, 48, 48}, at::kFloat},  {{5, 16, 128, 128}, at::kDouble},
                                  {{9, 8, 96, 96}, at::kBFloat16}, {{1, 64, 128, 128}, at::kFloat},
                                  {{65537, 7}, at::kFloat},         {{13, 3, 40, 40, 40}, at::kFloat}};
  for (const auto& s : shapes) {
    auto run_bn = [&] {
      at::manual_seed(5);
      const int64_t c = s.sizes[1];
      auto o = at::TensorOptions().dtype(s.dtype).device(test_device());
      at::Tensor w = at::rand({c}, o) + 0.5, b = at::randn({c}, o), rm = at::randn({c}, o),
                 rv = at::rand({c}, o) + 0.25;
      at::Tensor x = (at::randn(s.sizes, o) * 3).requires_grad_(true);
      at::Tensor g = at::randn(s.sizes, o);
      at::Tensor y = at::batch_norm(x, w, b, rm, rv, false, 0.1, 1e-5, false);
      (y * g).sum().backward();
      return x.grad();
    };
    const at::Tensor stock = with_memsave(false, run_bn), ours = with_memsave(true, run_bn);
    EXPECT_TRUE(bitwise_equal(stock, ours)) << at::IntArrayRef(s.sizes) << " " << s.dtype;
  }
}

}  // namespace
