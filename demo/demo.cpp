// SPDX-License-Identifier: MIT
// memsave-demo: adversarial-example steps on a small frozen CNN. Only the input image needs
// a gradient, so stock keeps every convolution's input for backward and libmemsave keeps
// none. Deterministic: fixed seed, synthetic data, one loss line per step.
//
//   build/memsave-demo [--batch N] [--size S] [--steps K] [--width C] [--depth D]
#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

struct Options {
  int64_t batch = 16, size = 64, steps = 3, width = 32, depth = 8;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    int64_t v = std::atoll(argv[i + 1]);
    if (!std::strcmp(argv[i], "--batch")) o.batch = v;
    else if (!std::strcmp(argv[i], "--size")) o.size = v;
    else if (!std::strcmp(argv[i], "--steps")) o.steps = v;
    else if (!std::strcmp(argv[i], "--width")) o.width = v;
    else if (!std::strcmp(argv[i], "--depth")) o.depth = v;
    else {
      std::fprintf(stderr, "memsave-demo: unknown option %s\n", argv[i]);
      std::exit(2);
    }
  }
  return o;
}

// A plain stack of frozen 3x3 convolutions with a linear read-out. (The fuller scenarios
// with batch norm, ReLU and pooling come with those families.)
struct FrozenCnn : torch::nn::Module {
  torch::nn::Sequential body;
  torch::nn::Linear head{nullptr};
  FrozenCnn(int64_t width, int64_t depth) {
    body->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(3, width, 3).padding(1)));
    for (int64_t i = 1; i < depth; i++)
      body->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(width, width, 3).padding(1)));
    register_module("body", body);
    head = register_module("head", torch::nn::Linear(width, 10));
  }
  torch::Tensor forward(torch::Tensor x) { return head(body->forward(x).mean({2, 3})); }
};

}  // namespace

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  torch::manual_seed(0);
  torch::set_num_threads(1);  // the same reduction order in every run
  FrozenCnn model(o.width, o.depth);
  model.eval();
  for (auto& p : model.parameters()) p.set_requires_grad(false);

  torch::Tensor image = torch::rand({o.batch, 3, o.size, o.size});
  torch::Tensor target = torch::randint(0, 10, {o.batch});
  torch::Tensor delta = torch::zeros_like(image).set_requires_grad(true);
  const double eps = 8.0 / 255, alpha = 2.0 / 255;
  for (int64_t step = 0; step < o.steps; step++) {
    torch::Tensor loss = torch::nn::functional::cross_entropy(model.forward(image + delta), target);
    loss.backward();
    {
      torch::NoGradGuard no_grad;
      delta.add_(delta.grad().sign() * alpha).clamp_(-eps, eps);
      delta.grad().zero_();
    }
    std::printf("step %lld loss %.9f\n", static_cast<long long>(step), loss.item<double>());
  }
  return 0;
}
