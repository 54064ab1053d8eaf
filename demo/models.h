// SPDX-License-Identifier: MIT
// models.h: the networks of the demo and the scenario tests, written with LibTorch's C++
// frontend: ResNet-18/50, VGG-11/16, MobileNetV2, a small transformer encoder, a LLaMA-style
// MLP stack and a GELU transformer encoder.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

namespace memsave_demo {

// What every model gives the scenarios: a forward pass, and its parameters grouped by the
// role they play in selective differentiation.
struct Model : torch::nn::Module {
  virtual torch::Tensor forward(torch::Tensor x) = 0;
  // The first block (surgical fine-tuning trains only these).
  virtual std::vector<torch::Tensor> stem_parameters() = 0;
  // The classifier (a head-only fine-tune trains only these).
  virtual std::vector<torch::Tensor> head_parameters() = 0;
  // Normalisation parameters (batch norm, layer norm).
  virtual std::vector<torch::Tensor> norm_parameters();
  // Every bias.
  std::vector<torch::Tensor> bias_parameters();
  // The input the model takes: images (N, 3, S, S), or token ids (N, S) for the transformer.
  virtual torch::Tensor make_input(int64_t batch, int64_t size) = 0;
  virtual int64_t classes() const { return 10; }
  // Whether the input itself is differentiable (images are; token ids are not).
  virtual bool input_is_image() const { return true; }
  // Intermediate feature maps for style transfer (VGG only).
  virtual std::vector<torch::Tensor> features(torch::Tensor x);
};

// "resnet18", "resnet50", "vgg11", "vgg16", "mobilenet_v2", "transformer", "llama",
// "gelu_encoder"; nullptr for an unknown name.
std::shared_ptr<Model> make_model(const std::string& name);
const std::vector<std::string>& model_names();

}  // namespace memsave_demo
