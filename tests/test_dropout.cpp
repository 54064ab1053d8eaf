// SPDX-License-Identifier: MIT
// test_dropout: dropout, dropout_, feature dropout and native_dropout with libmemsave against
// stock, bit for bit (outputs, gradients with their strides, and the random stream after the
// call); stock's autograd semantics kept; a transformer encoder layer's peak memory.
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

using memsave_test::bitwise_equal;
using memsave_test::error_of;
using memsave_test::grad_fn_name;
using memsave_test::with_memsave;

enum class Layout { kContiguous, kChannelsLast, kStrided, kScalar, kEmpty };

const char* layout_name(Layout l) {
  switch (l) {
    case Layout::kContiguous: return "contig";
    case Layout::kChannelsLast: return "cl";
    case Layout::kStrided: return "strided";
    case Layout::kScalar: return "0-dim";
    case Layout::kEmpty: return "empty";
  }
  return "?";
}

// A leaf that requires grad and a non-leaf view or copy of it with the layout asked for;
// gradients are captured at the non-leaf (a leaf's .grad is restrided by AccumulateGrad).
struct Input {
  at::Tensor leaf, base;
};

Input make_input(Layout layout, at::ScalarType dtype) {
  at::manual_seed(1234);
  Input in;
  switch (layout) {
    case Layout::kScalar: in.leaf = at::randn({}); break;
    case Layout::kEmpty: in.leaf = at::randn({0, 3}); break;
    case Layout::kStrided: in.leaf = at::randn({2, 3, 5, 12}); break;
    default: in.leaf = at::randn({2, 3, 5, 6}); break;
  }
  in.leaf = in.leaf.to(dtype);
  if (layout == Layout::kChannelsLast) in.leaf = in.leaf.contiguous(at::MemoryFormat::ChannelsLast);
  in.leaf.requires_grad_(true);
  in.base = layout == Layout::kStrided ? in.leaf.slice(-1, 0, 12, 2) : in.leaf.clone();
  return in;
}

// A dropout call on x: the result, which for in-place variants is x itself.
using DropFn = std::function<std::vector<at::Tensor>(at::Tensor&)>;

struct DropRun {
  std::vector<at::Tensor> outs;
  at::Tensor gx, next_random;
  std::string grad_fn, error;
  uint64_t substituted = 0, passthrough = 0;
};

// Seeds the default generator, calls fn (on a copy of base for in-place variants, so that
// the gradient still reaches base through an identity), draws the next random numbers, then
// backward with a gradient drawn afterwards.
DropRun run(const DropFn& fn, Layout layout, at::ScalarType dtype, bool inplace, bool on) {
  return with_memsave(on, [&] {
    Input in = make_input(layout, dtype);
    at::Tensor x = inplace ? in.base.clone() : in.base;
    const auto before = memsave_test::stats();
    DropRun r;
    at::manual_seed(7);
    r.error = error_of([&] { r.outs = fn(x); });
    r.next_random = at::rand({8});
    const auto after = memsave_test::stats();
    r.substituted = after.substituted[MEMSAVE_FAMILY_DROPOUT] - before.substituted[MEMSAVE_FAMILY_DROPOUT];
    r.passthrough = after.passthrough[MEMSAVE_FAMILY_DROPOUT] - before.passthrough[MEMSAVE_FAMILY_DROPOUT];
    if (!r.error.empty()) return r;
    const at::Tensor& y = r.outs[0];
    r.grad_fn = grad_fn_name(y);
    at::Tensor go = at::randn(y.sizes()).to(y.scalar_type());
    if (y.requires_grad()) r.gx = torch::autograd::grad({y}, {in.base}, {go})[0];
    return r;
  });
}

