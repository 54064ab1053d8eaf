// SPDX-License-Identifier: MIT
// test_pool: max, average, adaptive average pooling and mean.dim with libmemsave against
// stock, bit for bit (values and strides of outputs and gradients, run and compared by
// tests/testing.h), over grids of configurations; what is special to pooling; a
// VGG-11-shaped network's peak memory. The node contract is in test_contract.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/function.h>

#include <cstdio>
#include <functional>
#include <sstream>

#include <torch/version.h>

#include "testing.h"

// On LibTorch 2.x stock's MeanBackward1 keeps only sizes, so global pooling through
// mean.dim goes to stock (passthrough) and there is nothing kept to check errors on.
constexpr bool kMeanSubstituted = TORCH_VERSION_MAJOR < 2;
constexpr int kMeanNodes = kMeanSubstituted ? 1 : 0;

namespace {

using namespace memsave_test;  // the harness: tests/testing.h

using Ints = std::vector<int64_t>;
// A pooling call: the outputs (the pooled tensor first, then the indices if any).
using PoolFn = std::function<std::vector<at::Tensor>(const at::Tensor&)>;

// Input data on the test device: batch 2 (or none), 3 channels, spatial sizes by dimension;
// channels_last only for batched 2-D and 3-D pooling.
at::Tensor make_input(int dims, bool batched, Layout layout, at::ScalarType dtype, uint64_t seed = 1234) {
  at::manual_seed(seed);
  Ints sizes{3};
  if (batched) sizes.insert(sizes.begin(), 2);
  const Ints spatial = dims == 1 ? Ints{9} : dims == 2 ? Ints{7, 8} : Ints{5, 6, 7};
  sizes.insert(sizes.end(), spatial.begin(), spatial.end());
  return with_layout(to_test_device(at::randn(sizes).to(dtype)), layout);
}

Forward forward(const PoolFn& fn) {
  return [fn](std::vector<at::Tensor>& a) { return fn(a[0]); };
}

// Compares stock and libmemsave, with an incoming gradient in the output's memory format, or
// contiguous; returns false when stock rejects the configuration.
bool check_once(const PoolFn& fn, const at::Tensor& data, const std::string& where, int expect_substituted,
                bool contiguous_go) {
  const auto before = stats();
  auto r = compare_with_stock(forward(fn), {data}, 1, where, random_grad(99, !contiguous_go));
  const auto after = stats();
  if (!r) return false;
  EXPECT_EQ(after.substituted[MEMSAVE_FAMILY_POOL] - before.substituted[MEMSAVE_FAMILY_POOL],
            static_cast<uint64_t>(expect_substituted))
      << where << " (grad_fn " << r.ours.grad_fn << ")";
  return true;
}

bool check(const PoolFn& fn, const at::Tensor& data, const std::string& where, int expect_substituted = 1) {
  for (bool contiguous_go : {false, true})
    if (!check_once(fn, data, where + (contiguous_go ? " contiguous-go" : ""), expect_substituted, contiguous_go))
      return false;
  return true;
}

// libmemsave's run, with the bytes its nodes kept.
std::pair<Run, uint64_t> run_ours(const PoolFn& fn, const at::Tensor& data) {
  const auto before = stats();
  Run r = run_once(true, forward(fn), {data}, 1, random_grad());
  return {r, stats().bytes_kept - before.bytes_kept};
}

std::string str(const Ints& v) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < v.size(); i++) s << (i ? "," : "") << v[i];
  s << "]";
  return s.str();
}

PoolFn max_pool(int dims, Ints k, Ints s, Ints p, Ints d, bool ceil, bool indices) {
  return [=](const at::Tensor& x) -> std::vector<at::Tensor> {
    if (indices) {
      std::tuple<at::Tensor, at::Tensor> r = dims == 1   ? at::max_pool1d_with_indices(x, k, s, p, d, ceil)
                                             : dims == 2 ? at::max_pool2d_with_indices(x, k, s, p, d, ceil)
                                                         : at::max_pool3d_with_indices(x, k, s, p, d, ceil);
      return {std::get<0>(r), std::get<1>(r)};
    }
    return {dims == 1   ? at::max_pool1d(x, k, s, p, d, ceil)
            : dims == 2 ? at::max_pool2d(x, k, s, p, d, ceil)
                        : at::max_pool3d(x, k, s, p, d, ceil)};
  };
}

