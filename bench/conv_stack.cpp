// SPDX-License-Identifier: MIT
// bench_conv_stack: the paper's first experiment. A stack of DEPTH frozen 3x3 convolutions
// (no nonlinearity) whose input requires grad; one forward+backward per run. Stock
// (memsave_set_enabled(0)) and libmemsave runs alternate A B A B in one process; the
// medians of wall time and the peak CPU tensor bytes are printed with the B/A ratios.
//
//   build/bench_conv_stack [--depth 16] [--runs 7] [--batch 8] [--channels 32] [--size 64]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "memsave.h"

namespace {

struct Sample {
  double seconds;
  uint64_t peak;
};

Sample one_step(const std::vector<at::Tensor>& weights, const at::Tensor& input) {
  memsave_stats st;
  memsave_get_stats(&st, sizeof st);
  const uint64_t base = st.cpu_current_bytes;
  memsave_reset_peak();
  auto t0 = std::chrono::steady_clock::now();
  at::Tensor x = input.detach().requires_grad_(true);
  at::Tensor h = x;
  for (const auto& w : weights) h = at::conv2d(h, w, {}, 1, 1);
  h.sum().backward();
  auto t1 = std::chrono::steady_clock::now();
  memsave_get_stats(&st, sizeof st);
  return {std::chrono::duration<double>(t1 - t0).count(), st.cpu_peak_bytes - base};
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

int main(int argc, char** argv) {
  int64_t depth = 16, runs = 7, batch = 8, channels = 32, size = 64;
  for (int i = 1; i + 1 < argc; i += 2) {
    int64_t v = std::atoll(argv[i + 1]);
    if (!std::strcmp(argv[i], "--depth")) depth = v;
    else if (!std::strcmp(argv[i], "--runs")) runs = v;
    else if (!std::strcmp(argv[i], "--batch")) batch = v;
    else if (!std::strcmp(argv[i], "--channels")) channels = v;
    else if (!std::strcmp(argv[i], "--size")) size = v;
    else {
      std::fprintf(stderr, "bench_conv_stack: unknown option %s\n", argv[i]);
      return 2;
    }
  }
  if (!memsave_is_active()) {
    std::fprintf(stderr, "bench_conv_stack: libmemsave hooks are not active\n");
    return 1;
  }
  at::manual_seed(0);
  std::vector<at::Tensor> weights;
  for (int64_t i = 0; i < depth; i++) weights.push_back(at::randn({channels, channels, 3, 3}) * 0.05);
  at::Tensor input = at::randn({batch, channels, size, size});
  std::vector<double> time[2];
  uint64_t peak[2] = {0, 0};
  for (int64_t r = 0; r <= runs; r++) {
    for (int on = 0; on < 2; on++) {
      memsave_set_enabled(on);
      Sample s = one_step(weights, input);
      if (r == 0) continue;  // warm-up pair
      time[on].push_back(s.seconds);
      peak[on] = std::max(peak[on], s.peak);
    }
  }
  const double ta = median(time[0]), tb = median(time[1]);
  std::printf("conv stack: depth %lld, input %lldx%lldx%lldx%lld float32, %lld A/B pairs (alternated), %d threads\n",
              (long long)depth, (long long)batch, (long long)channels, (long long)size, (long long)size,
              (long long)runs, at::get_num_threads());
  std::printf("peak tensor bytes  stock %llu  memsave %llu  ratio %.3f\n", (unsigned long long)peak[0],
              (unsigned long long)peak[1], (double)peak[1] / (double)peak[0]);
  std::printf("median time (s)    stock %.4f  memsave %.4f  ratio %.3f\n", ta, tb, tb / ta);
  return 0;
}
