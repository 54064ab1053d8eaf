// SPDX-License-Identifier: MIT
// test_memory: the paper's headline observation. For a stack of N frozen convolutions (no
// nonlinearity) whose input requires grad, stock's peak tensor bytes grow linearly with N
// (every convolution keeps its input), libmemsave's stay flat.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include <cstdio>

#include "testing.h"

namespace {

using namespace memsave_test;  // the harness: tests/testing.h

constexpr int64_t kBatch = 4, kChannels = 16, kSize = 32;
constexpr int64_t kActivationBytes = kBatch * kChannels * kSize * kSize * 4;

// Peak tensor bytes above the bytes alive before the step, for one forward+backward, on the
// test device (on CUDA the caching allocator's, Note [CUDA peak in tests] in testing.h).
// Measured with LibTorch's default backends (mkldnn on): no values are compared here, so the
// 2.6 mkldnn bug of Note [mkldnn off on 2.x] does not matter, and with mkldnn off the
// slow_conv2d path adds a 9-activation im2col buffer to every peak.
int64_t step_peak(int depth, bool on) {
  MkldnnGuard mkldnn(true);
  at::manual_seed(0);
  std::vector<at::Tensor> weights;
  for (int i = 0; i < depth; i++) weights.push_back(to_test_device(at::randn({kChannels, kChannels, 3, 3}) * 0.1));
  at::Tensor x = to_test_device(at::randn({kBatch, kChannels, kSize, kSize})).requires_grad_(true);
  return with_memsave(on, [&] {
    const int64_t base = step_start();
    at::Tensor h = x;
    for (const auto& w : weights) h = at::conv2d(h, w, {}, 1, 1);
    h.sum().backward();
    return peak_since(base);
  });
}

TEST(Memory, FrozenConvStackStockLinearMemsaveFlat) {
  MEMSAVE_NEEDS_PEAK();
  const int64_t stock2 = step_peak(2, false), stock16 = step_peak(16, false);
  const int64_t ours2 = step_peak(2, true), ours16 = step_peak(16, true);
  std::printf("activation %lld B; peak stock N=2 %lld, N=16 %lld; memsave N=2 %lld, N=16 %lld; ratio at N=16 %.3f\n",
              (long long)kActivationBytes, (long long)stock2, (long long)stock16, (long long)ours2,
              (long long)ours16, (double)ours16 / (double)stock16);
  // Stock keeps one more activation per layer: 14 more layers, at least 13 activations more.
  EXPECT_GE(stock16 - stock2, 13 * kActivationBytes);
  // libmemsave keeps none: the peak does not grow by even one activation.
  EXPECT_LT(ours16 - ours2, kActivationBytes);
  EXPECT_LE(ours2, stock2);
  EXPECT_LT(ours16, stock16 / 3);
}

TEST(Memory, PeakIsMeasuredWhenDisabled) {
  MEMSAVE_CPU_ONLY("the CPU allocator's counters");
  // Stock runs are measured by the same counting allocator (memsave ab's A runs).
  memsave_reset_peak();
  const auto before = stats();
  { at::Tensor t = at::empty({1 << 20}); }
  const auto after = stats();
  EXPECT_GE(after.cpu_peak_bytes, before.cpu_current_bytes + (4u << 20));
  EXPECT_EQ(after.cpu_current_bytes, before.cpu_current_bytes);
}

// Note [Untouched stand-in] (hooks/core/standin.h): stand-ins of 1 MiB and more are anonymous
// mappings that no kernel writes. Inputs of 2.4 MiB whose nodes need a stand-in in
// backward: a convolution whose input is dead (contiguous, channels_last, a 1x1 stride-2
// convolution), batch norm in eval mode with an expanded incoming gradient (which cannot
// serve as its stand-in), max pooling of a channels_last or strided input: gradients are
// stock's bits. (That the stand-in costs no tensor bytes is asserted by the footprint
// agreement in tests/test_cli.sh.)
struct StandInRun {
  at::Tensor gx;
  int64_t backward_peak = 0;  // above the bytes alive before backward
};

StandInRun stand_in_run(int which, bool channels_last, bool on) {
  at::manual_seed(3);
  const auto o = at::TensorOptions().dtype(at::kFloat);
  at::Tensor data = to_test_device(at::randn({8, 32, 48, 48}, o));
  if (channels_last) data = data.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor w3 = to_test_device(at::randn({32, 32, 3, 3}, o) * 0.05),
             w1 = to_test_device(at::randn({64, 32, 1, 1}, o) * 0.1);
  at::Tensor mean = to_test_device(at::randn({32}, o) * 0.1), var = to_test_device(at::rand({32}, o) + 0.5),
             gamma = to_test_device(at::randn({32}, o)), beta = to_test_device(at::randn({32}, o));
  return with_memsave(on, [&] {
    StandInRun r;
    at::Tensor x = data.clone().requires_grad_(true);
    at::Tensor y;
    {
      at::Tensor h = x * 1;  // a non-leaf that dies after the forward
      switch (which) {
        case 0: y = at::conv2d(at::relu(at::conv2d(h, w3, {}, 1, 1)), w1, {}, 2); break;
        case 1: y = at::batch_norm(h, gamma, beta, mean, var, false, 0.1, 1e-5, false); break;
        default: y = at::max_pool2d(channels_last ? h : h.slice(3, 0, 48, 2), {3, 3}, {2, 2}, {1, 1}); break;
      }
    }
    const int64_t base = step_start();
    r.gx = torch::autograd::grad({y.sum()}, {x})[0];
    r.backward_peak = peak_since(base);
    return r;
  });
}

TEST(Memory, UntouchedStandInsGiveStockBits) {
  // On CUDA the stand-ins are ordinary tensors (Note [Untouched stand-in] is about CPU
  // mappings); the gradients must be stock's bits there too.
  const char* names[] = {"conv", "batch_norm", "max_pool2d"};
  for (int which = 0; which < 3; which++)
    for (bool channels_last : {false, true}) {
      const StandInRun stock = stand_in_run(which, channels_last, false);
      const StandInRun ours = stand_in_run(which, channels_last, true);
      std::printf("%s%s: backward peak above the bytes alive before it (stock's base holds the inputs it keeps): stock %lld, libmemsave %lld\n", names[which], channels_last ? " channels_last" : "",
                  (long long)stock.backward_peak, (long long)ours.backward_peak);
      EXPECT_TRUE(bitwise_equal(stock.gx, ours.gx)) << names[which] << " channels_last " << channels_last;
    }
}

}  // namespace