const Layout kLayouts[] = {Layout::kContiguous, Layout::kChannelsLast, Layout::kStrided, Layout::kExpanded};

TEST(Pool, MaxPoolGrid) {
  int ran = 0;
  for (int dims : {1, 2, 3})
    for (int kernel : {2, 3})
      for (int stride : {0, 1, 2})  // 0: omitted (the kernel size)
        for (int padding : {0, 1})
          for (int dilation : {1, 2})
            for (bool ceil : {false, true})
              for (bool indices : {false, true})
                for (Layout layout : kLayouts)
                  for (bool batched : {true, false}) {
                    if (layout == Layout::kChannelsLast && (dims == 1 || !batched)) continue;
                    const Ints k(1, kernel), s = stride ? Ints{stride} : Ints{}, p(1, padding), d(1, dilation);
                    std::ostringstream where;
                    where << "max_pool" << dims << "d k" << kernel << " s" << stride << " p" << padding << " d"
                          << dilation << (ceil ? " ceil" : "") << (indices ? " indices" : "") << " "
                          << layout_name(layout) << (batched ? "" : " unbatched");
                    ran += check(max_pool(dims, k, s, p, d, ceil, indices),
                                 make_input(dims, batched, layout, at::kFloat), where.str());
                  }
  std::printf("MaxPoolGrid: %d configurations compared\n", ran);
  EXPECT_GE(ran, 1000) << "too few configurations ran";
}

// Outputs of more than 65536 elements: the offsets and the rebuilt indices are converted a
// piece of the largest non-spatial dimension at a time (Note [Pieces] in hooks/ops/pool_windows.h),
// with pieces of one entry (a plane larger than a piece), of several entries, and a split
// along the channels (batch 1, unbatched); dilation, padding, ceil_mode, channels_last.
TEST(Pool, MaxPoolInPieces) {
  struct Big {
    int dims;
    Ints sizes;
    Ints k, s, p, d;
    bool ceil;
  };
  const std::vector<Big> cases{
      {2, {3, 5, 160, 170}, {3}, {1}, {1}, {1}, false},   // planes of 27k outputs: several per piece
      {2, {2, 3, 300, 290}, {2}, {1}, {0}, {2}, true},    // planes above 65536 outputs: one per piece
      {2, {1, 9, 120, 130}, {3, 2}, {1, 2}, {1, 0}, {1, 1}, true},  // batch 1: split along channels
      {2, {9, 120, 130}, {2}, {1}, {0}, {1}, false},      // unbatched
      {3, {2, 4, 12, 40, 41}, {2}, {1}, {1}, {1}, false},
      {3, {1, 3, 10, 50, 60}, {2, 3, 2}, {1, 1, 2}, {0, 1, 1}, {2, 1, 1}, true},
  };
  int ran = 0;
  for (const Big& c : cases)
    for (Layout layout : {Layout::kContiguous, Layout::kChannelsLast, Layout::kStrided}) {
      const bool batched = static_cast<int>(c.sizes.size()) == c.dims + 2;
      if (layout == Layout::kChannelsLast && !batched) continue;
      at::manual_seed(ran);
      Ints sizes = c.sizes;
      if (layout == Layout::kStrided) sizes.back() *= 2;
      // Rounded: ties (and so a choice between equal maxima) in many windows.
      at::Tensor x = to_test_device(at::randn(sizes).mul_(4).round_());
      if (layout == Layout::kStrided) x = x.slice(-1, 0, sizes.back(), 2);
      if (layout == Layout::kChannelsLast)
        x = x.contiguous(c.dims == 2 ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::ChannelsLast3d);
      std::ostringstream where;
      where << "max_pool" << c.dims << "d " << str(c.sizes) << " " << layout_name(layout);
      EXPECT_TRUE(check(max_pool(c.dims, c.k, c.s, c.p, c.d, c.ceil, false), x, where.str())) << where.str();
      ran++;
    }
  EXPECT_EQ(ran, 17);
}

