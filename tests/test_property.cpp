// SPDX-License-Identifier: MIT
// test_property: random configurations against stock, one property per family (issue 15).
// Each case draws shapes, layouts (contiguous, channels_last, strided, transposed, expanded,
// zero-size), dtypes, requires_grad patterns, special values and the family's options from
// a seeded generator, runs stock and libmemsave through tests/testing.h and compares them
// bit for bit: outputs, gradients, buffers and errors (where stock rejects a drawn
// configuration, ours must raise the same error).
//
// MEMSAVE_PROPERTY_SEED (default: a fresh seed per run, printed) and MEMSAVE_PROPERTY_CASES
// (default 1000 per family). A failing case is rerun alone with the line the failure prints:
// MEMSAVE_PROPERTY_SEED=<its own seed> MEMSAVE_PROPERTY_CASES=1.
#include <ATen/ATen.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "testing.h"

namespace {

using namespace memsave_test;  // the harness: tests/testing.h
using Ints = std::vector<int64_t>;

uint64_t env_u64(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 0) : fallback;
}

uint64_t base_seed() {
  static const uint64_t seed = env_u64(
      "MEMSAVE_PROPERTY_SEED",
      (static_cast<uint64_t>(std::random_device{}()) << 32 | std::random_device{}()) ^
          static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()));
  return seed;
}

// Case k of a run with seed S draws from S + k * kSeedStep (runs with nearby seeds share no
// cases), so case 0 of a run with seed S + k * kSeedStep is that case.
constexpr uint64_t kSeedStep = 0x9E3779B97F4A7C15ull;

// One case's generator, and what it drew, for the failure message.
class Draw {
 public:
  explicit Draw(uint64_t seed) : rng_(seed) {}
  int64_t in(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng_); }
  bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }
  double real(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng_); }
  template <class T>
  T pick(std::initializer_list<T> v) {
    return v.begin()[in(0, static_cast<int64_t>(v.size()) - 1)];
  }
  Ints ints(size_t n, int64_t lo, int64_t hi) {
    Ints v;
    for (size_t i = 0; i < n; i++) v.push_back(in(lo, hi));
    return v;
  }
  std::ostringstream desc;

 private:
  std::mt19937_64 rng_;
};

std::string str(const Ints& v) {
  std::ostringstream s;
  for (size_t i = 0; i < v.size(); i++) s << (i ? "," : "[") << v[i];
  s << (v.empty() ? "[]" : "]");
  return s.str();
}

// Mostly float32; double, bfloat16 and half (which some CPU kernels reject, in stock too).
at::ScalarType draw_dtype(Draw& d) {
  const int64_t i = d.in(0, 9);
  const at::ScalarType t = i < 6 ? at::kFloat : i < 8 ? at::kDouble : i < 9 ? at::kBFloat16 : at::kHalf;
  d.desc << " " << t;
  return t;
}

// A layout that fits a tensor of `sizes` (channels_last needs 4-D or 5-D, expanded a
// nonempty first dimension).
Layout draw_layout(Draw& d, const Ints& sizes) {
  Layout l = d.pick({Layout::kContiguous, Layout::kContiguous, Layout::kChannelsLast, Layout::kStrided,
                     Layout::kTransposed, Layout::kExpanded});
  if (l == Layout::kChannelsLast && sizes.size() != 4 && sizes.size() != 5) l = Layout::kContiguous;
  if (l == Layout::kExpanded && (sizes.empty() || sizes[0] == 0)) l = Layout::kContiguous;
  return l;
}