// Compares stock and libmemsave; returns the number of substitutions libmemsave made.
uint64_t check(const DropFn& fn, Layout layout, at::ScalarType dtype, bool inplace, const std::string& where) {
  DropRun stock = run(fn, layout, dtype, inplace, false), ours = run(fn, layout, dtype, inplace, true);
  EXPECT_EQ(stock.error, ours.error) << where;
  EXPECT_TRUE(bitwise_equal(stock.next_random, ours.next_random)) << where << " random stream after the call";
  EXPECT_EQ(stock.outs.size(), ours.outs.size()) << where;
  for (size_t i = 0; i < std::min(stock.outs.size(), ours.outs.size()); i++)
    EXPECT_TRUE(bitwise_equal(stock.outs[i], ours.outs[i])) << where << " output " << i;
  EXPECT_TRUE(bitwise_equal(stock.gx, ours.gx)) << where << " grad input";
  EXPECT_EQ(stock.substituted, 0u) << where;
  if (ours.substituted) EXPECT_NE(ours.grad_fn.find("Memsave"), std::string::npos) << where << " " << ours.grad_fn;
  else EXPECT_EQ(stock.grad_fn, ours.grad_fn) << where;
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
          for (Layout layout :
               {Layout::kContiguous, Layout::kChannelsLast, Layout::kStrided, Layout::kScalar, Layout::kEmpty}) {
            std::ostringstream where;
            where << (inplace ? "dropout_" : "dropout") << " p" << p << (train ? " train " : " eval ") << dtype
                  << " " << layout_name(layout);
            const uint64_t n = check(dropout(p, train, inplace), layout, dtype, inplace, where.str());
            // 2.x changed the noise layout of non-contiguous inputs (pytorch#129467); those
            // fall back to stock there (hooks/dropout.cpp).
            // (In-place variants run on a clone, which makes the strided slice contiguous.)
            const bool contiguous = layout != Layout::kChannelsLast && (layout != Layout::kStrided || inplace);
            const bool layout_ok = TORCH_VERSION_MAJOR < 2 || contiguous;
            const bool expect = train && p > 0 && p < 1 && layout != Layout::kEmpty && layout_ok;
            expected += expect;
            EXPECT_EQ(n, expect ? 1u : 0u) << where.str();
            substituted += n;
            ran++;
          }
  std::printf("Dropout.EqualityGrid: %d configurations compared, %d substituted\n", ran, substituted);
  EXPECT_EQ(substituted, expected);
  EXPECT_EQ(expected, TORCH_VERSION_MAJOR < 2 ? 3 * 2 * 3 * 4 : 3 * 3 * (2 + 3));
}

// p == 1 multiplies by a 0-dim zero (stock keeps that 0-dim tensor): passthrough.
TEST(Dropout, ProbabilityOneIsPassthrough) {
  DropRun ours = run(dropout(1.0, true, false), Layout::kContiguous, at::kFloat, false, true);
  EXPECT_EQ(ours.passthrough, 1u);
  EXPECT_EQ(ours.grad_fn, "MulBackward0");
}

TEST(Dropout, SpecialValues) {
  for (bool inplace : {false, true}) {
    auto once = [&](bool on) {
      return with_memsave(on, [&] {
        at::manual_seed(3);
        at::Tensor leaf = at::randn({64});
        leaf[0] = std::numeric_limits<float>::quiet_NaN();
        leaf[1] = std::numeric_limits<float>::infinity();
        leaf[2] = -std::numeric_limits<float>::infinity();
        leaf.slice(0, 3, 10).fill_(-0.0f);
        leaf.requires_grad_(true);
        at::Tensor base = leaf.clone();
        at::Tensor x = inplace ? base.clone() : base;
        at::manual_seed(11);
        at::Tensor y = inplace ? at::dropout_(x, 0.5, true) : at::dropout(x, 0.5, true);
        at::Tensor go = at::randn({64});
        go[20] = std::numeric_limits<float>::quiet_NaN();
        go[21] = -std::numeric_limits<float>::infinity();
        go.slice(0, 22, 30).fill_(-0.0f);
        return std::make_pair(y.detach(), torch::autograd::grad({y}, {base}, {go})[0]);
      });
    };
    auto stock = once(false), ours = once(true);
    EXPECT_TRUE(bitwise_equal(stock.first, ours.first)) << inplace;
    EXPECT_TRUE(bitwise_equal(stock.second, ours.second)) << inplace;
  }
}

