// SPDX-License-Identifier: MIT
// scenarios.h: the selective-differentiation workloads of the demo, callable from the demo
// program and from the tests.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

namespace memsave_demo {

struct ScenarioOptions {
  std::string scenario = "adversarial";
  std::string model = "resnet18";
  int64_t batch = 16;
  int64_t size = 128;  // image side, or sequence length for the transformer
  int64_t steps = 3;
  // Called once the model, data and optimiser exist, just before the first step: the
  // tests reset the peak here, so that they measure what training adds.
  std::function<void()> before_first_step;
  // Called after every backward with the gradients the step computed (the trainable
  // parameters', or the input's): the demo prints a digest of their bytes.
  std::function<void(const std::vector<at::Tensor>&)> after_backward;
  // A saved TorchScript module to use instead of `model` (memsave-demo --torchscript).
  std::string torchscript;
};

// Scenarios:
//   full        everything trainable (the control: libmemsave must not cost memory)
//   head        only the classifier trainable; builds no graph through the backbone even in
//               stock (the control for surgical)
//   surgical    only the first block trainable: gradients flow through the frozen rest
//   bitfit      only biases trainable
//   norm        only normalisation parameters trainable
//   adversarial frozen model in eval mode, projected-gradient steps on the input
//   adversarial_train  the same with the model in train mode (batch norm uses batch statistics)
//   style       neural style transfer: frozen VGG features, the image is optimised
const std::vector<std::string>& scenario_names();

// Runs the scenario from a fixed seed and returns the loss of each step. Throws
// c10::Error (TORCH_CHECK) for an unknown name or a model the scenario cannot use.
std::vector<double> run_scenario(const ScenarioOptions& o);

}  // namespace memsave_demo