// Data of `sizes` in a drawn layout: normal values, sometimes rounded to halves (ties,
// zeros, values on a threshold) and sometimes with NaN, infinities and -0.0.
// `dense`: contiguous only (see the batch-norm property).
at::Tensor draw_data(Draw& d, const Ints& sizes, at::ScalarType dtype, const char* name, bool specials = true,
                     bool dense = false) {
  at::Tensor t = at::randn(sizes, at::kDouble);
  if (d.chance(0.3)) t = (t * 2).round() / 2;
  if (specials && t.numel() > 0 && d.chance(0.15)) {
    const int64_t n = t.numel();
    put_values(t, {{d.in(0, n - 1), kNaN}, {d.in(0, n - 1), kInf}, {d.in(0, n - 1), -kInf}, {d.in(0, n - 1), -0.0}});
  }
  const Layout l = dense ? Layout::kContiguous : draw_layout(d, sizes);
  d.desc << " " << name << str(sizes) << ":" << layout_name(l);
  return with_layout(to_test_device(t.to(dtype)), l);
}

// A requires_grad pattern over `n` arguments, those absent in `present` left out.
unsigned draw_pattern(Draw& d, int n, unsigned present) {
  const unsigned p = static_cast<unsigned>(d.in(0, (1 << n) - 1)) & present;
  d.desc << pattern_name(p, n);
  return p;
}

// One drawn case: the forward, its arguments and pattern, the buffers to compare.
struct Case {
  Forward forward;
  std::vector<at::Tensor> args;
  unsigned pattern = 0;
  std::vector<size_t> buffers;
  bool double_backward = true;  // compared now and then
};

enum class Verdict { kRan, kRejected, kRanOnRerun, kStockVaries };

// Writes a pattern into memory the allocator has free, so that a stock kernel that reads
// memory it never wrote gives other bits on its next run (Note [Stock varies]).
void scribble_free_memory(int round) {
  std::vector<at::Tensor> held;
  for (int64_t n = 16; n <= (int64_t{1} << 18); n *= 4)
    for (int k = 0; k < 4; k++) held.push_back(at::full({n}, round % 2 ? 1e30 : -3.0, at::kFloat));
}

// Stock, then libmemsave, on one case (`run(on)`: a first-order or a double backward).
// When they differ, stock runs the case up to three more times, each after scribbling over
// free memory: a few stock kernels give history-dependent bits (Note [Stock varies]). The
// case passes when ours equals one of stock's runs (kRanOnRerun when only a rerun: counted
// and printed), is set aside (kStockVaries, counted, at most 1% of a family's cases) when
// stock's runs differ among themselves and none equals ours, and fails, every difference
// reported, when stock repeats itself and ours differs.
//
// Note [Stock varies]: with seed 19164264074859 on 1.13 (this 2-core AMD EPYC with AVX-512),
// conv case 605 (bfloat16, every argument requiring grad, so stock's own node runs: a
// passthrough) gives a weight gradient 3e-7 away from the stock run just before it, in the
// 1000-case sequence only, never alone: stock's bfloat16 convolution backward depends on what
// ran before it in the process. A fixed seed hid it; now each run draws a fresh seed.
// The cause, found for issue 23 with seed 14240707376668201455 (conv case 0, bfloat16, weight
// channels-last, only the weight requiring grad, compared under double backward, where no
// rerun was made then): stock's mkldnn (oneDNN) bfloat16 weight gradient of a channels-last
// convolution leaves the weight elements that only ever meet padding unwritten, so they hold
// whatever the allocator's memory held. No node of ours is built in that case (MEMSAVE=0
// gives the same difference), and stock alone shows it on 1.13, 2.6 and 2.14 (docs/pytorch.md
// §2.4). Double backward is judged the same way now.
Verdict judge(const std::function<Run(bool on)>& run, const std::string& where, const std::vector<size_t>& buffers) {
  const Run stock = run(false);
  const Run ours = run(true);
  const Verdict ran = stock.error.empty() ? Verdict::kRan : Verdict::kRejected;
  if (equal_runs(stock, ours, buffers)) return ran;
  bool varies = false;
  for (int again = 0; again < 3; again++) {
    scribble_free_memory(again);
    const Run other = run(false);
    if (equal_runs(other, ours, buffers)) return Verdict::kRanOnRerun;
    varies = varies || !equal_runs(other, stock, buffers);
  }
  if (varies) {
    std::printf("[ property ] %s: stock's own runs differ; set aside\n", where.c_str());
    return Verdict::kStockVaries;
  }
  expect_equal_runs(stock, ours, where, buffers);
  return ran;
}