TEST(Pool, MaxPoolPerDimensionArgumentsAndDtypes) {
  int ran = 0;
  for (at::ScalarType dtype : {at::kFloat, at::kDouble, at::kBFloat16}) {
    ran += check(max_pool(2, {2, 3}, {1, 2}, {1, 0}, {2, 1}, true, false),
                 make_input(2, true, Layout::kContiguous, dtype), std::string("2d mixed ") + c10::toString(dtype));
    ran += check(max_pool(2, {3, 2}, {}, {1, 1}, {1, 1}, false, true),
                 make_input(2, true, Layout::kChannelsLast, dtype), std::string("2d cl mixed ") + c10::toString(dtype));
    ran += check(max_pool(3, {1, 2, 3}, {2, 1, 2}, {0, 1, 1}, {1, 2, 1}, true, false),
                 make_input(3, true, Layout::kChannelsLast, dtype), std::string("3d cl mixed ") + c10::toString(dtype));
    ran += check(max_pool(1, {4}, {3}, {2}, {1}, true, false), make_input(1, false, Layout::kContiguous, dtype),
                 std::string("1d ") + c10::toString(dtype));
  }
  EXPECT_GE(ran, 11) << "max_pool3d has no bfloat16 CPU kernel in 1.13; all other cases run";
}

// Ties, NaN (stock keeps the last NaN of a window), windows of -inf only, +-0.
TEST(Pool, MaxPoolSpecialValues) {
  for (int dims : {1, 2, 3})
    for (bool indices : {false, true}) {
      at::Tensor x = make_input(dims, true, Layout::kContiguous, at::kFloat).round();  // many ties
      at::Tensor flat = x.view(-1);
      flat.slice(0, 0, 6).fill_(-std::numeric_limits<float>::infinity());
      flat[9] = std::numeric_limits<float>::quiet_NaN();
      flat[10] = std::numeric_limits<float>::quiet_NaN();
      flat.slice(0, 20, 30).fill_(-0.0f);
      flat[40] = std::numeric_limits<float>::infinity();
      EXPECT_TRUE(check(max_pool(dims, {3}, {2}, {1}, {1}, true, indices), x, "special " + std::to_string(dims)));
    }
}

// The offset type follows the window size: 1 byte up to 256 elements, 2 up to 32768, 4 above.
TEST(Pool, MaxPoolOffsetWidthFollowsWindow) {
  struct Case {
    int64_t size, kernel, bytes;
  };
  for (Case c : {Case{33, 16, 1}, Case{40, 17, 2}, Case{400, 182, 4}}) {
    at::manual_seed(3);
    const at::Tensor data = to_test_device(at::randn({1, 2, c.size, c.size}));
    const PoolFn fn = max_pool(2, {c.kernel}, {c.kernel / 2}, {0}, {1}, false, false);
    EXPECT_TRUE(check_once(fn, data, "kernel " + std::to_string(c.kernel), 1, false));
    const auto ours = run_ours(fn, data);
    EXPECT_EQ(ours.second, static_cast<uint64_t>(ours.first.outs[0].numel() * c.bytes)) << c.kernel;
  }
}

TEST(Pool, MaxPoolWithIndicesReferencesTheOutput) {
  at::Tensor data = make_input(2, true, Layout::kContiguous, at::kFloat);
  const auto ours = run_ours(max_pool(2, {2}, {2}, {0}, {1}, false, true), data);
  EXPECT_EQ(ours.second, static_cast<uint64_t>(ours.first.outs[1].numel() * 8)) << "the int64 indices, referenced";
  const auto plain = run_ours(max_pool(2, {2}, {2}, {0}, {1}, false, false), data);
  EXPECT_EQ(plain.second, static_cast<uint64_t>(plain.first.outs[0].numel())) << "one byte per output";
  EXPECT_EQ(plain.first.grad_fn, "MemsaveMaxPool2DBackward");
}

