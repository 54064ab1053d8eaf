// SPDX-License-Identifier: MIT
// test_relu: relu, threshold, leaky_relu, hardtanh and relu6, out-of-place and in-place,
// with libmemsave against stock, bit for bit (run and compared by tests/testing.h): outputs,
// gradients (double backward too), strides, version counters, errors; and the memory they
// keep (one bit per element). The node contract is in test_contract.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/function.h>

#include <limits>
#include <sstream>

#include "../hooks/core/compat.h"
#include "testing.h"

namespace {

using namespace memsave_test;  // the harness: tests/testing.h

constexpr auto F = MEMSAVE_FAMILY_RELU;

// One operator call: `fn` applies it (the in-place form to its argument), `bounds` are the
// values its backward compares against, `node` is our node's name.
struct OpCase {
  std::string name;
  bool inplace;
  std::function<at::Tensor(at::Tensor&)> fn;
  std::vector<double> bounds;
  std::string node;
  bool hardtanh = false;
};

std::vector<OpCase> op_cases() {
  std::vector<OpCase> ops;
  auto add = [&](std::string name, bool inplace, std::function<at::Tensor(at::Tensor&)> fn,
                 std::vector<double> bounds, std::string node, bool hardtanh = false) {
    ops.push_back({std::move(name), inplace, std::move(fn), std::move(bounds), std::move(node), hardtanh});
  };
  add("relu", false, [](at::Tensor& x) { return at::relu(x); }, {0}, "MemsaveReluBackward");
  add("relu_", true, [](at::Tensor& x) { return at::relu_(x); }, {0}, "MemsaveReluBackward");
  for (double t : {0.5, -1.0, 0.1, -kInf, kInf}) {
    const std::string s = std::to_string(t);
    add("threshold " + s, false, [t](at::Tensor& x) { return at::threshold(x, t, -2.5); }, {t}, "MemsaveThresholdBackward");
    add("threshold_ " + s, true, [t](at::Tensor& x) { return at::threshold_(x, t, 7); }, {t}, "MemsaveThresholdBackward");
  }
  for (double slope : {0.01, 0.2, 0.0, -0.5, 3.0}) {
    const std::string s = std::to_string(slope);
    add("leaky_relu " + s, false, [slope](at::Tensor& x) { return at::leaky_relu(x, slope); }, {0}, "MemsaveLeakyReluBackward");
    add("leaky_relu_ " + s, true, [slope](at::Tensor& x) { return at::leaky_relu_(x, slope); }, {0}, "MemsaveLeakyReluBackward");
  }
  for (auto [lo, hi] : {std::pair<double, double>{-1, 1}, {-0.3, 0.7}, {-kInf, 0.5}, {0.25, kInf}}) {
    const std::string s = std::to_string(lo) + "," + std::to_string(hi);
    add("hardtanh " + s, false, [lo, hi](at::Tensor& x) { return at::hardtanh(x, lo, hi); }, {lo, hi}, "MemsaveHardtanhBackward", true);
    add("hardtanh_ " + s, true, [lo, hi](at::Tensor& x) { return at::hardtanh_(x, lo, hi); }, {lo, hi}, "MemsaveHardtanhBackward", true);
  }
  add("relu6", false, [](at::Tensor& x) { return at::relu6(x); }, {0, 6}, "MemsaveHardtanhBackward", true);
  add("relu6_", true, [](at::Tensor& x) { return at::relu6_(x); }, {0, 6}, "MemsaveHardtanhBackward", true);
  return ops;
}

// Special values (signed zeros, infinities, optionally NaN, the bounds and their neighbours
// in the dtype) at the start, the middle and the end, so that both the vector loops and the
// scalar tails of stock's kernels see them.
void put_specials(at::Tensor& flat, const std::vector<double>& bounds, bool nan) {
  std::vector<double> v{kInf, -kInf, 0.0, -0.0, 1, -1, 6, 1e-30};
  if (nan) v.push_back(kNaN);
  auto o = flat.options();
  for (double b : bounds) {
    at::Tensor bt = at::full({}, b, o);
    v.push_back(bt.item<double>());
    v.push_back(at::nextafter(bt, at::full({}, kInf, o)).item<double>());
    v.push_back(at::nextafter(bt, at::full({}, -kInf, o)).item<double>());
  }
  const int64_t n = flat.numel();
  for (size_t i = 0; i < v.size(); i++) {
    const int64_t k = static_cast<int64_t>(i);
    // Also on both sides of the first piece boundary of a chunked backward (kLarge*).
    for (int64_t pos : {k, n / 2 + k, n - 1 - k, 65535 - k, 65536 + k})
      if (pos >= 0 && pos < n) flat[pos] = v[i];
  }
}

// kLarge*: more elements than one piece of Note [Backward in chunks] in hooks/ops/relu.cpp
// (65536), not a multiple of it nor of 8, so that backward crosses piece boundaries.
// kSliceTransposed: every other channel, channels and width swapped (neither dense nor in
// order). The others are the harness's layouts of a 2x3x6x7 input.
enum class Geometry {
  kContiguous,
  kChannelsLast,
  kStrided,
  kExpanded,
  kSliceTransposed,
  kSmall,
  kLarge,
  kLargeChannelsLast
};
enum class Input { kLeaf, kNonLeaf, kNoGrad };

struct Case {
  Geometry geometry = Geometry::kContiguous;
  Input input = Input::kNonLeaf;
  at::ScalarType dtype = at::kFloat;
  bool nan = false;
  bool sum_backward = false;  // backward from y.sum(): an expanded incoming gradient
  std::string str() const {
    std::ostringstream s;
    s << "geometry " << int(geometry) << " input " << int(input) << " " << dtype << (nan ? " nan" : "")
      << (sum_backward ? " sum" : "");
    return s.str();
  }
};

// The input values with the special values in place, in the case's geometry, on the test device.
at::Tensor make_input(const Case& c, const OpCase& op) {
  at::manual_seed(42);
  auto o = at::TensorOptions().dtype(c.dtype);
  const bool large = c.geometry == Geometry::kLarge || c.geometry == Geometry::kLargeChannelsLast;
  const std::vector<int64_t> sizes = c.geometry == Geometry::kSmall ? std::vector<int64_t>{13}
                                     : large                        ? std::vector<int64_t>{3, 5, 97, 101}
                                     : c.geometry == Geometry::kSliceTransposed ? std::vector<int64_t>{2, 7, 6, 3}
                                                                                : std::vector<int64_t>{2, 3, 6, 7};
  at::Tensor dense = at::randn(sizes, o);
  at::Tensor flat = dense.view(-1);
  put_specials(flat, op.bounds, c.nan);
  dense = to_test_device(dense);
  switch (c.geometry) {
    case Geometry::kChannelsLast:
    case Geometry::kLargeChannelsLast: return with_layout(dense, Layout::kChannelsLast);
    case Geometry::kStrided: return with_layout(dense, Layout::kStrided);
    case Geometry::kExpanded: return with_layout(dense, Layout::kExpanded);
    case Geometry::kSliceTransposed:
      return at::empty({2, 6, 6, 7}, dense.options()).slice(1, 0, 6, 2).transpose(1, 3).copy_(dense);
    default: return dense;
  }
}

// The operator on the argument (a leaf, or a clone of it: in-place ops need a non-leaf, and a
// clone keeps the values and a dense layout); the version of what it ran on goes to `versions`.
Forward forward(const OpCase& op, Input input, std::vector<int64_t>* versions = nullptr) {
  return [=, &op](std::vector<at::Tensor>& a) {
    at::Tensor h = input == Input::kLeaf && !op.inplace ? a[0] : a[0].clone();
    at::Tensor y = op.fn(h);
    if (versions) versions->push_back(h._version());
    return std::vector<at::Tensor>{y};
  };
}

// A random incoming gradient with NaN, -0.0 and infinities (also around the first piece
// boundary of a chunked backward), in the output's channels_last strides for
// kLargeChannelsLast (the chunked path too); or what y.sum() sends.
GradOut grad_out(const Case& c) {
  if (c.sum_backward) return memsave_test::sum_grad;
  return [c](const at::Tensor& y) {
    at::manual_seed(7);
    at::Tensor go = at::randn(y.sizes(), y.options().device(at::kCPU));
    at::Tensor flat = go.view(-1);
    flat[1] = kNaN, flat[2] = -0.0, flat[3] = kInf, flat[flat.numel() - 2] = kNaN;
    if (flat.numel() > 65537) flat[65535] = kNaN, flat[65536] = -0.0, flat[65537] = -kInf;
    go = to_test_device(go);
    return c.geometry == Geometry::kLargeChannelsLast ? go.contiguous(at::MemoryFormat::ChannelsLast) : go;
  };
}

// Compares one (operator, case); returns 1 when our node was used, 2 for an expected
// fallback, -1 where stock lacks a kernel, 0 where no gradient is needed.
int check(const OpCase& op, const Case& c, std::vector<std::string>* fallbacks) {
  const std::string where = op.name + " " + c.str();
  std::vector<int64_t> versions;
  at::Tensor x;
  // The special values need nextafter in the dtype, which 1.13 lacks for half on the CPU:
  // then neither runs, as where stock lacks the operator's kernel.
  const std::string no_input = error_of([&] { x = make_input(c, op); });
  if (!no_input.empty()) return c.input == Input::kNoGrad ? 0 : -1;
  auto before = stats();
  auto r = compare_with_stock(forward(op, c.input, &versions), {x}, c.input == Input::kNoGrad ? 0 : 1,
                                            where, grad_out(c));
  auto after = stats();
  if (versions.size() == 2) {
    EXPECT_EQ(versions[0], versions[1]) << where << " version";
  }
  const bool substituted = r.ours.grad_fn == op.node;
  if (!substituted) {
    EXPECT_EQ(r.ours.grad_fn, r.stock.grad_fn) << where;
    // Masks for bounds not exact in bfloat16 come from stock's backward kernel; where that
    // kernel does not exist (hardtanh, bfloat16, 1.13) the call goes to stock.
    const bool no_kernel = r.stock.error.find("not implemented for") != std::string::npos;
    // An input whose elements overlap (expanded) cannot be written back from its mask: all
    // but out-of-place relu (which keeps its output's mask) go to stock, counted.
    const bool overlapping = c.geometry == Geometry::kExpanded && c.input == Input::kLeaf && op.name != "relu";
    if (overlapping && !no_kernel) {
      EXPECT_EQ(after.fallbacks[F], before.fallbacks[F] + 1) << where;
      return 2;
    }
    if (c.input != Input::kNoGrad && !no_kernel) fallbacks->push_back(where);
    if (no_kernel) return c.input == Input::kNoGrad ? 0 : -1;
  }
  if (substituted) {
    EXPECT_EQ(after.substituted[F], before.substituted[F] + 1) << where;
  }
  return substituted ? 1 : 0;
}

// The cases our node must take: every requires_grad pattern but in-place on a leaf, every
// layout the op sees as is (in-place ops see a dense clone) but an expanded one, no NaN for
// hardtanh on CPU.
TEST(Relu, EqualityGrid) {
  int ours = 0, ran = 0, no_kernel = 0, overlapping = 0;
  std::vector<std::string> fallbacks;
  for (const OpCase& op : op_cases())
    for (at::ScalarType dtype : {at::kFloat, at::kDouble, at::kBFloat16, at::kHalf})
      for (Geometry geometry : {Geometry::kContiguous, Geometry::kChannelsLast, Geometry::kStrided, Geometry::kExpanded,
                                Geometry::kSliceTransposed, Geometry::kSmall, Geometry::kLarge,
                                Geometry::kLargeChannelsLast})
        for (Input input : {Input::kLeaf, Input::kNonLeaf, Input::kNoGrad})
          for (bool sum_backward : {false, true}) {
            Case c;
            c.dtype = dtype, c.geometry = geometry, c.input = input, c.sum_backward = sum_backward;
            c.nan = !op.hardtanh;
            const int r = check(op, c, &fallbacks);
            ours += r == 1;
            no_kernel += r == -1;
            overlapping += r == 2;
            ran++;
          }
  for (const auto& f : fallbacks) ADD_FAILURE() << "unexpected fallback: " << f;
  std::printf("equality grid: %d cases, %d through our nodes, %d where a stock kernel is missing (same error), "
              "%d expanded inputs to stock\n", ran, ours, no_kernel, overlapping);
  // A third of the cases have no gradient. Where stock's kernels are missing (half on the
  // CPU in 1.13, bfloat16 hardtanh backward in 1.13) our node fails with stock's message,
  // or the call goes to stock when the mask would need the missing kernel.
  EXPECT_EQ(ours + no_kernel + overlapping, ran * 2 / 3) << "every case with a gradient goes through our node";
  EXPECT_GT(ours, ran * 2 / 5);
}

TEST(Relu, HardtanhNaNOnCpuFallsBackAndIsCounted) {
  MEMSAVE_CPU_ONLY("Note [NaN in hardtanh on CPU]");
  for (const OpCase& op : op_cases()) {
    if (!op.hardtanh) continue;
    Case c;
    c.nan = true;
    auto before = stats();
    std::vector<std::string> fallbacks;
    check(op, c, &fallbacks);
    auto after = stats();
    EXPECT_EQ(fallbacks.size(), 1u) << op.name;
    EXPECT_EQ(after.fallbacks[F], before.fallbacks[F] + 1) << op.name;
  }
}

TEST(Relu, Relu6ReachesHardtanh) {
  at::Tensor x = to_test_device(at::randn({5})).requires_grad_(true);
  at::Tensor h = x.clone();
  with_memsave(true, [&] {
    EXPECT_EQ(grad_fn_name(at::relu6(x)), "MemsaveHardtanhBackward");
    EXPECT_EQ(grad_fn_name(at::relu6_(h)), "MemsaveHardtanhBackward");
    return 0;
  });
  EXPECT_EQ(with_memsave(false, [&] { return grad_fn_name(at::relu6(x)); }), "HardtanhBackward0");
}

// Double backward over every operator case (the harness's (y * y * w).sum(), then the
// gradient of the first gradient's square). Stock's threshold_backward & co. also send a zero
// gradient to their saved tensor; the proxy carries that tensor's edge so the second-order
// graph has the same shape.
TEST(Relu, DoubleBackwardEveryOperatorCase) {
  int compared = 0;
  for (const OpCase& op : op_cases())
    for (at::ScalarType dtype : {at::kFloat, at::kDouble})
      for (Geometry geometry : {Geometry::kContiguous, Geometry::kChannelsLast}) {
        Case c;
        c.dtype = dtype, c.geometry = geometry, c.nan = !op.hardtanh;
        compared += compare_double_backward(forward(op, Input::kLeaf), {make_input(c, op)}, 1,
                                                          op.name + " " + c.str());
      }
  EXPECT_GE(compared, 100);
}

// A -0.0 first-order gradient turns into +0.0 only if the zero gradient of the saved
// tensor reaches the same accumulation: this catches a proxy without the edge.
TEST(Relu, DoubleBackwardKeepsStockZeroSigns) {
  auto once = [](bool inplace) {
    auto t = [](std::initializer_list<double> v) { return to_test_device(at::tensor(v)); };
    at::Tensor x = t({-1.0, 2.0, -3.0, 4.0}).requires_grad_(true);
    at::Tensor h = inplace ? x.clone() : x;
    at::Tensor y = inplace ? at::hardtanh_(h, -10, 10) : at::hardtanh(h, -10, 10);
    at::Tensor g = torch::autograd::grad({(y * t({-0.0, -0.0, 0.0, 1.0})).sum()}, {x}, {}, true, true)[0];
    at::Tensor gg = torch::autograd::grad({(g * t({-0.0, 1.0, -0.0, 1.0})).sum()}, {x}, {}, false, false, true)[0];
    return std::make_pair(g.detach(), gg);
  };
  for (bool inplace : {false, true}) {
    auto stock = with_memsave(false, [&] { return once(inplace); });
    auto ours = with_memsave(true, [&] { return once(inplace); });
    EXPECT_TRUE(bitwise_equal(stock.first, ours.first));
    EXPECT_TRUE(bitwise_equal(stock.second, ours.second)) << "inplace " << inplace;
  }
}

// Changing what stock keeps (the output of relu, relu_, leaky_relu_; the input of the
// others) raises stock's error; hardtanh_ and threshold_ keep a private clone in stock, so
// changing their output afterwards is fine in both.
TEST(Relu, VersionChecksAsStock) {
  for (const OpCase& op : op_cases()) {
    auto attempt = [&](bool on) {
      return with_memsave(on, [&] {
        at::Tensor x = to_test_device(at::randn({3, 4})).requires_grad_(true);
        at::Tensor h = x.clone();
        at::Tensor y = op.fn(h);
        at::Tensor s = y.sum();
        const bool kept_output = op.name.rfind("relu", 0) == 0 && op.name.rfind("relu6", 0) != 0;
        const bool kept_leaky_output = op.name.rfind("leaky_relu_", 0) == 0;
        if (kept_output || kept_leaky_output || op.inplace) y.add_(1);
        else h.add_(1);
        return error_of([&] { s.backward(); });
      });
    };
    const std::string stock = attempt(false), ours = attempt(true);
    EXPECT_EQ(stock.find("modified by an inplace operation") == std::string::npos,
              ours.find("modified by an inplace operation") == std::string::npos)
        << op.name << "\nstock: " << stock << "\nours: " << ours;
    auto tail = [](const std::string& e) { return e.find("is at version") == std::string::npos ? e : e.substr(e.find("is at version")); };
    EXPECT_EQ(tail(stock), tail(ours)) << op.name;
  }
}

// A node that is only a name, to ask compat.h how this release names a node in its errors.
struct MemsaveNameProbe : torch::autograd::Node {
  explicit MemsaveNameProbe(std::string n) : name_(std::move(n)) {}
  std::string name() const override { return name_; }
  torch::autograd::variable_list apply(torch::autograd::variable_list&&) override { return {}; }
  std::string name_;
};

TEST(Relu, VersionErrorNamesOutputLikeStock) {
  MEMSAVE_CPU_ONLY("the message names the CPU tensor type");
  auto attempt = [](bool on) {
    return with_memsave(on, [] {
      at::Tensor x = to_test_device(at::randn({3, 4})).requires_grad_(true);
      at::Tensor y = at::relu(x);
      at::Tensor s = y.sum();
      y.mul_(2);
      return error_of([&] { s.backward(); });
    });
  };
  const std::string stock = attempt(false), ours = attempt(true);
  // Stock names its node as this release does (compat.h: "ReluBackward0" before 2.14, "Relu"
  // from 2.14 on); ours the same way.
  const bool strips = memsave::version_error_name(MemsaveNameProbe("ReluBackward0"), 0) == "Relu";
  const std::string stock_name = strips ? "Relu" : "ReluBackward0", our_name = strips ? "MemsaveRelu" : "MemsaveReluBackward";
  EXPECT_NE(stock.find("[CPUFloatType [3, 4]], which is output 0 of " + stock_name +
                       ", is at version 1; expected version 0 instead. Hint:"),
            std::string::npos) << stock;
  EXPECT_NE(ours.find("[CPUFloatType [3, 4]], which is output 0 of " + our_name +
                      ", is at version 1; expected version 0 instead. Hint:"),
            std::string::npos) << ours;
}

TEST(Relu, InPlaceOnLeafFallsBackWithStockError) {
  for (const OpCase& op : op_cases()) {
    if (!op.inplace) continue;
    auto attempt = [&](bool on) {
      return with_memsave(on, [&] {
        at::Tensor x = to_test_device(at::randn({3, 4})).requires_grad_(true);
        return error_of([&] { op.fn(x); });
      });
    };
    auto before = stats();
    const std::string stock = attempt(false), ours = attempt(true);
    auto after = stats();
    EXPECT_NE(stock.find("a leaf Variable that requires grad is being used in an in-place operation"), std::string::npos);
    EXPECT_EQ(stock, ours) << op.name;
    EXPECT_EQ(after.fallbacks[F], before.fallbacks[F] + 1) << op.name;
  }
}

TEST(Relu, InPlaceOnViewFallsBackAsStock) {
  for (const OpCase& op : op_cases()) {
    if (!op.inplace || op.name == "leaky_relu_ -0.500000") continue;  // stock refuses that backward
    auto once = [&] {
      at::Tensor x = make_input(Case{}, op).requires_grad_(true);
      at::Tensor base = x * 1;
      at::Tensor v = base.select(1, 1);
      op.fn(v);
      at::Tensor w = at::linspace(-1, 1, base.numel(), base.options()).view(base.sizes());
      (base * w).sum().backward();
      return std::make_tuple(base.detach(), x.grad(), grad_fn_name(base), v._version());
    };
    auto before = stats();
    auto stock = with_memsave(false, once);
    auto ours = with_memsave(true, once);
    auto after = stats();
    EXPECT_TRUE(bitwise_equal(std::get<0>(stock), std::get<0>(ours))) << op.name;
    EXPECT_TRUE(bitwise_equal(std::get<1>(stock), std::get<1>(ours))) << op.name;
    EXPECT_EQ(std::get<2>(ours), "torch::autograd::CopySlices") << op.name;
    EXPECT_EQ(std::get<3>(stock), std::get<3>(ours)) << op.name;
    EXPECT_EQ(after.fallbacks[F], before.fallbacks[F] + 1) << op.name;
  }
}

TEST(Relu, InPlaceBumpsVersionOnceAndRebasesHistory) {
  for (const OpCase& op : op_cases()) {
    if (!op.inplace) continue;
    at::Tensor x = to_test_device(at::randn({3, 4})).requires_grad_(true);
    at::Tensor h = x.clone();
    const int64_t v0 = h._version();
    at::Tensor y = with_memsave(true, [&] { return op.fn(h); });
    EXPECT_EQ(h._version(), v0 + 1) << op.name;
    EXPECT_TRUE(y.is_same(h)) << op.name;
    EXPECT_EQ(grad_fn_name(h), op.node) << op.name;
    EXPECT_EQ(h.grad_fn()->next_edges().size(), 1u);
    EXPECT_EQ(h.grad_fn()->next_edges()[0].function->name(), "CloneBackward0") << "edge from self's old history";
  }
}

TEST(Relu, InPlaceNegativeSlopeBackwardRaisesStockError) {
  auto attempt = [](bool on) {
    return with_memsave(on, [] {
      at::Tensor x = to_test_device(at::randn({6})).requires_grad_(true);
      at::Tensor h = x.clone();
      at::Tensor y = at::leaky_relu_(h, -0.1);
      return grad_fn_name(y) + ": " + error_of([&] { y.sum().backward(); });
    });
  };
  const std::string stock = attempt(false), ours = attempt(true);
  EXPECT_NE(stock.find("In-place leakyReLu backward calculation is triggered with a negative slope"), std::string::npos);
  EXPECT_EQ(ours, "MemsaveLeakyReluBackward" + stock.substr(stock.find(':'))) << ours;
}

// Memory: N float32 elements through relu keep N/8 bytes instead of 4N.
TEST(Relu, KeepsOneBitPerElement) {
  MEMSAVE_CPU_ONLY("CPU tensor bytes");
  constexpr int64_t N = (1 << 20) + 3;  // not a multiple of 8
  at::Tensor x = at::randn({N}).requires_grad_(true);
  auto kept = [&](bool on, const std::function<at::Tensor(const at::Tensor&)>& op) {
    return with_memsave(on, [&] {
      const auto before = stats();
      at::Tensor s = op(x * 2).sum();  // the product is freed; only what the graph keeps stays
      const auto after = stats();
      return std::make_tuple(after.cpu_current_bytes - before.cpu_current_bytes, after.bytes_kept - before.bytes_kept,
                             after.bytes_stock - before.bytes_stock);
    });
  };
  const int64_t bits = (N + 7) / 8;
  for (auto [name, op] : std::vector<std::pair<std::string, std::function<at::Tensor(const at::Tensor&)>>>{
           {"relu", [](const at::Tensor& h) { return at::relu(h); }},
           {"relu_", [](const at::Tensor& h) { return at::relu_(const_cast<at::Tensor&>(h)); }},
           {"hardtanh_", [](const at::Tensor& h) { return at::hardtanh_(const_cast<at::Tensor&>(h), 0, 6); }},
           {"leaky_relu", [](const at::Tensor& h) { return at::leaky_relu(h, 0.1); }}}) {
    auto [stock_alive, stock_kept, stock_counted] = kept(false, op);
    auto [ours_alive, ours_kept, ours_counted] = kept(true, op);
    EXPECT_EQ(stock_kept, 0u);
    EXPECT_EQ(ours_kept, static_cast<uint64_t>(bits)) << name;
    EXPECT_EQ(ours_counted, static_cast<uint64_t>(4 * N)) << name;
    // The same graph otherwise: the difference in live bytes is exactly 4N - N/8.
    EXPECT_EQ(stock_alive - ours_alive, 4 * N - bits) << name << " stock " << stock_alive << " ours " << ours_alive;
    std::printf("%-10s live tensor bytes after forward: stock %lld, libmemsave %lld\n", name.c_str(),
                (long long)stock_alive, (long long)ours_alive);
  }
}

// Peak tensor bytes of a chain of relus whose inputs are freed as it goes: each layer adds
// the output it keeps to stock's peak (4N bytes) and its mask to ours (N/8).
int64_t chain_peak(bool on, int depth) {
  constexpr int64_t N = 1 << 18;
  at::manual_seed(0);
  at::Tensor x = at::randn({N}).requires_grad_(true);
  return with_memsave(on, [&] {
    const int64_t base = step_start();
    at::Tensor h = x * 2;
    for (int i = 0; i < depth; i++) h = at::relu(h) * 2;  // a product by a scalar keeps nothing
    h.sum().backward();
    return peak_since(base);
  });
}

TEST(Relu, PeakGrowsByTheMaskPerLayer) {
  MEMSAVE_CPU_ONLY("CPU tensor bytes");
  constexpr int64_t N = 1 << 18;
  const int64_t stock4 = chain_peak(false, 4), stock12 = chain_peak(false, 12);
  const int64_t ours4 = chain_peak(true, 4), ours12 = chain_peak(true, 12);
  std::printf("peak of 4 / 12 relus on %lld floats: stock %lld / %lld, libmemsave %lld / %lld\n", (long long)N,
              (long long)stock4, (long long)stock12, (long long)ours4, (long long)ours12);
  EXPECT_EQ(stock12 - stock4, 8 * 4 * N);
  EXPECT_EQ(ours12 - ours4, 8 * N / 8);
  EXPECT_LT(ours4, stock4);
}

// All trainable: the next convolution keeps the relu output anyway, so our mask is extra:
// exactly one bit per element (1/32 of float32) stays after the forward. In backward each
// node also allocates its proxy (one activation, freed at once); the peak is printed.
std::pair<int64_t, int64_t> all_trainable(bool on, int64_t* mask_bytes) {
  at::manual_seed(0);
  std::vector<at::Tensor> weights;
  for (int i = 0; i < 6; i++) weights.push_back((at::randn({16, 16, 3, 3}) * 0.1).requires_grad_(true));
  at::Tensor x = at::randn({4, 16, 32, 32});
  return with_memsave(on, [&] {
    const int64_t base = step_start();
    at::Tensor h = x;
    *mask_bytes = 0;
    for (const auto& w : weights) {
      h = at::conv2d(h, w, {}, 1, 1);
      at::relu_(h);
      *mask_bytes += (h.numel() + 7) / 8;
    }
    at::Tensor s = h.sum();
    const int64_t live = stats().cpu_current_bytes - base;
    s.backward();
    return std::make_pair(live, peak_since(base));
  });
}

TEST(Relu, AllTrainableOverheadIsOneBitPerElement) {
  MEMSAVE_CPU_ONLY("CPU tensor bytes");
  int64_t masks = 0;
  const auto stock = all_trainable(false, &masks);
  const auto ours = all_trainable(true, &masks);
  std::printf("all trainable, 6 x (conv, relu_): live after forward stock %lld, libmemsave %lld (+%lld = masks); "
              "peak stock %lld, libmemsave %lld (%+.2f%%)\n",
              (long long)stock.first, (long long)ours.first, (long long)(ours.first - stock.first), (long long)stock.second,
              (long long)ours.second, 100.0 * (ours.second - stock.second) / stock.second);
  EXPECT_EQ(ours.first - stock.first, masks);
  EXPECT_EQ(masks * 32, 6 * 4 * 16 * 32 * 32 * 4) << "1/32 of the float32 activations";
}

// Note [Backward in chunks] (hooks/ops/relu.cpp): with a dense incoming gradient of the output's
// strides, backward allocates the result and one piece of proxy (65536 elements), not a
// proxy of the activation's size. `extra`: the backward's peak above what is live before it.
int64_t relu_backward_extra(bool on, at::ScalarType dtype, bool channels_last, bool inplace) {
  at::manual_seed(0);
  at::Tensor x = at::randn({4, 16, 64, 64}, at::TensorOptions().dtype(dtype)).requires_grad_(true);
  if (channels_last) x = x.detach().contiguous(at::MemoryFormat::ChannelsLast).requires_grad_(true);
  return with_memsave(on, [&] {
    at::Tensor h = x.clone();  // a non-leaf, so that relu_ may run in place; its backward allocates nothing
    at::Tensor y = inplace ? at::relu_(h) : at::relu(h);
    at::Tensor go = at::randn_like(y);
    const int64_t base = step_start();
    at::Tensor gx = torch::autograd::grad({y}, {x}, {go})[0];
    return peak_since(base);
  });
}

TEST(Relu, ChunkedBackwardNeedsNoFullProxy) {
  MEMSAVE_CPU_ONLY("Note [Backward in chunks] is the CPU path");
  for (bool channels_last : {false, true})
    for (bool inplace : {false, true}) {
      const int64_t act = 4 * 16 * 64 * 64 * 4;
      const int64_t stock = relu_backward_extra(false, at::kFloat, channels_last, inplace);
      const int64_t ours = relu_backward_extra(true, at::kFloat, channels_last, inplace);
      std::printf("relu backward peak above live (activation %lld): stock %lld, libmemsave %lld\n", (long long)act,
                  (long long)stock, (long long)ours);
      // Stock allocates the result; we allocate it and one piece of proxy (65536 floats).
      EXPECT_GE(stock, act);
      EXPECT_LE(ours, stock + 65536 * 4) << "channels_last " << channels_last << " inplace " << inplace;
    }
}

}  // namespace