Verdict compare_case(const Case& c, const std::string& where, const GradOut& go) {
  return judge([&](bool on) { return run_once(on, c.forward, c.args, c.pattern, go); }, where, c.buffers);
}

Verdict compare_double(const Case& c, const std::string& where) {
  return judge([&](bool on) { return double_backward_run(on, c.forward, c.args, c.pattern); }, where + " double backward",
               {});
}

// Runs `cases` cases of one family against stock and prints the figures. Stops at the
// first failing case, after printing how to rerun it alone.
void property(const char* family, int family_id, const std::function<Case(Draw&)>& draw) {
  const uint64_t seed = base_seed();
  const int64_t cases = static_cast<int64_t>(env_u64("MEMSAVE_PROPERTY_CASES", 1000));
  // Printed first, so that a crash (stock's kernels have crashed on drawn cases) still
  // tells which run to replay.
  std::printf("[ property ] %s: seed %llu (MEMSAVE_PROPERTY_SEED), %lld cases\n", family,
              static_cast<unsigned long long>(seed), static_cast<long long>(cases));
  std::fflush(stdout);
  const auto before = stats();
  const auto t0 = std::chrono::steady_clock::now();
  int64_t ran = 0, rejected = 0, on_rerun = 0, stock_varies = 0, double_backward = 0;
  for (int64_t k = 0; k < cases; k++) {
    const uint64_t case_seed = seed + static_cast<uint64_t>(k) * kSeedStep;
    Draw d(case_seed);
    at::manual_seed(case_seed);
    Case c = draw(d);
    const GradOut go = d.chance(0.2) ? GradOut(sum_grad) : random_grad(case_seed, d.chance(0.5));
    const std::string where = std::string(family) + " case " + std::to_string(k) + ":" + d.desc.str();
    const bool twice = d.chance(0.05);
    switch (compare_case(c, where, go)) {
      case Verdict::kRan: ran++; break;
      case Verdict::kRanOnRerun: ran++, on_rerun++; break;
      case Verdict::kRejected: rejected++; break;
      case Verdict::kStockVaries: stock_varies++; break;
    }
    if (twice && c.pattern && c.double_backward) switch (compare_double(c, where)) {
        case Verdict::kRan: double_backward++; break;
        case Verdict::kRanOnRerun: double_backward++, on_rerun++; break;
        case Verdict::kRejected: break;
        case Verdict::kStockVaries: stock_varies++; break;
      }
    if (::testing::Test::HasFailure()) {
      std::printf("[ property ] %s failed; rerun with MEMSAVE_PROPERTY_SEED=%llu MEMSAVE_PROPERTY_CASES=1\n", family,
                  static_cast<unsigned long long>(case_seed));
      return;
    }
  }
  const auto after = stats();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const uint64_t ours = after.substituted[family_id] - before.substituted[family_id];
  std::printf("[ property ] %s: %lld cases in %.1f s: %lld ran (%lld double backward), %lld rejected by stock and "
              "ours alike; %lld equal to a rerun of stock only, %lld set aside (stock's own runs differ); "
              "our nodes %llu, passthrough %llu, fallbacks %llu\n",
              family, static_cast<long long>(cases), s,
              static_cast<long long>(ran), static_cast<long long>(double_backward), static_cast<long long>(rejected),
              static_cast<long long>(on_rerun), static_cast<long long>(stock_varies),
              static_cast<unsigned long long>(ours),
              static_cast<unsigned long long>(after.passthrough[family_id] - before.passthrough[family_id]),
              static_cast<unsigned long long>(after.fallbacks[family_id] - before.fallbacks[family_id]));
  // A property that never reaches our nodes proves nothing. Shares need cases: a replay of
  // one case (MEMSAVE_PROPERTY_CASES=1, as a failure prints) judges that case alone.
  if (cases < 100) return;
  EXPECT_GE(ran, cases / 2) << family << ": too many configurations rejected";
  EXPECT_LE(stock_varies * 100, cases) << family << ": stock's own runs differ in over 1% of the cases";
  EXPECT_GE(static_cast<int64_t>(ours), cases / 8) << family << ": too few of our nodes built";
}