PoolFn avg_pool(int dims, Ints k, Ints s, Ints p, bool ceil, bool count_pad, c10::optional<int64_t> divisor) {
  return [=](const at::Tensor& x) -> std::vector<at::Tensor> {
    if (dims == 1) return {at::avg_pool1d(x, k, s, p, ceil, count_pad)};
    if (dims == 2) return {at::avg_pool2d(x, k, s, p, ceil, count_pad, divisor)};
    return {at::avg_pool3d(x, k, s, p, ceil, count_pad, divisor)};
  };
}

TEST(Pool, AvgPoolGrid) {
  int ran = 0;
  for (int dims : {1, 2, 3})
    for (int kernel : {2, 3})
      for (int stride : {0, 2})
        for (int padding : {0, 1})
          for (bool ceil : {false, true})
            for (bool count_pad : {false, true})
              for (int divisor : {0, 5})
                for (Layout layout : kLayouts)
                  for (bool batched : {true, false}) {
                    if (layout == Layout::kChannelsLast && (dims == 1 || !batched)) continue;
                    if (dims == 1 && divisor) continue;
                    const Ints k(1, kernel), s = stride ? Ints{stride} : Ints{}, p(1, padding);
                    std::ostringstream where;
                    where << "avg_pool" << dims << "d k" << kernel << " s" << stride << " p" << padding
                          << (ceil ? " ceil" : "") << (count_pad ? " count_pad" : "") << " div" << divisor << " "
                          << layout_name(layout) << (batched ? "" : " unbatched");
                    ran += check(avg_pool(dims, k, s, p, ceil, count_pad,
                                          divisor ? c10::optional<int64_t>(divisor) : c10::nullopt),
                                 make_input(dims, batched, layout, at::kFloat), where.str());
                  }
  std::printf("AvgPoolGrid: %d configurations compared\n", ran);
  EXPECT_GE(ran, 500);
}

TEST(Pool, AvgPoolDtypes) {
  int ran = 0;
  for (at::ScalarType dtype : {at::kDouble, at::kBFloat16})
    for (int dims : {1, 2, 3})
      ran += check(avg_pool(dims, {3}, {2}, {1}, true, false, c10::nullopt),
                   make_input(dims, true, dims == 1 ? Layout::kContiguous : Layout::kChannelsLast, dtype),
                   "avg " + std::to_string(dims) + std::string("d ") + c10::toString(dtype));
  EXPECT_GE(ran, 5) << "avg_pool3d has no bfloat16 CPU kernel in 1.13; all other cases run";
}

PoolFn adaptive_avg_pool(int dims, Ints out) {
  return [=](const at::Tensor& x) -> std::vector<at::Tensor> {
    if (dims == 1) return {at::adaptive_avg_pool1d(x, out)};
    if (dims == 2) return {at::adaptive_avg_pool2d(x, out)};
    return {at::adaptive_avg_pool3d(x, out)};
  };
}

// Output size 1 goes through mean.dim (global pooling), with a restride for channels_last.
TEST(Pool, AdaptiveAvgPoolGrid) {
  int ran = 0;
  for (int dims : {1, 2, 3})
    for (int out : {1, 2, 3, 5, 11})
      for (Layout layout : kLayouts)
        for (bool batched : {true, false})
          for (at::ScalarType dtype : {at::kFloat, at::kDouble, at::kBFloat16}) {
            if (layout == Layout::kChannelsLast && (dims == 1 || !batched)) continue;
            std::ostringstream where;
            where << "adaptive_avg_pool" << dims << "d out" << out << " " << layout_name(layout)
                  << (batched ? "" : " unbatched") << " " << dtype;
            ran += check(adaptive_avg_pool(dims, Ints(dims, out)), make_input(dims, batched, layout, dtype),
                         where.str(), out == 1 ? kMeanNodes : 1);
          }
  std::printf("AdaptiveAvgPoolGrid: %d configurations compared\n", ran);
  EXPECT_GE(ran, 150);
}

