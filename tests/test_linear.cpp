// SPDX-License-Identifier: MIT
// test_linear: linear with libmemsave against stock, bit for bit, for 2-D and N-D inputs,
// with and without bias, over layouts, dtypes and every requires_grad pattern (run and
// compared by tests/testing.h); fallbacks; memory and time against stock (stock already keeps
// the minimum). The node contract is in test_contract.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/function.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <limits>
#include <sstream>

#include "testing.h"

namespace {

using namespace memsave_test;  // the harness: tests/testing.h

constexpr auto F = MEMSAVE_FAMILY_LINEAR;

struct LinearCase {
  std::vector<int64_t> batch{5};  // leading dimensions of the input; its last is in_features
  int64_t in = 7, out = 6;
  bool bias = true;
  Layout input_layout = Layout::kContiguous;  // kTransposed (column-major), kStrided: 2-D inputs only
  bool weight_transposed = false;             // the weight column-major (kTransposed)
  bool grad_transposed = false;               // the incoming gradient has its first two dims swapped in memory
  at::ScalarType dtype = at::kFloat;

  std::string str() const {
    std::ostringstream s;
    s << "batch" << at::IntArrayRef(batch) << " in" << in << " out" << out << (bias ? " bias" : "")
      << " " << layout_name(input_layout)
      << (weight_transposed ? " wT" : "") << (grad_transposed ? " gT" : "") << " " << dtype;
    return s.str();
  }
};

struct Data {
  at::Tensor x, w, b, go;
};

Data make_data(const LinearCase& c) {
  at::manual_seed(777);
  auto opts = at::TensorOptions().dtype(c.dtype);
  std::vector<int64_t> xs = c.batch;
  xs.push_back(c.in);
  Data d;
  d.x = with_layout(at::randn(xs, opts), c.input_layout);
  d.w = with_layout(at::randn({c.out, c.in}, opts), c.weight_transposed ? Layout::kTransposed : Layout::kContiguous);
  if (c.bias) d.b = at::randn({c.out}, opts);
  std::vector<int64_t> ys = c.batch;
  ys.push_back(c.out);
  if (c.grad_transposed) {
    std::swap(ys[0], ys[1]);
    d.go = at::randn(ys, opts).transpose(0, 1);
  } else {
    d.go = at::randn(ys, opts);
  }
  for (at::Tensor* t : {&d.x, &d.w, &d.b, &d.go}) *t = to_test_device(*t);
  return d;
}

at::Tensor linear_of(const std::vector<at::Tensor>& a) {
  return at::linear(a[0], a[1], a[2].defined() ? c10::optional<at::Tensor>(a[2]) : c10::nullopt);
}

std::vector<at::Tensor> linear_forward(std::vector<at::Tensor>& a) { return {linear_of(a)}; }

// Compares every requires_grad pattern of (input, weight, bias) with the case's incoming
// gradient; returns how many ran (each through our node, counted).
int check_case(const LinearCase& c, const Data& d) {
  int ran = 0;
  for (unsigned p : requires_grad_patterns(3, c.bias ? 7 : 3, /*with_none=*/false)) {
    const std::string where = c.str() + pattern_name(p, 3);
    auto before = stats();
    auto r = compare_with_stock(linear_forward, {d.x, d.w, d.b}, p, where,
                                              [&](const at::Tensor&) { return d.go; });
    auto after = stats();
    EXPECT_EQ(r.ours.grad_fn, "MemsaveLinearBackward") << where;
    EXPECT_EQ(after.substituted[F], before.substituted[F] + 1) << where;
    ran++;
  }
  return ran;
}

int check_case(const LinearCase& c) { return check_case(c, make_data(c)); }

TEST(Linear, TwoDimensionalGrid) {
  int ran = 0;
  for (Layout layout : {Layout::kContiguous, Layout::kTransposed, Layout::kStrided})
    for (bool weight_transposed : {false, true})
      for (bool bias : {true, false})
        for (at::ScalarType dtype : {at::kFloat, at::kDouble})
          for (bool grad_transposed : {false, true}) {
            LinearCase c;
            c.input_layout = layout, c.weight_transposed = weight_transposed, c.bias = bias, c.dtype = dtype;
            c.grad_transposed = grad_transposed;
            ran += check_case(c);
          }
  EXPECT_EQ(ran, 3 * 2 * 2 * 2 * (7 + 3));
}

// Degenerate sizes where stock's column-major tests see strides of size-1 dimensions.
TEST(Linear, SizeOneDimensions) {
  int ran = 0;
  for (std::vector<int64_t> batch : {std::vector<int64_t>{1}, {4}, {1, 1}, {3, 1}})
    for (int64_t in : {1, 5})
      for (int64_t out : {1, 3})
        for (bool bias : {true, false}) {
          LinearCase c;
          c.batch = batch, c.in = in, c.out = out, c.bias = bias;
          ran += check_case(c);
        }
  EXPECT_EQ(ran, 4 * 2 * 2 * (7 + 3));
}

// N-D contiguous inputs: folded to 2-D as stock folds them; the bias gradient is reduced
// from the tensor stock reduces it from (1.13: 2-D for 3-D inputs, N-D beyond; 2.x: 2-D).
// A non-contiguous incoming gradient makes the fold copy it, as in stock.
TEST(Linear, NdContiguousGrid) {
  int ran = 0;
  for (std::vector<int64_t> batch : {std::vector<int64_t>{2, 3}, {2, 3, 4}, {2, 1, 3, 2}})
    for (bool bias : {true, false})
      for (bool weight_transposed : {false, true})
        for (bool grad_transposed : {false, true}) {
          LinearCase c;
          c.batch = batch, c.bias = bias, c.weight_transposed = weight_transposed;
          c.grad_transposed = grad_transposed, c.dtype = grad_transposed ? at::kDouble : at::kFloat;
          ran += check_case(c);
        }
  EXPECT_EQ(ran, 3 * 2 * 2 * (7 + 3));
}

TEST(Linear, SpecialValues) {
  LinearCase c;
  Data d = make_data(c);
  put_values(d.x, {{0, kNaN}, {8, kInf}, {9, -0.0}});
  put_values(d.w, {{3, -kInf}});
  put_values(d.go, {{2, -0.0}});
  EXPECT_EQ(check_case(c, d), 7);
}

// Cases stock handles with other decompositions go to stock, counted.
TEST(Linear, FallbacksAreCounted) {
  struct Fallback {
    at::Tensor x;
    bool bias;
  };
  at::manual_seed(3);
  at::Tensor w = at::randn({6, 7}), b = at::randn({6});
  std::vector<Fallback> cases{{at::randn({7}), true},                                     // 1-D input
                              {at::randn({2, 7, 3}).transpose(1, 2), true},               // N-D non-contiguous
                              {at::randn({2, 7, 3}).transpose(1, 2), false},
                              {at::randn({0, 7}), true}};                                 // empty
  for (const auto& f : cases) {
    const std::vector<at::Tensor> args{to_test_device(f.x), to_test_device(w),
                                       f.bias ? to_test_device(b) : at::Tensor()};
    auto before = stats();
    auto r = compare_with_stock(linear_forward, args, 0b011, "fallback");
    auto after = stats();
    EXPECT_EQ(after.fallbacks[F], before.fallbacks[F] + 1) << f.x.sizes();
    EXPECT_EQ(r.ours.grad_fn, r.stock.grad_fn);
  }
}

// Second order through our node with every argument trainable, 2-D and N-D inputs (the
// contract's double backward has a frozen weight).
TEST(Linear, DoubleBackwardAllTrainable) {
  for (std::vector<int64_t> batch : {std::vector<int64_t>{5}, {2, 3}, {2, 2, 3}}) {
    LinearCase c;
    c.batch = batch;
    Data d = make_data(c);
    EXPECT_TRUE(compare_double_backward(linear_forward, {d.x, d.w, d.b}, 0b111, c.str()));
  }
}

// Second order where the order of the sums shows (Note [Linear edges] in hooks/ops/linear.cpp):
// NaN with two payloads and infinities in input and weight, so that a sum run in another
// order than stock's gives other NaN bits; 2-D, 3-D and 4-D inputs (addmm, the fold, and on
// 1.13 matmul + add_), with and without bias, every requires_grad pattern, a weight with a
// size-1 dimension (its gradient's strides), through the output and not.
TEST(Linear, DoubleBackwardSumsInStockOrder) {
  const double nan2 = -std::numeric_limits<double>::quiet_NaN();  // the other sign bit
  for (std::vector<int64_t> batch : {std::vector<int64_t>{4}, {2, 3}, {2, 2, 3}})
    for (bool bias : {false, true})
      for (int64_t out : {1, 3}) {
        LinearCase c;
        c.batch = batch, c.bias = bias, c.in = 3, c.out = out;
        Data d = make_data(c);
        put_values(d.x, {{0, kNaN}, {2, kInf}, {4, nan2}, {5, -0.0}});
        put_values(d.w, {{0, nan2}, {1, -kInf}, {2, kNaN}});
        for (unsigned pattern : requires_grad_patterns(3, bias ? 0b111 : 0b011, /*with_none=*/false))
          for (bool through_output : {true, false})
            compare_double_backward(linear_forward, {d.x, d.w, d.b}, pattern,
                                    c.str() + " " + pattern_name(pattern, 3) + (through_output ? "" : " sum"),
                                    through_output);
      }
}

// The input is kept when the weight is trainable, as in stock (the kept weight: test_contract).
TEST(Linear, KeptInputModifiedInPlaceRaisesStockError) {
  auto attempt = [](bool on) {
    return with_memsave(on, [&] {
      LinearCase c;
      Data d = make_data(c);
      at::Tensor x = d.x.clone(), w = d.w.clone().requires_grad_(true);
      at::Tensor s = at::linear(x, w, d.b).sum();
      x.add_(1.0);
      return error_of([&] { s.backward(); });
    });
  };
  std::string stock = attempt(false), ours = attempt(true);
  EXPECT_NE(stock.find("modified by an inplace operation"), std::string::npos) << stock;
  EXPECT_NE(ours.find("modified by an inplace operation"), std::string::npos) << ours;
}

TEST(Linear, CountsKeptBytesEqualToStock) {
  LinearCase c;
  Data d = make_data(c);
  at::Tensor x = d.x.clone().requires_grad_(true), w = d.w.clone().requires_grad_(true);
  auto before = stats();
  with_memsave(true, [&] { return at::linear(x, w, d.b); });
  auto after = stats();
  const uint64_t bytes = (x.numel() + w.numel()) * 4;
  EXPECT_EQ(after.bytes_kept - before.bytes_kept, bytes);
  EXPECT_EQ(after.bytes_stock - before.bytes_stock, bytes);
}

// Memory and time of an MLP step against stock, for the record (docs/substituted.md's linear
// row): our node keeps what stock keeps, so the peak must not be higher; time is printed, not
// asserted (stock and libmemsave steps alternate; medians).
struct Mlp {
  std::vector<at::Tensor> w, b;
  at::Tensor x;
};

Mlp make_mlp(bool rx, bool rw) {
  at::manual_seed(0);
  const int64_t width = 128, batch = 64, depth = 6;
  Mlp m;
  for (int i = 0; i < depth; i++) {
    m.w.push_back(to_test_device(at::randn({width, width}) * 0.05).requires_grad_(rw));
    m.b.push_back(to_test_device(at::randn({width})).requires_grad_(rw));
  }
  m.x = to_test_device(at::randn({batch, 4, width})).requires_grad_(rx);
  return m;
}

// Peak CPU tensor bytes above the bytes alive before the step, and the step's seconds.
std::pair<int64_t, double> mlp_step(bool on, Mlp& m) {
  return with_memsave(on, [&] {
    const int64_t base = step_start();
    auto t0 = std::chrono::steady_clock::now();
    at::Tensor h = m.x;
    for (size_t i = 0; i < m.w.size(); i++) h = at::linear(h, m.w[i], m.b[i]);
    h.sum().backward();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const int64_t peak = peak_since(base);
    for (auto* list : {&m.w, &m.b})
      for (auto& t : *list) t.mutable_grad() = at::Tensor();
    m.x.mutable_grad() = at::Tensor();
    return std::make_pair(peak, seconds);
  });
}

TEST(Linear, MemoryAndTimeAgainstStock) {
  MEMSAVE_NEEDS_PEAK();
  for (int pattern : {1, 2, 3}) {
    bool rx = pattern & 1, rw = pattern & 2;
    Mlp m = make_mlp(rx, rw);
    mlp_step(false, m), mlp_step(true, m);  // warm-up
    std::vector<double> stock_t, ours_t;
    int64_t stock_peak = 0, ours_peak = 0;
    for (int r = 0; r < 7; r++) {
      auto s = mlp_step(false, m), o = mlp_step(true, m);
      stock_peak = s.first, ours_peak = o.first;
      stock_t.push_back(s.second), ours_t.push_back(o.second);
    }
    std::sort(stock_t.begin(), stock_t.end());
    std::sort(ours_t.begin(), ours_t.end());
    const double st = stock_t[3], ot = ours_t[3];
    std::printf("linear MLP 6x128, input 64x4x128, rx%d rw%d: peak stock %lld, memsave %lld; median step %.2f ms vs "
                "%.2f ms (ratio %.3f)\n",
                rx, rw, (long long)stock_peak, (long long)ours_peak, st * 1e3, ot * 1e3, ot / st);
    if (peaks_are_a_runs()) EXPECT_LE(ours_peak, stock_peak) << "our node keeps what stock keeps";
  }
}

}  // namespace