c10::optional<at::Tensor> opt(const at::Tensor& t) { return t.defined() ? c10::optional<at::Tensor>(t) : c10::nullopt; }

// Batch: 0 (zero-size) now and then.
int64_t draw_batch(Draw& d, int64_t hi) { return d.chance(0.05) ? 0 : d.in(1, hi); }

TEST(Property, Conv) {
  property("conv", MEMSAVE_FAMILY_CONV, [](Draw& d) {
    const int64_t dims = d.in(1, 3), groups = d.pick<int64_t>({1, 1, 2, 3});
    const bool transposed = d.chance(0.3), underscore = d.chance(0.2);
    const int64_t cin = groups * d.in(1, 2), cout = groups * d.in(1, 2), batch = draw_batch(d, 3);
    const Ints k = d.ints(dims, 1, 3), s = d.ints(dims, 1, 3), p = d.ints(dims, 0, 2), dl = d.ints(dims, 1, 2);
    Ints op(dims, 0), xs{batch, cin}, ws = transposed ? Ints{cin, cout / groups} : Ints{cout, cin / groups};
    for (int64_t i = 0; i < dims; i++) {
      if (transposed) op[i] = d.in(0, std::max(s[i], dl[i]) - 1);
      const int64_t lo = transposed ? 1 : std::max<int64_t>(1, dl[i] * (k[i] - 1) + 1 - 2 * p[i]);
      xs.push_back(d.chance(0.03) ? d.in(1, 2) : d.in(lo, lo + (dims == 3 ? 2 : 4)));
      ws.push_back(k[i]);
    }
    d.desc << (transposed ? " transposed" : "") << (underscore ? " _convolution" : "") << " groups " << groups << " k"
           << str(k) << " s" << str(s) << " p" << str(p) << " d" << str(dl) << " op" << str(op);
    const at::ScalarType dtype = draw_dtype(d);
    Case c;
    c.args = {draw_data(d, xs, dtype, "x"), draw_data(d, ws, dtype, "w", false),
              d.chance(0.7) ? draw_data(d, {cout}, dtype, "b", false) : at::Tensor()};
    c.pattern = draw_pattern(d, 3, c.args[2].defined() ? 7 : 3);
    c.forward = [=](std::vector<at::Tensor>& a) {
      return std::vector<at::Tensor>{
          underscore ? at::_convolution(a[0], a[1], opt(a[2]), s, p, dl, transposed, op, groups, false, false, true,
                                        true)
                     : at::convolution(a[0], a[1], opt(a[2]), s, p, dl, transposed, op, groups)};
    };
    return c;
  });
}