TEST(Pool, AdaptiveAvgPoolMixedOutputSizes) {
  EXPECT_TRUE(check(adaptive_avg_pool(2, {1, 3}), make_input(2, true, Layout::kChannelsLast, at::kFloat), "2d 1x3"));
  EXPECT_TRUE(check(adaptive_avg_pool(3, {1, 1, 2}), make_input(3, true, Layout::kContiguous, at::kFloat), "3d"));
}

PoolFn mean(c10::optional<Ints> dims, bool keepdim, c10::optional<at::ScalarType> dtype = c10::nullopt) {
  return [=](const at::Tensor& x) -> std::vector<at::Tensor> {
    return {dims ? at::mean(x, *dims, keepdim, dtype) : at::mean(x, at::OptionalIntArrayRef(), keepdim, dtype)};
  };
}

TEST(Pool, MeanDimGrid) {
  int ran = 0;
  const std::vector<c10::optional<Ints>> dim_lists{c10::nullopt,  Ints{},        Ints{-1, -2}, Ints{2, 3},
                                                   Ints{1},       Ints{-1},      Ints{0, 2, 3}, Ints{3, 0}};
  for (const auto& dims : dim_lists)
    for (bool keepdim : {false, true})
      for (Layout layout : {Layout::kContiguous, Layout::kChannelsLast, Layout::kStrided})
        for (at::ScalarType dtype : {at::kFloat, at::kDouble, at::kBFloat16, at::kHalf}) {
          std::ostringstream where;
          where << "mean dims " << (dims ? str(*dims) : "None") << (keepdim ? " keepdim " : " ")
                << layout_name(layout) << " " << dtype;
          ran += check(mean(dims, keepdim), make_input(2, true, layout, dtype), where.str(), kMeanNodes);
        }
  ran += check(mean(Ints{1}, false, at::kDouble), make_input(2, true, Layout::kContiguous, at::kFloat), "mean dtype",
               kMeanNodes);
  ran += check(mean(Ints{0}, false), to_test_device(at::randn({5})), "mean 1-d", kMeanNodes);
  ran += check(mean(c10::nullopt, false), to_test_device(at::randn({})), "mean 0-d", kMeanNodes);
  std::printf("MeanDimGrid: %d configurations compared\n", ran);
  EXPECT_GE(ran, 150);
}

// NaN and infinities flow through average pooling and the mean as in stock.
TEST(Pool, AveragesSpecialValues) {
  at::Tensor x = make_input(2, true, Layout::kContiguous, at::kFloat);
  x.view(-1)[3] = std::numeric_limits<float>::quiet_NaN();
  x.view(-1)[17] = std::numeric_limits<float>::infinity();
  x.view(-1)[18] = -0.0f;
  x = x.contiguous(at::MemoryFormat::ChannelsLast);
  EXPECT_TRUE(check(avg_pool(2, {3}, {2}, {1}, true, true, c10::nullopt), x, "avg special"));
  EXPECT_TRUE(check(adaptive_avg_pool(2, {3, 3}), x, "adaptive special"));
  EXPECT_TRUE(check(adaptive_avg_pool(2, {1, 1}), x, "global special", kMeanNodes));
}

