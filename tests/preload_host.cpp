// SPDX-License-Identifier: MIT
// preload_host: an unmodified LibTorch program (it does not link libmemsave) for the preload
// tests. It runs a frozen convolution whose input requires grad and prints the grad_fn's
// name, whether the hooks say they are active, and a checksum of the input gradient.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/function.h>
#include <torch/version.h>

#include <dlfcn.h>

#include <cstdio>
#include <cstring>

int main() {
#if TORCH_VERSION_MAJOR >= 2
  // Debian 13's LibTorch 2.6: mkldnn's fp32 conv backward-data (this 3->8, stride 1 conv is
  // one of the affected shapes) varies from run to run in stock itself on some CPUs (issue
  // 7), and the checksums of two processes are compared. Off, stock is deterministic.
  at::globalContext().setUserEnabledMkldnn(false);
#endif
  at::manual_seed(0);
  at::Tensor x = at::randn({2, 3, 16, 16}).requires_grad_(true);
  at::Tensor w = at::randn({8, 3, 3, 3});
  at::Tensor y = at::conv2d(x, w, {}, 1, 1);
  y.pow(2).sum().backward();
  // The C ABI is reached only if it is in the process, as a host would probe for it.
  auto is_active = reinterpret_cast<int (*)()>(dlsym(RTLD_DEFAULT, "memsave_is_active"));
  at::Tensor g = x.grad().contiguous();
  uint64_t h = 1469598103934665603ull;  // FNV-1a over the gradient's bytes
  const auto* p = static_cast<const unsigned char*>(g.data_ptr());
  for (int64_t i = 0; i < g.numel() * 4; i++) h = (h ^ p[i]) * 1099511628211ull;
  std::printf("grad_fn %s\nactive %d\nchecksum %016llx\n", y.grad_fn()->name().c_str(), is_active ? is_active() : -1,
              (unsigned long long)h);
  return 0;
}
