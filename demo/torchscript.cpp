// SPDX-License-Identifier: MIT
// torchscript.cpp: a saved TorchScript module (torch.jit.trace or torch.jit.script in Python,
// torch.jit.save) as a demo model, so that the scenarios fine-tune it in C++ the way a
// LibTorch program loads one with torch::jit::load (issue 12).
#include "torchscript.h"

#include <torch/script.h>

namespace memsave_demo {

namespace {

// The class name of a submodule, without its namespace or TorchScript's mangling
// ("__torch__.torch.nn.modules.batchnorm.___torch_mangle_3.BatchNorm2d" -> "BatchNorm2d").
std::string class_name(const torch::jit::Module& m) {
  const auto& name = m.type()->name();
  return name ? name->name() : std::string();
}

bool is_norm(const std::string& cls) {
  return cls.find("BatchNorm") != std::string::npos || cls.find("LayerNorm") != std::string::npos ||
         cls.find("GroupNorm") != std::string::npos;
}

class ScriptedModel : public Model {
 public:
  explicit ScriptedModel(const std::string& path) : module_(torch::jit::load(path)) {
    // The module's own tensors, registered under this Module's names ('.' is not allowed), so
    // that the scenarios' parameters() and requires_grad switches act on them.
    for (const auto& p : module_.named_parameters(/*recurse=*/true)) {
      std::string name = p.name;
      for (char& c : name)
        if (c == '.') c = '_';
      register_parameter(name, p.value, p.value.requires_grad());
    }
    // Roles by submodule, in definition order: the first module with parameters (and a norm
    // right after it) is the stem, the last one the head.
    std::vector<std::pair<std::string, std::vector<torch::Tensor>>> owners;
    for (const auto& sub : module_.named_modules()) {
      std::vector<torch::Tensor> direct;
      for (const auto& p : sub.value.named_parameters(/*recurse=*/false)) direct.push_back(p.value);
      if (direct.empty()) continue;
      const std::string cls = class_name(sub.value);
      if (is_norm(cls)) norm_.insert(norm_.end(), direct.begin(), direct.end());
      owners.emplace_back(cls, std::move(direct));
    }
    TORCH_CHECK(!owners.empty(), path, ": the module has no parameters");
    stem_ = owners.front().second;
    if (owners.size() > 1 && is_norm(owners[1].first))
      stem_.insert(stem_.end(), owners[1].second.begin(), owners[1].second.end());
    head_ = owners.back().second;
    // The number of classes: the head's output features when it is a linear layer.
    TORCH_CHECK(head_.front().dim() == 2, path, ": expected a linear classifier as the last layer");
    classes_ = head_.front().size(0);
  }

  torch::Tensor forward(torch::Tensor x) override { return module_.forward({x}).toTensor(); }
  std::vector<torch::Tensor> stem_parameters() override { return stem_; }
  std::vector<torch::Tensor> head_parameters() override { return head_; }
  std::vector<torch::Tensor> norm_parameters() override { return norm_; }
  torch::Tensor make_input(int64_t batch, int64_t size) override { return torch::randn({batch, 3, size, size}); }
  int64_t classes() const override { return classes_; }
  void train(bool on) override {
    module_.train(on);
    Model::train(on);
  }

 private:
  torch::jit::Module module_;
  std::vector<torch::Tensor> stem_, head_, norm_;
  int64_t classes_ = 0;
};

}  // namespace

std::shared_ptr<Model> load_torchscript_model(const std::string& path) { return std::make_shared<ScriptedModel>(path); }

}  // namespace memsave_demo