// Double backward for every kind of pooling node, through the output (the first gradient
// depends on y) or not (it depends on x only through stock's zeros_like(self)).
TEST(Pool, DoubleBackwardEveryKind) {
  const std::vector<std::pair<std::string, PoolFn>> fns{
      {"max1d", max_pool(1, {3}, {2}, {1}, {1}, true, false)},
      {"max2d", max_pool(2, {3}, {2}, {1}, {1}, false, false)},
      {"max2d indices", max_pool(2, {2}, {1}, {0}, {2}, false, true)},
      {"max3d", max_pool(3, {2}, {2}, {0}, {1}, false, false)},
      {"avg2d", avg_pool(2, {3}, {2}, {1}, false, true, c10::nullopt)},
      {"avg3d", avg_pool(3, {2}, {1}, {0}, true, false, 3)},
      {"adaptive2d", adaptive_avg_pool(2, {3, 2})},
      {"adaptive3d", adaptive_avg_pool(3, {2, 2, 3})},
      {"global2d", adaptive_avg_pool(2, {1, 1})},
      {"mean", mean(Ints{1, 3}, false)},
  };
  for (const auto& [name, fn] : fns)
    for (Layout layout : {Layout::kContiguous, Layout::kChannelsLast})
      for (bool through_output : {true, false}) {
        const int dims = name.find("3d") != std::string::npos ? 3 : name.find("1d") != std::string::npos ? 1 : 2;
        at::Tensor data = make_input(dims, true, dims == 1 ? Layout::kContiguous : layout, at::kDouble);
        const std::string where = name + (layout == Layout::kChannelsLast ? " cl" : "") +
                                  (through_output ? " y.pow(2)" : " y.sum()");
        compare_double_backward(forward(fn), {data}, 1, where, through_output);
      }
}

TEST(Pool, CountsBytes) {
  at::Tensor x = make_input(2, true, Layout::kContiguous, at::kFloat).requires_grad_(true);
  auto before = stats();
  at::Tensor y = with_memsave(true, [&] { return at::max_pool2d(x, {2}); });
  auto after = stats();
  EXPECT_EQ(after.bytes_kept - before.bytes_kept, static_cast<uint64_t>(y.numel()));
  EXPECT_EQ(after.bytes_stock - before.bytes_stock, static_cast<uint64_t>(x.numel() * 4 + y.numel() * 8));
  before = after;
  with_memsave(true, [&] { return at::adaptive_avg_pool2d(x, {1, 1}); });
  after = stats();
  EXPECT_EQ(after.bytes_kept - before.bytes_kept, 0u);
  EXPECT_EQ(after.bytes_stock - before.bytes_stock, static_cast<uint64_t>(kMeanSubstituted ? x.numel() * 4 : 0));
}

// VGG-11 (configuration A): eight frozen 3x3 convolutions with in-place ReLU and five
// 2x2 max-pools, input that requires grad. ReLU is stock in this branch, so what is saved
// comes from the pools (int64 indices become one byte, the input is not kept) and from the
// convolutions (their inputs, the pools' outputs, are not kept).
Step vgg_step(bool on) {
  at::manual_seed(0);
  const std::vector<int64_t> cfg{64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0};  // 0: max-pool
  std::vector<at::Tensor> weights, biases;
  int64_t in = 3;
  for (int64_t c : cfg) {
    if (!c) continue;
    weights.push_back(to_test_device(at::randn({c, in, 3, 3}) * std::sqrt(2.0 / (9 * in))));
    biases.push_back(to_test_device(at::randn({c}) * 0.01));
    in = c;
  }
  at::Tensor classifier = to_test_device(at::randn({10, 512}) * 0.05);
  at::Tensor x = to_test_device(at::randn({8, 3, 32, 32})).requires_grad_(true);
  return with_memsave(on, [&] {
    const int64_t base = step_start();
    at::Tensor h = x;
    size_t layer = 0;
    for (int64_t c : cfg) {
      if (c) {
        h = at::conv2d(h, weights[layer], biases[layer], 1, 1).relu_();
        layer++;
      } else {
        h = at::max_pool2d(h, {2}, {2});
      }
    }
    at::Tensor loss = at::linear(h.flatten(1), classifier).pow(2).sum();
    loss.backward();
    return Step{peak_since(base), 0, {loss.detach(), x.grad()}};
  });
}

TEST(PoolMemory, Vgg11PeakBelowStock) {
  MEMSAVE_NEEDS_PEAK();
  const auto [stock, ours] = expect_step_saves_memory(vgg_step, MEMSAVE_FAMILY_POOL, 5);
  std::printf("VGG-11 (batch 8, 32x32, frozen, input grad): peak stock %lld B, libmemsave %lld B, ratio %.3f\n",
              (long long)stock.peak, (long long)ours.peak, (double)ours.peak / (double)stock.peak);
}

}  // namespace
