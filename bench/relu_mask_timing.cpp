// SPDX-License-Identifier: MIT
// relu_mask_timing: one-off timing of the ReLU family's 1-bit masks on the CPU: packing and
// unpacking against the relu itself and a convolution of the same output size, and relu
// forward+backward with libmemsave on and off. Not a test; built as bench_relu_mask_timing
// (bench/CMakeLists.txt) and run by hand:
//   MEMSAVE_OPS=all build/bench_relu_mask_timing [threads [N C H W]]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <vector>

#include "../hooks/core/bitmask.h"
#include "memsave.h"

using memsave::BitMask;

// Median of `reps` runs, in milliseconds.
double time_ms(int reps, const std::function<void()>& fn) {
  fn();  // warm-up (page faults, thread pool)
  std::vector<double> t;
  for (int i = 0; i < reps; i++) {
    auto a = std::chrono::steady_clock::now();
    fn();
    auto b = std::chrono::steady_clock::now();
    t.push_back(std::chrono::duration<double, std::milli>(b - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

int main(int argc, char** argv) {
  if (argc > 1) at::set_num_threads(std::atoi(argv[1]));
  const int reps = 9;
  at::manual_seed(0);
  // Default 16 x 64 x 128 x 128 = 16.8M float32 elements (64 MiB), channels_last as after a conv.
  std::vector<int64_t> shape{16, 64, 128, 128};
  for (int i = 0; i < 4 && argc > 2 + i; i++) shape[i] = std::atoll(argv[2 + i]);
  at::Tensor x = at::randn(shape).contiguous(at::MemoryFormat::ChannelsLast);
  const int64_t n = x.numel();
  at::Tensor y = at::relu(x), grad = at::randn_like(x);
  std::printf("threads %d, %lld float32 elements (%.0f MiB), mask %lld bytes\n", at::get_num_threads(), (long long)n,
              n * 4 / 1048576.0, (long long)(n + 7) / 8);

  const double relu = time_ms(reps, [&] { at::relu(x); });
  const double tb = time_ms(reps, [&] { at::threshold_backward(grad, y, 0); });
  BitMask mask(y, BitMask::Test::kNotAtMost, 0);
  const double pack = time_ms(reps, [&] { BitMask m(y, BitMask::Test::kNotAtMost, 0); });
  const double unpack = time_ms(reps, [&] { mask.unpack(at::kFloat, INFINITY, -INFINITY); });
  BitMask::force_tensor_ops(true);
  const double pack_ops = time_ms(3, [&] { BitMask m(y, BitMask::Test::kNotAtMost, 0); });
  const double unpack_ops = time_ms(3, [&] { mask.unpack(at::kFloat, INFINITY, -INFINITY); });
  BitMask::force_tensor_ops(false);
  at::Tensor w = at::randn({shape[1], shape[1], 3, 3}).contiguous(at::MemoryFormat::ChannelsLast);
  const double conv = time_ms(3, [&] { at::conv2d(x, w, {}, 1, 1); });
  std::printf("relu forward          %8.2f ms\n", relu);
  std::printf("threshold_backward    %8.2f ms\n", tb);
  std::printf("mask pack (fused CPU) %8.2f ms  (%.2f x relu)\n", pack, pack / relu);
  std::printf("mask unpack (CPU)     %8.2f ms  (%.2f x relu)\n", unpack, unpack / relu);
  std::printf("pack (tensor ops)     %8.2f ms\n", pack_ops);
  std::printf("unpack (tensor ops)   %8.2f ms\n", unpack_ops);
  std::printf("conv2d CxC 3x3 fwd    %8.2f ms  (pack+unpack = %.1f%% of it)\n", conv, 100 * (pack + unpack) / conv);

  // relu forward + backward through autograd, stock vs libmemsave, alternated run by run
  // (A/B), medians of 21 each.
  if (memsave_is_active()) {
    at::Tensor leaf = x.clone().requires_grad_(true);
    for (bool inplace : {false, true}) {
      std::vector<double> t[2];
      for (int i = 0; i < 2 * 21 + 2; i++) {
        const int on = i % 2;
        memsave_set_enabled(on);
        auto a = std::chrono::steady_clock::now();
        at::Tensor h = leaf * 1;  // a non-leaf, as after a batch norm
        at::Tensor r = inplace ? at::relu_(h) : at::relu(h);
        torch::autograd::backward({r}, {grad});
        auto b = std::chrono::steady_clock::now();
        if (i >= 2) t[on].push_back(std::chrono::duration<double, std::milli>(b - a).count());
      }
      for (auto& v : t) std::sort(v.begin(), v.end());
      const double s0 = t[0][t[0].size() / 2], s1 = t[1][t[1].size() / 2];
      std::printf("x*1 -> relu%s -> backward: stock %.2f ms, libmemsave %.2f ms (%+.1f%%)\n", inplace ? "_" : "", s0, s1,
                  100 * (s1 / s0 - 1));
    }
  }
  return 0;
}