TEST(Property, BatchNorm) {
  property("batchnorm", MEMSAVE_FAMILY_BATCHNORM, [](Draw& d) {
    // Stock's native_batch_norm itself crashes (LibTorch 1.13) in eval mode without running
    // statistics (segmentation fault; batch_norm raises) and in training mode on an empty
    // batch (floating point exception; batch_norm returns early): not drawn.
    const bool training = d.chance(0.5), native = d.chance(0.5), stats_present = (!training && native) || d.chance(0.85);
    const int64_t spatial = d.in(0, 3), channels = d.in(1, 4);
    Ints xs{native ? d.in(1, 4) : draw_batch(d, 4), channels};
    for (int64_t i = 0; i < spatial; i++) xs.push_back(d.in(1, 4));
    const double momentum = d.pick({0.1, 0.0, 1.0, d.real(0, 1)}), eps = d.pick({1e-5, 1e-3, 0.5});
    d.desc << (training ? " train" : " eval") << (native ? " native_batch_norm" : " batch_norm") << " momentum "
           << momentum << " eps " << eps;
    const at::ScalarType dtype = draw_dtype(d);
    Case c;
    at::Tensor rm, rv;
    if (stats_present) {
      rm = (at::randn({channels}) * 0.5).to(dtype);
      rv = (at::rand({channels}) + 0.5).to(dtype);
    } else {
      d.desc << " no running stats";
    }
    // Stock's CPU batch norm reads a non-contiguous weight or bias as if it were contiguous
    // (wrong values in 1.13 and 2.6, and uninitialised ones for a copy made with
    // empty_strided): those are contiguous here.
    c.args = {draw_data(d, xs, dtype, "x"),
              d.chance(0.7) ? draw_data(d, {channels}, dtype, "w", false, true) : at::Tensor(),
              d.chance(0.7) ? draw_data(d, {channels}, dtype, "b", false, true) : at::Tensor(), to_test_device(rm),
              to_test_device(rv)};
    c.pattern = draw_pattern(d, 3, 1u | (c.args[1].defined() ? 2u : 0u) | (c.args[2].defined() ? 4u : 0u));
    c.buffers = {3, 4};
    c.forward = [=](std::vector<at::Tensor>& a) {
      if (native)
        return std::vector<at::Tensor>{
            std::get<0>(at::native_batch_norm(a[0], opt(a[1]), opt(a[2]), opt(a[3]), opt(a[4]), training, momentum, eps))};
      return std::vector<at::Tensor>{
          at::batch_norm(a[0], opt(a[1]), opt(a[2]), opt(a[3]), opt(a[4]), training, momentum, eps, false)};
    };
    return c;
  });
}

TEST(Property, ReluFamily) {
  property("relu", MEMSAVE_FAMILY_RELU, [](Draw& d) {
    const char* names[] = {"relu", "threshold", "leaky_relu", "hardtanh", "relu6"};
    const int64_t which = d.in(0, 4);
    const bool inplace = d.chance(0.5), on_view = inplace && d.chance(0.15);
    const double th = d.pick({0.0, 0.5, -1.0, d.real(-2, 2)}), value = d.pick({0.0, -3.0, d.real(-2, 2)});
    const double slope = d.pick({0.01, 0.2, 0.0, 1.5, -0.5}), lo = d.pick({-1.0, -0.5, 0.0}), hi = lo + d.pick({0.0, 0.5, 1.0, 2.0});
    Ints xs;
    for (int64_t i = 0, n = d.in(0, 5); i < n; i++) xs.push_back(d.chance(0.03) ? 0 : d.in(1, n > 3 ? 3 : 6));
    d.desc << " " << names[which] << (inplace ? "_" : "") << (on_view ? " on a view" : "") << " threshold " << th
           << " value " << value << " slope " << slope << " bounds " << lo << "," << hi;
    const at::ScalarType dtype = draw_dtype(d);
    Case c;
    c.args = {draw_data(d, xs, dtype, "x")};
    c.pattern = draw_pattern(d, 1, 1);
    c.forward = [=](std::vector<at::Tensor>& a) {
      // An in-place op needs a non-leaf: a clone (or a view of one) of the argument.
      at::Tensor x = inplace ? a[0].clone() : a[0];
      if (on_view && x.dim() >= 1) x = x.narrow(0, 0, (x.size(0) + 1) / 2);
      switch (which) {
        case 0: return std::vector<at::Tensor>{inplace ? at::relu_(x) : at::relu(x)};
        case 1: return std::vector<at::Tensor>{inplace ? at::threshold_(x, th, value) : at::threshold(x, th, value)};
        case 2: return std::vector<at::Tensor>{inplace ? at::leaky_relu_(x, slope) : at::leaky_relu(x, slope)};
        case 3: return std::vector<at::Tensor>{inplace ? at::hardtanh_(x, lo, hi) : at::hardtanh(x, lo, hi)};
        default: return std::vector<at::Tensor>{inplace ? at::relu6_(x) : at::relu6(x)};
      }
    };
    return c;
  });
}

