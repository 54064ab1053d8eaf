// SPDX-License-Identifier: MIT
// test_dropout: dropout, dropout_, feature dropout and native_dropout with libmemsave against
// stock, bit for bit (outputs, gradients with their strides, and the random stream after the
// call; run and compared by tests/testing.h); what is special to dropout; a transformer
// encoder layer's peak memory. The node contract is in test_contract.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/function.h>
#include <torch/nn/modules/transformerlayer.h>

#include <cstdio>
#include <functional>
#include <sstream>

#include <torch/version.h>

#include "testing.h"

namespace {

using namespace memsave_test;  // the harness: tests/testing.h

// The input: a 2x3x5x6 tensor in one of the harness's layouts, a 0-dim or an empty tensor.
enum class Input { kContiguous, kChannelsLast, kStrided, kScalar, kEmpty };

const char* input_name(Input i) {
  switch (i) {
    case Input::kContiguous: return "contig";
    case Input::kChannelsLast: return "cl";
    case Input::kStrided: return "strided";
    case Input::kScalar: return "0-dim";
    case Input::kEmpty: return "empty";
  }
  return "?";
}

at::Tensor make_input(Input input, at::ScalarType dtype) {
  at::manual_seed(1234);
  if (input == Input::kScalar) return to_test_device(at::randn({}).to(dtype));
  if (input == Input::kEmpty) return to_test_device(at::randn({0, 3}).to(dtype));
  const Layout layout = input == Input::kChannelsLast ? Layout::kChannelsLast
                        : input == Input::kStrided    ? Layout::kStrided
                                                      : Layout::kContiguous;
  return with_layout(to_test_device(at::randn({2, 3, 5, 6}).to(dtype)), layout);
}

// A dropout call on x: the result, which for in-place variants is x itself.
using DropFn = std::function<std::vector<at::Tensor>(at::Tensor&)>;

// The harness's forward: seeds the default generator, calls fn (on a copy of the argument
// for in-place variants, so that the gradient still reaches the argument through an
// identity), then draws the next random numbers (compared as one more output). The
// incoming gradient is drawn afterwards.
Forward forward(const DropFn& fn, bool inplace) {
  return [=](std::vector<at::Tensor>& a) {
    at::Tensor x = inplace ? a[0].clone() : a[0];
    at::manual_seed(7);
    std::vector<at::Tensor> outs = fn(x);
    outs.push_back(at::rand({8}, at::TensorOptions().device(test_device())));
    return outs;
  };
}

at::Tensor next_random_grad(const at::Tensor& y) {
  return to_test_device(at::randn(y.sizes()).to(y.scalar_type()));
}

struct Counted {
  Run run;
  uint64_t substituted = 0, passthrough = 0;
};

Counted run(const DropFn& fn, Input input, at::ScalarType dtype, bool inplace, bool on) {
  const auto before = stats();
  Counted r;
  r.run = run_once(on, forward(fn, inplace), {make_input(input, dtype)}, 1, next_random_grad);
  const auto after = stats();
  r.substituted = after.substituted[MEMSAVE_FAMILY_DROPOUT] - before.substituted[MEMSAVE_FAMILY_DROPOUT];
  r.passthrough = after.passthrough[MEMSAVE_FAMILY_DROPOUT] - before.passthrough[MEMSAVE_FAMILY_DROPOUT];
  return r;
}

// Compares stock and libmemsave; returns the number of substitutions libmemsave made.
uint64_t check(const DropFn& fn, Input input, at::ScalarType dtype, bool inplace, const std::string& where) {
  Counted stock = run(fn, input, dtype, inplace, false), ours = run(fn, input, dtype, inplace, true);
  expect_equal_runs(stock.run, ours.run, where);
  EXPECT_EQ(stock.substituted, 0u) << where;
  if (ours.substituted)
    EXPECT_NE(ours.run.grad_fn.find("Memsave"), std::string::npos) << where << " " << ours.run.grad_fn;
  else EXPECT_EQ(stock.run.grad_fn, ours.run.grad_fn) << where;
  return ours.substituted;
}

DropFn dropout(double p, bool train, bool inplace) {
  return [=](at::Tensor& x) -> std::vector<at::Tensor> {
    if (inplace) return {at::dropout_(x, p, train)};
    return {at::dropout(x, p, train)};
  };
}

TEST(Dropout, EqualityGrid) {
  int ran = 0, substituted = 0, expected = 0;
  for (double p : {0.0, 0.1, 0.5, 0.9, 1.0})
    for (bool train : {true, false})
      for (bool inplace : {false, true})
        for (at::ScalarType dtype : {at::kFloat, at::kDouble, at::kBFloat16})
          for (Input layout :
               {Input::kContiguous, Input::kChannelsLast, Input::kStrided, Input::kScalar, Input::kEmpty}) {
            std::ostringstream where;
            where << (inplace ? "dropout_" : "dropout") << " p" << p << (train ? " train " : " eval ") << dtype
                  << " " << input_name(layout);
            const uint64_t n = check(dropout(p, train, inplace), layout, dtype, inplace, where.str());
            // 2.x changed the noise layout of non-contiguous inputs (pytorch#129467); those
            // fall back to stock there (hooks/ops/dropout.cpp).
            // (In-place variants run on a clone, which makes the strided slice contiguous.)
            const bool contiguous = layout != Input::kChannelsLast && (layout != Input::kStrided || inplace);
            const bool layout_ok = TORCH_VERSION_MAJOR < 2 || contiguous;
            const bool expect = train && p > 0 && p < 1 && layout != Input::kEmpty && layout_ok;
            expected += expect;
            // On CUDA, dropout is native_dropout's fused kernel: the counts are the CPU's.
            if (!on_cuda()) {
              EXPECT_EQ(n, expect ? 1u : 0u) << where.str();
            }
            substituted += n;
            ran++;
          }
  std::printf("Dropout.EqualityGrid: %d configurations compared, %d substituted\n", ran, substituted);
  if (on_cuda()) return;
  EXPECT_EQ(substituted, expected);
  EXPECT_EQ(expected, TORCH_VERSION_MAJOR < 2 ? 3 * 2 * 3 * 4 : 3 * 3 * (2 + 3));
}

// p == 1 multiplies by a 0-dim zero (stock keeps that 0-dim tensor): passthrough.
TEST(Dropout, ProbabilityOneIsPassthrough) {
  Counted ours = run(dropout(1.0, true, false), Input::kContiguous, at::kFloat, false, true);
  EXPECT_EQ(ours.passthrough, 1u);
  EXPECT_EQ(ours.run.grad_fn, "MulBackward0");
}

TEST(Dropout, SpecialValues) {
  at::manual_seed(3);
  at::Tensor data = at::randn({64});
  data[0] = std::numeric_limits<float>::quiet_NaN();
  data[1] = std::numeric_limits<float>::infinity();
  data[2] = -std::numeric_limits<float>::infinity();
  data.slice(0, 3, 10).fill_(-0.0f);
  auto grad_with_specials = [](const at::Tensor& y) {
    at::Tensor go = at::randn({64});
    go[20] = std::numeric_limits<float>::quiet_NaN();
    go[21] = -std::numeric_limits<float>::infinity();
    go.slice(0, 22, 30).fill_(-0.0f);
    return to_test_device(go);
  };
  for (bool inplace : {false, true}) {
    DropFn fn = [inplace](at::Tensor& x) -> std::vector<at::Tensor> {
      at::manual_seed(11);
      return {inplace ? at::dropout_(x, 0.5, true) : at::dropout(x, 0.5, true)};
    };
    auto f = [&](std::vector<at::Tensor>& a) { at::Tensor x = inplace ? a[0].clone() : a[0]; return fn(x); };
    EXPECT_TRUE(compare_with_stock(f, {to_test_device(data)}, 1, inplace ? "dropout_" : "dropout",
                                                 grad_with_specials));
  }
}

// dropout_ on a view of a non-leaf: the base gets CopySlices, as in stock.
TEST(Dropout, InplaceOnViewRebasesHistory) {
  auto once = [](bool on) {
    return with_memsave(on, [] {
      at::manual_seed(5);
      at::Tensor leaf = to_test_device(at::randn({4, 10})).requires_grad_(true);
      at::Tensor h = leaf.clone();
      at::manual_seed(6);
      at::Tensor view = h.slice(1, 2, 8);
      at::dropout_(view, 0.3, true);
      std::string name = grad_fn_name(h);
      at::Tensor g = torch::autograd::grad({h.pow(2).sum()}, {leaf})[0];
      return std::make_tuple(h.detach(), g, name, at::rand({4}, h.options()));
    });
  };
  auto stock = once(false), ours = once(true);
  EXPECT_TRUE(bitwise_equal(std::get<0>(stock), std::get<0>(ours)));
  EXPECT_TRUE(bitwise_equal(std::get<1>(stock), std::get<1>(ours)));
  EXPECT_NE(std::get<2>(stock).find("CopySlices"), std::string::npos) << std::get<2>(stock);
  EXPECT_EQ(std::get<2>(ours), std::get<2>(stock));
  EXPECT_TRUE(bitwise_equal(std::get<3>(stock), std::get<3>(ours)));
}

TEST(Dropout, InplaceBumpsVersion) {
  at::Tensor leaf = to_test_device(at::randn({8})).requires_grad_(true);
  at::Tensor h = leaf.clone();
  const auto v0 = h._version();
  with_memsave(true, [&] { return at::dropout_(h, 0.5, true); });
  EXPECT_EQ(h._version(), v0 + 1);
  EXPECT_EQ(grad_fn_name(h), "MemsaveDropoutBackward");
}

// Stock raises in mul_, after drawing the noise: the same message and the same stream.
TEST(Dropout, InplaceOnLeafRaisesStockErrorAfterDrawing) {
  auto once = [](bool on) {
    return with_memsave(on, [] {
      at::Tensor leaf = to_test_device(at::randn({16})).requires_grad_(true);
      at::manual_seed(9);
      std::string err = error_of([&] { at::dropout_(leaf, 0.5, true); });
      return std::make_pair(err, at::rand({4}, leaf.options().requires_grad(false)));
    });
  };
  auto stock = once(false), ours = once(true);
  EXPECT_NE(stock.first.find("a leaf Variable that requires grad"), std::string::npos) << stock.first;
  EXPECT_EQ(stock.first.substr(0, stock.first.find("\n")), ours.first.substr(0, ours.first.find("\n")));
  EXPECT_TRUE(bitwise_equal(stock.second, ours.second));
}

// dropout1d/2d/3d: stock's noise is (N, C, 1, ...), already small: stock, counted.
TEST(Dropout, FeatureDropoutIsPassthrough) {
  for (bool inplace : {false, true}) {
    DropFn fn = [inplace](at::Tensor& x) -> std::vector<at::Tensor> {
      return {inplace ? at::feature_dropout_(x, 0.4, true) : at::feature_dropout(x, 0.4, true)};
    };
    check(fn, Input::kContiguous, at::kFloat, inplace, "feature_dropout");
    Counted ours = run(fn, Input::kContiguous, at::kFloat, inplace, true);
    EXPECT_EQ(ours.passthrough, 1u);
    EXPECT_EQ(ours.substituted, 0u);
  }
}

DropFn native_dropout(double p, c10::optional<bool> train) {
  return [=](at::Tensor& x) -> std::vector<at::Tensor> {
    auto r = at::native_dropout(x, p, train);
    return {std::get<0>(r), std::get<1>(r)};
  };
}

// native_dropout is the CUDA path of dropout; on CPU it is reached only by direct calls,
// which exercise the same node (its mask comes back in the input's dtype on CPU, bool on
// CUDA; eval gives a bool mask on both).
TEST(Dropout, NativeDropoutGrid) {
  int substituted = 0;
  for (double p : {0.0, 0.3, 1.0})
    for (c10::optional<bool> train : {c10::optional<bool>(true), c10::optional<bool>(false), c10::optional<bool>()})
      for (at::ScalarType dtype : {at::kFloat, at::kDouble, at::kBFloat16})
        for (Input layout : {Input::kContiguous, Input::kChannelsLast, Input::kStrided, Input::kScalar}) {
          std::ostringstream where;
          where << "native_dropout p" << p << " train " << (train ? (*train ? "true" : "false") : "None") << " "
                << dtype << " " << input_name(layout);
          substituted += check(native_dropout(p, train), layout, dtype, false, where.str());
        }
  EXPECT_EQ(substituted, 3 * 3 * 3 * 4);
  Counted empty = run(native_dropout(0.3, true), Input::kEmpty, at::kFloat, false, true);
  EXPECT_EQ(empty.substituted, 0u);
  EXPECT_EQ(empty.passthrough, 1u);
}

TEST(Dropout, DoubleBackwardEveryKind) {
  const std::vector<std::pair<DropFn, bool>> fns{{dropout(0.4, true, false), false},
                                                 {dropout(0.4, true, true), true},
                                                 {native_dropout(0.4, true), false},
                                                 {native_dropout(0.4, c10::nullopt), false}};
  int kind = 0;
  for (const auto& [fn, inplace] : fns)
    EXPECT_TRUE(compare_double_backward(forward(fn, inplace), {make_input(Input::kContiguous, at::kDouble)},
                                                      1, "kind " + std::to_string(kind++)));
}

TEST(Dropout, CountsBytes) {
  MEMSAVE_CPU_ONLY("dropout is native_dropout's fused kernel on CUDA");
  at::Tensor x = at::randn({1000}).requires_grad_(true);
  auto before = stats();
  with_memsave(true, [&] { return at::dropout(x, 0.5, true); });
  auto after = stats();
  EXPECT_EQ(after.bytes_kept - before.bytes_kept, 125u + 4u) << "1000 bits and the 0-dim value";
  EXPECT_EQ(after.bytes_stock - before.bytes_stock, 4000u) << "the float noise";
}

// A transformer encoder layer (d_model 64, 4 heads, feed-forward 2048, dropout 0.1, train
// mode) with frozen weights and an input that requires grad: stock's MulBackward0 nodes keep
// float noise for the attention weights (batch x heads x seq x seq) and for three
// activations; libmemsave keeps bits.
Step encoder_step(bool on) {
  at::manual_seed(0);
  torch::nn::TransformerEncoderLayer layer(torch::nn::TransformerEncoderLayerOptions(64, 4).dropout(0.1));
  layer->train();
  for (auto& p : layer->parameters()) p.requires_grad_(false);
  layer->to(test_device());
  at::Tensor x = to_test_device(at::randn({128, 8, 64})).requires_grad_(true);  // (seq, batch, d_model)
  return with_memsave(on, [&] {
    const int64_t base = step_start();
    at::manual_seed(42);
    at::Tensor y = layer->forward(x);
    const int64_t alive = current_bytes() - base;
    y.pow(2).sum().backward();
    return Step{peak_since(base), alive, {y.detach(), x.grad()}};
  });
}

TEST(DropoutMemory, TransformerEncoderLayerPeakBelowStock) {
  MEMSAVE_NEEDS_PEAK();
  const auto [stock, ours] = expect_step_saves_memory(encoder_step, MEMSAVE_FAMILY_DROPOUT, 4);
  std::printf(
      "TransformerEncoderLayer (seq 128, batch 8, d_model 64, 4 heads, ff 2048, dropout 0.1, frozen, input grad): "
      "peak stock %lld B, libmemsave %lld B, ratio %.3f; alive after forward: stock %lld B, libmemsave %lld B\n",
      (long long)stock.peak, (long long)ours.peak, (double)ours.peak / (double)stock.peak,
      (long long)stock.alive_after_forward, (long long)ours.alive_after_forward);
}

}  // namespace
