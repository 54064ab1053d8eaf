// SPDX-License-Identifier: MIT
// scenarios.cpp: deterministic training loops (fixed seed, synthetic data made here) for
// each selective-differentiation scenario.
#include "scenarios.h"

#include "models.h"
#include "torchscript.h"

namespace F = torch::nn::functional;

namespace memsave_demo {

const std::vector<std::string>& scenario_names() {
  static const std::vector<std::string> names{"full", "head", "surgical", "bitfit", "norm", "adversarial", "adversarial_train", "style"};
  return names;
}

namespace {

void freeze_all_but(Model& m, const std::vector<torch::Tensor>& trainable) {
  for (auto& p : m.parameters()) p.set_requires_grad(false);
  for (auto t : trainable) t.set_requires_grad(true);
}

// One SGD step on the trainable parameters; returns the loss.
double train_steps(Model& m, const std::vector<torch::Tensor>& trainable, const ScenarioOptions& o,
                   std::vector<double>& losses) {
  freeze_all_but(m, trainable);
  m.train();
  torch::optim::SGD opt(trainable, torch::optim::SGDOptions(0.01).momentum(0.9));
  torch::Tensor input = m.make_input(o.batch, o.size);
  torch::Tensor target = torch::randint(0, m.classes(), {o.batch});
  if (o.before_first_step) o.before_first_step();
  for (int64_t step = 0; step < o.steps; step++) {
    opt.zero_grad();
    torch::Tensor loss = F::cross_entropy(m.forward(input), target);
    loss.backward();
    if (o.after_backward) {
      std::vector<torch::Tensor> grads;
      for (const auto& t : trainable) grads.push_back(t.grad());
      o.after_backward(grads);
    }
    opt.step();
    losses.push_back(loss.item<double>());
  }
  return losses.back();
}

void adversarial(Model& m, const ScenarioOptions& o, bool train_mode, std::vector<double>& losses) {
  TORCH_CHECK(m.input_is_image(), "adversarial: expected an image model, got ", o.model);
  freeze_all_but(m, {});
  m.train(train_mode);
  torch::Tensor image = m.make_input(o.batch, o.size);
  torch::Tensor target = torch::randint(0, m.classes(), {o.batch});
  torch::Tensor delta = torch::zeros_like(image).set_requires_grad(true);
  const double eps = 8.0 / 255, alpha = 2.0 / 255;
  if (o.before_first_step) o.before_first_step();
  for (int64_t step = 0; step < o.steps; step++) {
    torch::Tensor loss = F::cross_entropy(m.forward(image + delta), target);
    loss.backward();
    if (o.after_backward) o.after_backward({delta.grad()});
    {
      torch::NoGradGuard no_grad;
      delta.add_(delta.grad().sign() * alpha).clamp_(-eps, eps);
      delta.grad().zero_();
    }
    losses.push_back(loss.item<double>());
  }
}

torch::Tensor gram(const torch::Tensor& f) {
  const int64_t n = f.size(0), c = f.size(1);
  torch::Tensor flat = f.reshape({n, c, -1});
  return torch::bmm(flat, flat.transpose(1, 2)) / static_cast<double>(flat.size(2));
}

void style(Model& m, const ScenarioOptions& o, std::vector<double>& losses) {
  TORCH_CHECK(o.model.rfind("vgg", 0) == 0, "style: expected a VGG model, got ", o.model);
  freeze_all_but(m, {});
  m.eval();
  torch::Tensor content = m.make_input(o.batch, o.size), style_image = m.make_input(1, o.size);
  std::vector<torch::Tensor> content_f, style_g;
  {
    torch::NoGradGuard no_grad;
    content_f = m.features(content);
    for (auto& f : m.features(style_image)) style_g.push_back(gram(f));
  }
  torch::Tensor image = content.clone().set_requires_grad(true);
  torch::optim::Adam opt({image}, torch::optim::AdamOptions(0.01));
  if (o.before_first_step) o.before_first_step();
  for (int64_t step = 0; step < o.steps; step++) {
    opt.zero_grad();
    std::vector<torch::Tensor> f = m.features(image);
    torch::Tensor loss = F::mse_loss(f.back(), content_f.back());
    for (size_t i = 0; i < f.size(); i++) loss = loss + 1e3 * F::mse_loss(gram(f[i]), style_g[i].expand_as(gram(f[i])));
    loss.backward();
    if (o.after_backward) o.after_backward({image.grad()});
    opt.step();
    losses.push_back(loss.item<double>());
  }
}

}  // namespace

std::vector<double> run_scenario(const ScenarioOptions& o) {
  torch::manual_seed(0);
  std::shared_ptr<Model> m = o.torchscript.empty() ? make_model(o.model) : load_torchscript_model(o.torchscript);
  TORCH_CHECK(m, "unknown model ", o.model);
  std::vector<double> losses;
  const std::string& s = o.scenario;
  if (s == "full") train_steps(*m, m->parameters(), o, losses);
  else if (s == "head") train_steps(*m, m->head_parameters(), o, losses);
  else if (s == "surgical") train_steps(*m, m->stem_parameters(), o, losses);
  else if (s == "bitfit") train_steps(*m, m->bias_parameters(), o, losses);
  else if (s == "norm") {
    auto norm = m->norm_parameters();
    TORCH_CHECK(!norm.empty(), "norm: ", o.model, " has no normalisation layers");
    train_steps(*m, norm, o, losses);
  } else if (s == "adversarial") adversarial(*m, o, /*train_mode=*/false, losses);
  else if (s == "adversarial_train") adversarial(*m, o, /*train_mode=*/true, losses);
  else if (s == "style") style(*m, o, losses);
  else TORCH_CHECK(false, "unknown scenario ", s);
  return losses;
}

}  // namespace memsave_demo