// Whether a max-pooling window along one dimension lies entirely in the padding (possible
// with dilation: k 2, dilation 2, padding 1 over 1 element). Stock then returns indices
// outside the input (max_pool3d: [5, 6, 7] for a plane of 5, values -inf) and its backward
// writes the gradient out of bounds (heap corruption, "free(): invalid next size", in 1.13
// and 2.6); our backward refuses such indices with an error (pool_windows.cpp). Such
// windows are not drawn: the input is made longer.
bool empty_window(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil) {
  const int64_t span = d * (k - 1) + 1, num = in + 2 * p - span + (ceil ? s - 1 : 0);
  if (num < 0 || 2 * p > span) return false;  // stock rejects the size or the padding
  int64_t out = num / s + 1;
  if (ceil && (out - 1) * s >= in + p) out--;
  for (int64_t o = 0; o < out; o++) {
    bool any = false;
    for (int64_t j = 0; j < k; j++) any |= o * s - p + j * d >= 0 && o * s - p + j * d < in;
    if (!any) return true;
  }
  return false;
}

TEST(Property, Pool) {
  property("pool", MEMSAVE_FAMILY_POOL, [](Draw& d) {
    const char* names[] = {"max_pool", "max_pool_with_indices", "avg_pool", "adaptive_avg_pool", "mean"};
    const int64_t kind = d.in(0, 4), dims = d.in(1, 3);
    const bool batched = d.chance(0.8), ceil = d.chance(0.5), include_pad = d.chance(0.5);
    const Ints k = d.ints(dims, 1, 3), dl = kind <= 1 ? d.ints(dims, 1, 2) : Ints(dims, 1);
    Ints s = d.chance(0.2) ? Ints{} : d.ints(dims, 1, 3), p, xs, out;
    for (int64_t i = 0; i < dims; i++) p.push_back(d.chance(0.03) ? k[i] : d.in(0, k[i] / 2));  // k: stock rejects
    if (batched) xs.push_back(draw_batch(d, 2));
    xs.push_back(d.in(1, 3));
    for (int64_t i = 0; i < dims; i++) {
      const int64_t lo = std::max<int64_t>(1, dl[i] * (k[i] - 1) + 1 - 2 * p[i]);
      xs.push_back(d.in(lo, lo + (dims == 3 ? 2 : 4)));
      for (int n = 0; n < 8 && kind <= 1 && empty_window(xs.back(), k[i], s.empty() ? k[i] : s[i], p[i], dl[i], ceil); n++)
        xs.back()++;
      out.push_back(d.in(1, xs.back() + 1));
    }
    const c10::optional<int64_t> divisor = dims > 1 && d.chance(0.2) ? c10::optional<int64_t>(d.in(1, 5)) : c10::nullopt;
    const bool keepdim = d.chance(0.5), last_only = d.chance(0.3);
    d.desc << " " << names[kind] << dims << "d k" << str(k) << " s" << str(s) << " p" << str(p) << " d" << str(dl)
           << (ceil ? " ceil" : "") << (include_pad ? " count_include_pad" : "") << " divisor "
           << (divisor ? *divisor : 0) << " out" << str(out) << (keepdim ? " keepdim" : "")
           << (last_only ? " last dim" : "");
    const at::ScalarType dtype = draw_dtype(d);
    Case c;
    c.args = {draw_data(d, xs, dtype, "x")};
    c.pattern = draw_pattern(d, 1, 1);
    c.forward = [=](std::vector<at::Tensor>& a) -> std::vector<at::Tensor> {
      const at::Tensor& x = a[0];
      switch (kind) {
        case 0: return {dims == 1 ? at::max_pool1d(x, k, s, p, dl, ceil)
                        : dims == 2 ? at::max_pool2d(x, k, s, p, dl, ceil) : at::max_pool3d(x, k, s, p, dl, ceil)};
        case 1: {
          auto r = dims == 1 ? at::max_pool1d_with_indices(x, k, s, p, dl, ceil)
                   : dims == 2 ? at::max_pool2d_with_indices(x, k, s, p, dl, ceil)
                               : at::max_pool3d_with_indices(x, k, s, p, dl, ceil);
          return {std::get<0>(r), std::get<1>(r)};
        }
        case 2: return {dims == 1 ? at::avg_pool1d(x, k, s, p, ceil, include_pad)
                        : dims == 2 ? at::avg_pool2d(x, k, s, p, ceil, include_pad, divisor)
                                    : at::avg_pool3d(x, k, s, p, ceil, include_pad, divisor)};
        case 3: return {dims == 1 ? at::adaptive_avg_pool1d(x, out)
                        : dims == 2 ? at::adaptive_avg_pool2d(x, out) : at::adaptive_avg_pool3d(x, out)};
        default: {
          Ints reduce;
          for (int64_t i = last_only ? dims - 1 : 0; i < dims; i++) reduce.push_back(x.dim() - dims + i);
          return {at::mean(x, reduce, keepdim)};
        }
      }
    };
    return c;
  });
}

