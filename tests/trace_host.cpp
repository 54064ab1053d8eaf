// SPDX-License-Identifier: MIT
// trace_host: an unmodified LibTorch host (it does not link libmemsave) for the report and
// attribution tests. Two functions with distinct names run frozen convolutions whose inputs
// need gradients, on inputs of different sizes; the smaller runs first, so a ranking by
// order of appearance would be wrong. Before leaving, the program prints its statistics from
// memsave_get_stats (found with dlsym, as a host probing for libmemsave would), so that the
// test can compare them with the report written at exit.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include <dlfcn.h>

#include <cstdio>

#include "memsave.h"

namespace {

constexpr int kCalls = 3;

// noinline: each function must stay its own frame, the call site the report names.
__attribute__((noinline)) void large_frozen_convs(const at::Tensor& w) {
  for (int i = 0; i < kCalls; i++) {
    at::Tensor x = at::randn({4, 8, 32, 32}).requires_grad_(true);  // 128 KiB not kept per call
    at::conv2d(x, w, {}, 1, 1).sum().backward();
  }
}

__attribute__((noinline)) void small_frozen_convs(const at::Tensor& w) {
  for (int i = 0; i < kCalls; i++) {
    at::Tensor x = at::randn({4, 8, 8, 8}).requires_grad_(true);  // 8 KiB not kept per call
    at::conv2d(x, w, {}, 1, 1).sum().backward();
  }
}

}  // namespace

int main() {
  at::manual_seed(0);
  at::Tensor w = at::randn({8, 8, 3, 3});
  small_frozen_convs(w);
  large_frozen_convs(w);
  auto get_stats = reinterpret_cast<int (*)(memsave_stats*, size_t)>(dlsym(RTLD_DEFAULT, "memsave_get_stats"));
  memsave_stats st{};
  if (!get_stats || get_stats(&st, sizeof st) != 0) {
    std::printf("stats unavailable\n");
    return 1;
  }
  std::printf("stats conv_substituted=%llu conv_passthrough=%llu conv_fallbacks=%llu bytes_kept=%llu bytes_stock=%llu "
              "cpu_peak_bytes=%llu\n",
              (unsigned long long)st.substituted[MEMSAVE_FAMILY_CONV], (unsigned long long)st.passthrough[MEMSAVE_FAMILY_CONV],
              (unsigned long long)st.fallbacks[MEMSAVE_FAMILY_CONV], (unsigned long long)st.bytes_kept,
              (unsigned long long)st.bytes_stock, (unsigned long long)st.cpu_peak_bytes);
  return 0;
}
