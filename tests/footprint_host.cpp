// SPDX-License-Identifier: MIT
// footprint_host N B C S: an unmodified LibTorch host with a known activation footprint, for
// the agreement test (tests/test_cli.sh). A chain of N frozen 1x1 convolutions (C to C
// channels, no padding: no im2col buffer) on x of shape (B, C, S, S), which needs a gradient;
// then backward of the sum. With act = B*C*S*S*4 bytes and W = N*C*C*4 bytes of weights:
//   stock keeps every convolution's input: at the start of backward x and the N outputs are
//     alive, and the first backward step adds the contiguous output gradient and the input
//     gradient: peak = (N + 3) act + W;
//   libmemsave keeps no input: x, the last output, and in each backward step the output
//     gradient and the input gradient: peak = 4 act + W, whatever N (the input's stand-in,
//     hooks/ops/conv.cpp Note [Stand-in], is an untouched mapping outside the tensor-byte
//     count: Note [Untouched stand-in] in hooks/core/standin.h).
// Prints one line for the test: "footprint act=... weights=...".
#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include <cstdio>
#include <cstdlib>

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: footprint_host N B C S\n");
    return 2;
  }
  const int64_t n = std::atoll(argv[1]), b = std::atoll(argv[2]), c = std::atoll(argv[3]), s = std::atoll(argv[4]);
  at::manual_seed(0);
  std::vector<at::Tensor> weights;
  for (int64_t i = 0; i < n; i++) weights.push_back(at::randn({c, c, 1, 1}));
  at::Tensor x = at::randn({b, c, s, s}).requires_grad_(true);
  at::Tensor h = x;
  for (const auto& w : weights) h = at::conv2d(h, w);
  h.sum().backward();
  std::printf("footprint act=%lld weights=%lld\n", (long long)(b * c * s * s * 4), (long long)(n * c * c * 4));
  return 0;
}