// dropout_ on a view of a non-leaf: the base gets CopySlices, as in stock.
TEST(Dropout, InplaceOnViewRebasesHistory) {
  auto once = [](bool on) {
    return with_memsave(on, [] {
      at::manual_seed(5);
      at::Tensor leaf = at::randn({4, 10}).requires_grad_(true);
      at::Tensor h = leaf.clone();
      at::manual_seed(6);
      at::Tensor view = h.slice(1, 2, 8);
      at::dropout_(view, 0.3, true);
      std::string name = grad_fn_name(h);
      at::Tensor g = torch::autograd::grad({h.pow(2).sum()}, {leaf})[0];
      return std::make_tuple(h.detach(), g, name, at::rand({4}));
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
  at::Tensor leaf = at::randn({8}).requires_grad_(true);
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
      at::Tensor leaf = at::randn({16}).requires_grad_(true);
      at::manual_seed(9);
      std::string err = error_of([&] { at::dropout_(leaf, 0.5, true); });
      return std::make_pair(err, at::rand({4}));
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
    check(fn, Layout::kContiguous, at::kFloat, inplace, "feature_dropout");
    DropRun ours = run(fn, Layout::kContiguous, at::kFloat, inplace, true);
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
        for (Layout layout : {Layout::kContiguous, Layout::kChannelsLast, Layout::kStrided, Layout::kScalar}) {
          std::ostringstream where;
          where << "native_dropout p" << p << " train " << (train ? (*train ? "true" : "false") : "None") << " "
                << dtype << " " << layout_name(layout);
          substituted += check(native_dropout(p, train), layout, dtype, false, where.str());
        }
  EXPECT_EQ(substituted, 3 * 3 * 3 * 4);
  DropRun empty = run(native_dropout(0.3, true), Layout::kEmpty, at::kFloat, false, true);
  EXPECT_EQ(empty.substituted, 0u);
  EXPECT_EQ(empty.passthrough, 1u);
}

struct Double {
  at::Tensor g, gg;
};

// create_graph: y.pow(2) makes the first gradient depend on the input again.
Double double_backward(const DropFn& fn, bool inplace, bool on) {
  return with_memsave(on, [&] {
    Input in = make_input(Layout::kContiguous, at::kDouble);
    at::Tensor x = inplace ? in.base.clone() : in.base;
    at::manual_seed(7);
    at::Tensor y = fn(x)[0];
    Double d;
    d.g = torch::autograd::grad({y.pow(2).sum()}, {in.base}, {}, /*retain_graph=*/true, /*create_graph=*/true)[0];
    d.gg = torch::autograd::grad({d.g.pow(2).sum()}, {in.base})[0];
    d.g = d.g.detach();
    return d;
  });
}

TEST(Dropout, DoubleBackward) {
  const std::vector<std::pair<DropFn, bool>> fns{{dropout(0.4, true, false), false},
                                                 {dropout(0.4, true, true), true},
                                                 {native_dropout(0.4, true), false},
                                                 {native_dropout(0.4, c10::nullopt), false}};
  for (const auto& [fn, inplace] : fns) {
    Double stock = double_backward(fn, inplace, false), ours = double_backward(fn, inplace, true);
    EXPECT_TRUE(bitwise_equal(stock.g, ours.g));
    EXPECT_TRUE(bitwise_equal(stock.gg, ours.gg));
  }
}

std::string backward_twice(bool on, const DropFn& fn) {
  return with_memsave(on, [&] {
    Input in = make_input(Layout::kContiguous, at::kFloat);
    at::Tensor s = fn(in.base)[0].sum();
    s.backward();
    return error_of([&] { s.backward(); });
  });
}

TEST(Dropout, SecondBackwardRaisesStockError) {
  for (const DropFn& fn : {dropout(0.5, true, false), native_dropout(0.5, true)}) {
    std::string stock = backward_twice(false, fn), ours = backward_twice(true, fn);
    EXPECT_NE(stock.find("backward through the graph a second time"), std::string::npos) << stock;
    EXPECT_NE(ours.find("backward through the graph a second time"), std::string::npos) << ours;
  }
}

TEST(Dropout, RetainGraphAllowsSecondBackward) {
  auto twice = [](bool on) {
    return with_memsave(on, [] {
      Input in = make_input(Layout::kChannelsLast, at::kFloat);
      at::manual_seed(1);
      at::Tensor s = at::dropout(in.base, 0.25, true).pow(2).sum() + std::get<0>(at::native_dropout(in.base, 0.5, true)).sum();
      s.backward({}, /*retain_graph=*/true);
      s.backward();
      return in.leaf.grad();
    });
  };
  EXPECT_TRUE(bitwise_equal(twice(false), twice(true)));
}

TEST(Dropout, NoGradAndDisabledBuildNoNode) {
  Input in = make_input(Layout::kContiguous, at::kFloat);
  {
    at::NoGradGuard no_grad;
    EXPECT_EQ(grad_fn_name(at::dropout(in.leaf, 0.5, true)), "(none)");
  }
  EXPECT_EQ(with_memsave(false, [&] { return grad_fn_name(at::dropout(in.base, 0.5, true)); }), "MulBackward0");
  EXPECT_EQ(with_memsave(true, [&] { return grad_fn_name(at::dropout(in.base, 0.5, true)); }),
            "MemsaveDropoutBackward");
  EXPECT_EQ(with_memsave(true, [&] { return grad_fn_name(std::get<0>(at::native_dropout(in.base, 0.5, true))); }),
            "MemsaveNativeDropoutBackward");
}

TEST(Dropout, CountsBytes) {
  at::Tensor x = at::randn({1000}).requires_grad_(true);
  auto before = memsave_test::stats();
  with_memsave(true, [&] { return at::dropout(x, 0.5, true); });
  auto after = memsave_test::stats();
  EXPECT_EQ(after.bytes_kept - before.bytes_kept, 125u + 4u) << "1000 bits and the 0-dim value";
  EXPECT_EQ(after.bytes_stock - before.bytes_stock, 4000u) << "the float noise";
}

// A transformer encoder layer (d_model 64, 4 heads, feed-forward 2048, dropout 0.1, train
// mode) with frozen weights and an input that requires grad: stock's MulBackward0 nodes keep
// float noise for the attention weights (batch x heads x seq x seq) and for three
// activations; libmemsave keeps bits.
struct EncoderStep {
  int64_t peak, kept_after_forward;
  at::Tensor y, gx;
};

EncoderStep encoder_step(bool on) {
  at::manual_seed(0);
  torch::nn::TransformerEncoderLayer layer(torch::nn::TransformerEncoderLayerOptions(64, 4).dropout(0.1));
  layer->train();
  for (auto& p : layer->parameters()) p.requires_grad_(false);
  at::Tensor x = at::randn({128, 8, 64}).requires_grad_(true);  // (seq, batch, d_model)
  return with_memsave(on, [&] {
    memsave_reset_peak();
    const int64_t base = memsave_test::stats().cpu_current_bytes;
    at::manual_seed(42);
    at::Tensor y = layer->forward(x);
    const int64_t after_forward = static_cast<int64_t>(memsave_test::stats().cpu_current_bytes) - base;
    y.pow(2).sum().backward();
    EncoderStep r{static_cast<int64_t>(memsave_test::stats().cpu_peak_bytes) - base, after_forward, y.detach(),
                  x.grad()};
    return r;
  });
}

TEST(DropoutMemory, TransformerEncoderLayerPeakBelowStock) {
  const auto before = memsave_test::stats();
  EncoderStep stock = encoder_step(false), ours = encoder_step(true);
  const auto after = memsave_test::stats();
  std::printf(
      "TransformerEncoderLayer (seq 128, batch 8, d_model 64, 4 heads, ff 2048, dropout 0.1, frozen, input grad): "
      "peak stock %lld B, libmemsave %lld B, ratio %.3f; alive after forward: stock %lld B, libmemsave %lld B\n",
      (long long)stock.peak, (long long)ours.peak, (double)ours.peak / (double)stock.peak,
      (long long)stock.kept_after_forward, (long long)ours.kept_after_forward);
  EXPECT_TRUE(bitwise_equal(stock.y, ours.y));
  EXPECT_TRUE(bitwise_equal(stock.gx, ours.gx));
  EXPECT_EQ(after.substituted[MEMSAVE_FAMILY_DROPOUT] - before.substituted[MEMSAVE_FAMILY_DROPOUT], 4u);
  EXPECT_LE(ours.peak, stock.peak);
  EXPECT_LT(ours.peak, stock.peak);
}

TEST(Dropout, HooksAreActive) { EXPECT_EQ(memsave_is_active(), 1); }

}  // namespace
