// SPDX-License-Identifier: MIT
// test_relu: relu, threshold, leaky_relu, hardtanh and relu6, out-of-place and in-place,
// with libmemsave against stock, bit for bit: outputs, gradients (double backward too),
// strides, version counters, errors; and the memory they keep (one bit per element).
#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/function.h>

#include <limits>
#include <sstream>

#include "testing.h"

namespace {

using memsave_test::bitwise_equal;
using memsave_test::grad_fn_name;
using memsave_test::with_memsave;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr auto F = MEMSAVE_FAMILY_RELU;

// The message of what `fn` throws, without the C++ backtrace (whose frames differ between
// stock and libmemsave), or "".
std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

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

// kLarge*: more elements than one piece of Note [Backward in chunks] in hooks/relu.cpp
// (65536), not a multiple of it nor of 8, so that backward crosses piece boundaries.
enum class Layout { kContiguous, kChannelsLast, kSlice, kTransposed, kSmall, kLarge, kLargeChannelsLast };
enum class Input { kLeaf, kNonLeaf, kNoGrad };

struct Case {
  Layout layout = Layout::kContiguous;
  Input input = Input::kNonLeaf;
  at::ScalarType dtype = at::kFloat;
  bool nan = false;
  bool sum_backward = false;  // backward from y.sum(): an expanded incoming gradient
  std::string str() const {
    std::ostringstream s;
    s << "layout " << int(layout) << " input " << int(input) << " " << dtype << (nan ? " nan" : "")
      << (sum_backward ? " sum" : "");
    return s.str();
  }
};

// The input values, freshly made for every run (so in-place ops do not leak between runs).
at::Tensor make_input(const Case& c, const OpCase& op) {
  at::manual_seed(42);
  auto o = at::TensorOptions().dtype(c.dtype);
  at::Tensor x;
  switch (c.layout) {
    case Layout::kContiguous: x = at::randn({2, 3, 6, 7}, o); break;
    case Layout::kChannelsLast: x = at::randn({2, 3, 6, 7}, o).contiguous(at::MemoryFormat::ChannelsLast); break;
    case Layout::kSlice: x = at::randn({2, 3, 6, 14}, o).slice(3, 0, 14, 2); break;
    case Layout::kTransposed: x = at::randn({2, 6, 6, 7}, o).slice(1, 0, 6, 2).transpose(1, 3); break;
    case Layout::kSmall: x = at::randn({13}, o); break;
    case Layout::kLarge: x = at::randn({3, 5, 97, 101}, o); break;
    case Layout::kLargeChannelsLast: x = at::randn({3, 5, 97, 101}, o).contiguous(at::MemoryFormat::ChannelsLast); break;
  }
  at::NoGradGuard no_grad;
  at::Tensor flat = at::empty({x.numel()}, o);
  flat.copy_(x.reshape(-1));
  put_specials(flat, op.bounds, c.nan);
  x.copy_(flat.view(x.sizes()));
  return x;
}

struct Run {
  at::Tensor y, gx;
  std::string grad_fn, error;
  int64_t version = -1;
};

Run run(const OpCase& op, const Case& c) {
  Run r;
  r.error = error_of([&] {
    at::Tensor x = make_input(c, op);
    if (c.input != Input::kNoGrad) x.requires_grad_(true);
    // In-place ops need a non-leaf; the clone keeps the values (and a dense layout).
    at::Tensor h = c.input == Input::kLeaf && !op.inplace ? x : x.clone();
    r.y = op.fn(h);
    r.grad_fn = grad_fn_name(r.y);
    r.version = h._version();
    if (!r.y.requires_grad()) return;
    at::manual_seed(7);
    if (c.sum_backward) {
      r.y.sum().backward();
    } else {
      at::Tensor go = at::randn(r.y.sizes(), r.y.options());
      at::Tensor flat = go.view(-1);
      flat[1] = kNaN, flat[2] = -0.0, flat[3] = kInf, flat[flat.numel() - 2] = kNaN;
      if (flat.numel() > 65537) flat[65535] = kNaN, flat[65536] = -0.0, flat[65537] = -kInf;
      // A gradient with the output's channels_last strides takes the chunked path too.
      if (c.layout == Layout::kLargeChannelsLast) go = go.contiguous(at::MemoryFormat::ChannelsLast);
      torch::autograd::backward({r.y}, {go});
    }
    r.gx = x.grad();
  });
  return r;
}

// Compares one (operator, case); returns 1 when our node was used.
int check(const OpCase& op, const Case& c, std::vector<std::string>* fallbacks) {
  auto before = memsave_test::stats();
  Run stock = with_memsave(false, [&] { return run(op, c); });
  Run ours = with_memsave(true, [&] { return run(op, c); });
  auto after = memsave_test::stats();
  const std::string where = op.name + " " + c.str();
  EXPECT_EQ(stock.error, ours.error) << where;
  EXPECT_TRUE(bitwise_equal(stock.y, ours.y)) << where << " output";
  EXPECT_TRUE(bitwise_equal(stock.gx, ours.gx)) << where << " grad";
  EXPECT_EQ(stock.version, ours.version) << where << " version";
  const bool substituted = ours.grad_fn == op.node;
  if (!substituted) {
    EXPECT_EQ(ours.grad_fn, stock.grad_fn) << where;
    // Masks for bounds not exact in bfloat16 come from stock's backward kernel; where that
    // kernel does not exist (hardtanh, bfloat16, 1.13) the call goes to stock.
    const bool no_kernel = stock.error.find("not implemented for") != std::string::npos;
    if (c.input != Input::kNoGrad && !no_kernel) fallbacks->push_back(where);
    if (no_kernel) return c.input == Input::kNoGrad ? 0 : -1;
  }
  if (substituted) EXPECT_EQ(after.substituted[F], before.substituted[F] + 1) << where;
  return substituted ? 1 : 0;
}

// The cases our node must take: every requires_grad pattern but in-place on a leaf, every
// layout the op sees as is (in-place ops see a dense clone), no NaN for hardtanh on CPU.
TEST(Relu, EqualityGrid) {
  int ours = 0, ran = 0, no_kernel = 0;
  std::vector<std::string> fallbacks;
  for (const OpCase& op : op_cases())
    for (at::ScalarType dtype : {at::kFloat, at::kDouble, at::kBFloat16, at::kHalf})
      for (Layout layout : {Layout::kContiguous, Layout::kChannelsLast, Layout::kSlice, Layout::kTransposed, Layout::kSmall,
                            Layout::kLarge, Layout::kLargeChannelsLast})
        for (Input input : {Input::kLeaf, Input::kNonLeaf, Input::kNoGrad})
          for (bool sum_backward : {false, true}) {
            Case c;
            c.dtype = dtype, c.layout = layout, c.input = input, c.sum_backward = sum_backward;
            c.nan = !op.hardtanh;
            const int r = check(op, c, &fallbacks);
            ours += r == 1;
            no_kernel += r == -1;
            ran++;
          }
  for (const auto& f : fallbacks) ADD_FAILURE() << "unexpected fallback: " << f;
  std::printf("equality grid: %d cases, %d through our nodes, %d where a stock kernel is missing (same error)\n", ran, ours,
              no_kernel);
  // A third of the cases have no gradient. Where stock's kernels are missing (half on the
  // CPU in 1.13, bfloat16 hardtanh backward in 1.13) our node fails with stock's message,
  // or the call goes to stock when the mask would need the missing kernel.
  EXPECT_EQ(ours + no_kernel, ran * 2 / 3) << "every case with a gradient goes through our node";
  EXPECT_GT(ours, ran * 2 / 5);
}

TEST(Relu, HardtanhNaNOnCpuFallsBackAndIsCounted) {
  for (const OpCase& op : op_cases()) {
    if (!op.hardtanh) continue;
    Case c;
    c.nan = true;
    auto before = memsave_test::stats();
    std::vector<std::string> fallbacks;
    check(op, c, &fallbacks);
    auto after = memsave_test::stats();
    EXPECT_EQ(fallbacks.size(), 1u) << op.name;
    EXPECT_EQ(after.fallbacks[F], before.fallbacks[F] + 1) << op.name;
  }
}

TEST(Relu, Relu6ReachesHardtanh) {
  at::Tensor x = at::randn({5}).requires_grad_(true);
  at::Tensor h = x.clone();
  with_memsave(true, [&] {
    EXPECT_EQ(grad_fn_name(at::relu6(x)), "MemsaveHardtanhBackward");
    EXPECT_EQ(grad_fn_name(at::relu6_(h)), "MemsaveHardtanhBackward");
    return 0;
  });
  EXPECT_EQ(with_memsave(false, [&] { return grad_fn_name(at::relu6(x)); }), "HardtanhBackward0");
}

// Double backward: the first gradient with create_graph, then the gradient of its square.
// Stock's threshold_backward & co. also send a zero gradient to their saved tensor; the
// proxy carries that tensor's edge so the second-order graph has the same shape.
std::pair<at::Tensor, at::Tensor> double_backward(const OpCase& op, const Case& c) {
  at::Tensor x = make_input(c, op).requires_grad_(true);
  at::Tensor h = op.inplace ? x.clone() : x;
  at::Tensor y = op.fn(h);
  at::Tensor w = at::linspace(-2, 2, y.numel(), y.options()).view(y.sizes());
  at::Tensor g = torch::autograd::grad({(y * y * w).sum()}, {x}, {}, /*retain_graph=*/true, /*create_graph=*/true)[0];
  (g * g).sum().backward();
  return {g.detach(), x.grad()};
}

TEST(Relu, DoubleBackward) {
  int compared = 0;
  for (const OpCase& op : op_cases())
    for (at::ScalarType dtype : {at::kFloat, at::kDouble})
      for (Layout layout : {Layout::kContiguous, Layout::kChannelsLast}) {
        Case c;
        c.dtype = dtype, c.layout = layout, c.nan = !op.hardtanh;
        std::string stock_err, ours_err;
        std::pair<at::Tensor, at::Tensor> stock, ours;
        stock_err = error_of([&] { stock = with_memsave(false, [&] { return double_backward(op, c); }); });
        ours_err = error_of([&] { ours = with_memsave(true, [&] { return double_backward(op, c); }); });
        EXPECT_EQ(stock_err, ours_err) << op.name;
        EXPECT_TRUE(bitwise_equal(stock.first, ours.first)) << op.name << " " << c.str() << " first";
        EXPECT_TRUE(bitwise_equal(stock.second, ours.second)) << op.name << " " << c.str() << " second";
        if (stock_err.empty()) compared++;
      }
  EXPECT_GE(compared, 100);
}

// A -0.0 first-order gradient turns into +0.0 only if the zero gradient of the saved
// tensor reaches the same accumulation: this catches a proxy without the edge.
TEST(Relu, DoubleBackwardKeepsStockZeroSigns) {
  auto once = [](bool inplace) {
    at::Tensor x = at::tensor({-1.0, 2.0, -3.0, 4.0}).requires_grad_(true);
    at::Tensor h = inplace ? x.clone() : x;
    at::Tensor y = inplace ? at::hardtanh_(h, -10, 10) : at::hardtanh(h, -10, 10);
    at::Tensor g = torch::autograd::grad({(y * at::tensor({-0.0, -0.0, 0.0, 1.0})).sum()}, {x}, {}, true, true)[0];
    at::Tensor gg = torch::autograd::grad({(g * at::tensor({-0.0, 1.0, -0.0, 1.0})).sum()}, {x}, {}, false, false, true)[0];
    return std::make_pair(g.detach(), gg);
  };
  for (bool inplace : {false, true}) {
    auto stock = with_memsave(false, [&] { return once(inplace); });
    auto ours = with_memsave(true, [&] { return once(inplace); });
    EXPECT_TRUE(bitwise_equal(stock.first, ours.first));
    EXPECT_TRUE(bitwise_equal(stock.second, ours.second)) << "inplace " << inplace;
  }
}

std::string backward_twice(bool on, const OpCase& op) {
  return with_memsave(on, [&] {
    at::manual_seed(0);
    at::Tensor x = at::randn({4, 5}).requires_grad_(true);
    at::Tensor h = x.clone();
    at::Tensor s = op.fn(h).sum();
    const std::string first = error_of([&] { s.backward(); });
    return first.empty() ? error_of([&] { s.backward(); }) : "first backward: " + first;
  });
}

TEST(Relu, SecondBackwardRaisesStockError) {
  for (const OpCase& op : op_cases()) {
    const std::string stock = backward_twice(false, op), ours = backward_twice(true, op);
    if (op.name == "leaky_relu_ -0.500000") {  // in-place with a negative slope: stock refuses backward
      EXPECT_EQ(stock, ours);
      continue;
    }
    EXPECT_NE(stock.find("backward through the graph a second time"), std::string::npos) << op.name << ": " << stock;
    EXPECT_NE(ours.find("backward through the graph a second time"), std::string::npos) << op.name << ": " << ours;
  }
}

TEST(Relu, RetainGraphAllowsSecondBackward) {
  for (const OpCase& op : op_cases()) {
    auto once = [&] {
      at::manual_seed(0);
      at::Tensor x = at::randn({4, 5}).requires_grad_(true);
      at::Tensor h = x.clone();
      at::Tensor s = (op.fn(h) * at::linspace(-1, 1, 20).view({4, 5})).sum();
      s.backward({}, /*retain_graph=*/true);
      s.backward();
      return x.grad();
    };
    std::string err;
    at::Tensor stock, ours;
    err = error_of([&] { stock = with_memsave(false, once); });
    EXPECT_EQ(err, error_of([&] { ours = with_memsave(true, once); })) << op.name;
    EXPECT_TRUE(bitwise_equal(stock, ours)) << op.name;
  }
}

// Changing what stock keeps (the output of relu, relu_, leaky_relu_; the input of the
// others) raises stock's error; hardtanh_ and threshold_ keep a private clone in stock, so
// changing their output afterwards is fine in both.
TEST(Relu, VersionChecksAsStock) {
  for (const OpCase& op : op_cases()) {
    auto attempt = [&](bool on) {
      return with_memsave(on, [&] {
        at::Tensor x = at::randn({3, 4}).requires_grad_(true);
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

TEST(Relu, VersionErrorNamesOutputLikeStock) {
  auto attempt = [](bool on) {
    return with_memsave(on, [] {
      at::Tensor x = at::randn({3, 4}).requires_grad_(true);
      at::Tensor y = at::relu(x);
      at::Tensor s = y.sum();
      y.mul_(2);
      return error_of([&] { s.backward(); });
    });
  };
  const std::string stock = attempt(false), ours = attempt(true);
  EXPECT_NE(stock.find("[CPUFloatType [3, 4]], which is output 0 of ReluBackward0, is at version 1; expected version 0 instead. Hint:"),
            std::string::npos) << stock;
  EXPECT_NE(ours.find("[CPUFloatType [3, 4]], which is output 0 of MemsaveReluBackward, is at version 1; expected version 0 instead. Hint:"),
            std::string::npos) << ours;
}

TEST(Relu, InPlaceOnLeafFallsBackWithStockError) {
  for (const OpCase& op : op_cases()) {
    if (!op.inplace) continue;
    auto attempt = [&](bool on) {
      return with_memsave(on, [&] {
        at::Tensor x = at::randn({3, 4}).requires_grad_(true);
        return error_of([&] { op.fn(x); });
      });
    };
    auto before = memsave_test::stats();
    const std::string stock = attempt(false), ours = attempt(true);
    auto after = memsave_test::stats();
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
      at::Tensor w = at::linspace(-1, 1, base.numel()).view(base.sizes());
      (base * w).sum().backward();
      return std::make_tuple(base.detach(), x.grad(), grad_fn_name(base), v._version());
    };
    auto before = memsave_test::stats();
    auto stock = with_memsave(false, once);
    auto ours = with_memsave(true, once);
    auto after = memsave_test::stats();
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
    at::Tensor x = at::randn({3, 4}).requires_grad_(true);
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
      at::Tensor x = at::randn({6}).requires_grad_(true);
      at::Tensor h = x.clone();
      at::Tensor y = at::leaky_relu_(h, -0.1);
      return grad_fn_name(y) + ": " + error_of([&] { y.sum().backward(); });
    });
  };
  const std::string stock = attempt(false), ours = attempt(true);
  EXPECT_NE(stock.find("In-place leakyReLu backward calculation is triggered with a negative slope"), std::string::npos);
  EXPECT_EQ(ours, "MemsaveLeakyReluBackward" + stock.substr(stock.find(':'))) << ours;
}

TEST(Relu, NoGradAndDisabledBuildNoNode) {
  at::Tensor x = at::randn({4}).requires_grad_(true);
  {
    at::NoGradGuard no_grad;
    EXPECT_EQ(grad_fn_name(at::relu(x)), "(none)");
  }
  EXPECT_EQ(with_memsave(false, [&] { return grad_fn_name(at::relu(x)); }), "ReluBackward0");
  EXPECT_EQ(with_memsave(true, [&] { return grad_fn_name(at::relu(x)); }), "MemsaveReluBackward");
}

TEST(Relu, UndefinedIncomingGradient) {
  at::Tensor x = at::randn({4}).requires_grad_(true);
  at::Tensor y = with_memsave(true, [&] { return at::relu(x); });
  auto out = (*y.grad_fn())({at::Tensor()});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_FALSE(out[0].defined());
}

// Memory: N float32 elements through relu keep N/8 bytes instead of 4N.
TEST(Relu, KeepsOneBitPerElement) {
  constexpr int64_t N = (1 << 20) + 3;  // not a multiple of 8
  at::Tensor x = at::randn({N}).requires_grad_(true);
  auto kept = [&](bool on, const std::function<at::Tensor(const at::Tensor&)>& op) {
    return with_memsave(on, [&] {
      const auto before = memsave_test::stats();
      at::Tensor s = op(x * 2).sum();  // the product is freed; only what the graph keeps stays
      const auto after = memsave_test::stats();
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
    memsave_reset_peak();
    const int64_t base = memsave_test::stats().cpu_current_bytes;
    at::Tensor h = x * 2;
    for (int i = 0; i < depth; i++) h = at::relu(h) * 2;  // a product by a scalar keeps nothing
    h.sum().backward();
    return memsave_test::stats().cpu_peak_bytes - base;
  });
}

TEST(Relu, PeakGrowsByTheMaskPerLayer) {
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
    memsave_reset_peak();
    const int64_t base = memsave_test::stats().cpu_current_bytes;
    at::Tensor h = x;
    *mask_bytes = 0;
    for (const auto& w : weights) {
      h = at::conv2d(h, w, {}, 1, 1);
      at::relu_(h);
      *mask_bytes += (h.numel() + 7) / 8;
    }
    at::Tensor s = h.sum();
    const int64_t live = memsave_test::stats().cpu_current_bytes - base;
    s.backward();
    return std::make_pair(live, memsave_test::stats().cpu_peak_bytes - base);
  });
}

TEST(Relu, AllTrainableOverheadIsOneBitPerElement) {
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

// Note [Backward in chunks] (hooks/relu.cpp): with a dense incoming gradient of the output's
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
    memsave_reset_peak();
    const int64_t base = memsave_test::stats().cpu_current_bytes;
    at::Tensor gx = torch::autograd::grad({y}, {x}, {go})[0];
    return memsave_test::stats().cpu_peak_bytes - base;
  });
}

TEST(Relu, ChunkedBackwardNeedsNoFullProxy) {
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

TEST(Relu, HooksAreActive) { EXPECT_EQ(memsave_is_active(), 1); }

}  // namespace