TEST(Property, Dropout) {
  property("dropout", MEMSAVE_FAMILY_DROPOUT, [](Draw& d) {
    const char* names[] = {"dropout", "dropout_", "feature_dropout", "feature_dropout_", "native_dropout"};
    const int64_t kind = d.in(0, 4);
    const double p = d.pick({0.0, 1.0, 0.5, 0.2, d.real(0, 1)});
    const bool train = d.chance(0.8), train_none = kind == 4 && d.chance(0.2);
    Ints xs;
    for (int64_t i = 0, n = d.in(1, 4); i < n; i++) xs.push_back(d.chance(0.03) ? 0 : d.in(1, 5));
    const uint64_t stream = static_cast<uint64_t>(d.in(0, 1 << 30));
    d.desc << " " << names[kind] << " p " << p << " train " << (train_none ? "None" : train ? "true" : "false");
    const at::ScalarType dtype = draw_dtype(d);
    Case c;
    c.args = {draw_data(d, xs, dtype, "x")};
    c.pattern = draw_pattern(d, 1, 1);
    c.forward = [=](std::vector<at::Tensor>& a) {
      // In-place forms on a clone; the random stream seeded before and compared after.
      at::Tensor x = kind == 1 || kind == 3 ? a[0].clone() : a[0];
      at::manual_seed(stream);
      std::vector<at::Tensor> outs;
      switch (kind) {
        case 0: outs = {at::dropout(x, p, train)}; break;
        case 1: outs = {at::dropout_(x, p, train)}; break;
        case 2: outs = {at::feature_dropout(x, p, train)}; break;
        case 3: outs = {at::feature_dropout_(x, p, train)}; break;
        default: {
          auto r = at::native_dropout(x, p, train_none ? c10::nullopt : c10::optional<bool>(train));
          outs = {std::get<0>(r), std::get<1>(r)};
        }
      }
      outs.push_back(at::rand({4}, at::TensorOptions().device(test_device())));
      return outs;
    };
    return c;
  });
}

TEST(Property, Linear) {
  property("linear", MEMSAVE_FAMILY_LINEAR, [](Draw& d) {
    const int64_t in_f = d.chance(0.03) ? 0 : d.in(1, 6), out_f = d.in(1, 6), dims = d.in(1, 4);
    Ints xs;
    for (int64_t i = 1; i < dims; i++) xs.push_back(i == 1 ? draw_batch(d, 4) : d.in(1, 3));
    xs.push_back(in_f);
    const at::ScalarType dtype = draw_dtype(d);
    Case c;
    c.args = {draw_data(d, xs, dtype, "x"), draw_data(d, {out_f, in_f}, dtype, "w", false),
              d.chance(0.7) ? draw_data(d, {out_f}, dtype, "b", false) : at::Tensor()};
    c.pattern = draw_pattern(d, 3, c.args[2].defined() ? 7 : 3);
    // Double backward is compared too: it found the second-order paths meeting at the leaves
    // instead of stock's TBackward0 and fold view (Note [Linear edges] in hooks/ops/linear.cpp).
    c.forward = [](std::vector<at::Tensor>& a) { return std::vector<at::Tensor>{at::linear(a[0], a[1], opt(a[2]))}; };
    return c;
  });
}

}  // namespace
