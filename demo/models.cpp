// SPDX-License-Identifier: MIT
// models.cpp: ResNet-18/50, VGG-11/16, MobileNetV2 and a small transformer encoder, shaped
// like torchvision's (in-place ReLU, conv-bn-relu blocks, residual adds, max pool, global
// average pool, linear head), so that the demo exercises the operators real models use; and
// the two transformer stacks of bench/transformer_case.py (a LLaMA-style MLP stack, a GELU
// encoder), on token embeddings, for the recipe family's consumers of C++ torch::nn::Linear.
#include "models.h"

namespace nn = torch::nn;

namespace memsave_demo {

std::vector<torch::Tensor> Model::norm_parameters() {
  std::vector<torch::Tensor> out;
  for (const auto& m : modules(/*include_self=*/false)) {
    if (m->as<nn::BatchNorm2d>() || m->as<nn::LayerNorm>())
      for (auto& p : m->parameters(/*recurse=*/false)) out.push_back(p);
  }
  return out;
}

std::vector<torch::Tensor> Model::bias_parameters() {
  std::vector<torch::Tensor> out;
  for (const auto& kv : named_parameters()) {
    const std::string& name = kv.key();
    if (name.size() >= 4 && name.compare(name.size() - 4, 4, "bias") == 0) out.push_back(kv.value());
  }
  return out;
}

std::vector<torch::Tensor> Model::features(torch::Tensor) {
  TORCH_CHECK(false, "this model has no feature extractor for style transfer");
}

namespace {

nn::Conv2d conv(int64_t in, int64_t out, int64_t k, int64_t stride = 1, int64_t groups = 1, bool bias = false) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, k).stride(stride).padding(k / 2).groups(groups).bias(bias));
}

nn::ReLU relu() { return nn::ReLU(nn::ReLUOptions().inplace(true)); }

// ---- ResNet -------------------------------------------------------------------------------

struct BlockImpl : nn::Module {
  nn::Sequential body{nullptr};
  nn::Sequential shortcut{nullptr};
  BlockImpl(int64_t in, int64_t mid, int64_t out, int64_t stride, bool bottleneck) {
    body = nn::Sequential();
    if (bottleneck) {
      body->push_back(conv(in, mid, 1));
      body->push_back(nn::BatchNorm2d(mid));
      body->push_back(relu());
      body->push_back(conv(mid, mid, 3, stride));
      body->push_back(nn::BatchNorm2d(mid));
      body->push_back(relu());
      body->push_back(conv(mid, out, 1));
      body->push_back(nn::BatchNorm2d(out));
    } else {
      body->push_back(conv(in, out, 3, stride));
      body->push_back(nn::BatchNorm2d(out));
      body->push_back(relu());
      body->push_back(conv(out, out, 3));
      body->push_back(nn::BatchNorm2d(out));
    }
    register_module("body", body);
    if (stride != 1 || in != out) {
      shortcut = nn::Sequential(conv(in, out, 1, stride), nn::BatchNorm2d(out));
      register_module("shortcut", shortcut);
    }
  }
  torch::Tensor forward(torch::Tensor x) {
    torch::Tensor identity = shortcut ? shortcut->forward(x) : x;
    torch::Tensor y = body->forward(x);
    y += identity;
    return torch::relu_(y);
  }
};
TORCH_MODULE(Block);

struct ResNet : Model {
  nn::Sequential stem{nullptr}, layers{nullptr};
  nn::Linear fc{nullptr};
  ResNet(std::vector<int64_t> depths, bool bottleneck) {
    stem = register_module("stem", nn::Sequential(nn::Conv2d(nn::Conv2dOptions(3, 64, 7).stride(2).padding(3).bias(false)),
                                                  nn::BatchNorm2d(64), relu(),
                                                  nn::MaxPool2d(nn::MaxPool2dOptions(3).stride(2).padding(1))));
    layers = nn::Sequential();
    const int64_t expansion = bottleneck ? 4 : 1;
    int64_t in = 64;
    for (size_t stage = 0; stage < depths.size(); stage++) {
      int64_t mid = 64 << stage, out = mid * expansion;
      for (int64_t i = 0; i < depths[stage]; i++) {
        layers->push_back(Block(in, mid, out, (i == 0 && stage > 0) ? 2 : 1, bottleneck));
        in = out;
      }
    }
    register_module("layers", layers);
    fc = register_module("fc", nn::Linear(in, classes()));
  }
  torch::Tensor forward(torch::Tensor x) override {
    x = layers->forward(stem->forward(x));
    x = torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1);
    return fc->forward(x);
  }
  std::vector<torch::Tensor> stem_parameters() override { return stem->parameters(); }
  std::vector<torch::Tensor> head_parameters() override { return fc->parameters(); }
  torch::Tensor make_input(int64_t batch, int64_t size) override { return torch::rand({batch, 3, size, size}); }
};

// ---- VGG ------------------------------------------------------------------------------------

struct Vgg : Model {
  nn::Sequential body{nullptr}, classifier{nullptr};
  std::vector<size_t> taps;  // indices in body after which style features are taken
  explicit Vgg(const std::vector<int64_t>& cfg) {
    body = nn::Sequential();
    int64_t in = 3;
    for (int64_t c : cfg) {
      if (c == 0) {
        taps.push_back(body->size() - 1);  // the ReLU before each pool
        body->push_back(nn::MaxPool2d(nn::MaxPool2dOptions(2).stride(2)));
        continue;
      }
      body->push_back(conv(in, c, 3, 1, 1, /*bias=*/true));
      body->push_back(relu());
      in = c;
    }
    register_module("body", body);
    classifier = register_module(
        "classifier", nn::Sequential(nn::Linear(in * 4, 256), relu(), nn::Dropout(0.5), nn::Linear(256, classes())));
  }
  torch::Tensor forward(torch::Tensor x) override {
    x = torch::adaptive_avg_pool2d(body->forward(x), {2, 2}).flatten(1);
    return classifier->forward(x);
  }
  std::vector<torch::Tensor> features(torch::Tensor x) override {
    std::vector<torch::Tensor> out;
    for (size_t i = 0; i < body->size(); i++) {
      x = body[i]->as<nn::Conv2d>()     ? body[i]->as<nn::Conv2d>()->forward(x)
          : body[i]->as<nn::ReLU>()     ? body[i]->as<nn::ReLU>()->forward(x)
                                        : body[i]->as<nn::MaxPool2d>()->forward(x);
      if (std::find(taps.begin(), taps.end(), i) != taps.end()) out.push_back(x);
    }
    return out;
  }
  std::vector<torch::Tensor> stem_parameters() override { return body[0]->parameters(); }
  std::vector<torch::Tensor> head_parameters() override { return classifier->parameters(); }
  torch::Tensor make_input(int64_t batch, int64_t size) override { return torch::rand({batch, 3, size, size}); }
};

// ---- MobileNetV2 ----------------------------------------------------------------------------

nn::Sequential conv_bn(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t groups, bool act) {
  nn::Sequential s(conv(in, out, k, stride, groups), nn::BatchNorm2d(out));
  if (act) s->push_back(nn::ReLU6(nn::ReLU6Options().inplace(true)));
  return s;
}

struct InvertedResidualImpl : nn::Module {
  nn::Sequential body{nullptr};
  bool residual;
  InvertedResidualImpl(int64_t in, int64_t out, int64_t stride, int64_t expand) : residual(stride == 1 && in == out) {
    const int64_t hidden = in * expand;
    body = nn::Sequential();
    if (expand != 1) body->extend(*conv_bn(in, hidden, 1, 1, 1, true));
    body->extend(*conv_bn(hidden, hidden, 3, stride, hidden, true));  // depthwise
    body->extend(*conv_bn(hidden, out, 1, 1, 1, false));
    register_module("body", body);
  }
  torch::Tensor forward(torch::Tensor x) { return residual ? x + body->forward(x) : body->forward(x); }
};
TORCH_MODULE(InvertedResidual);

struct MobileNetV2 : Model {
  nn::Sequential stem{nullptr}, layers{nullptr}, classifier{nullptr};
  MobileNetV2() {
    stem = register_module("stem", conv_bn(3, 32, 3, 2, 1, true));
    layers = nn::Sequential();
    const int64_t cfg[][4] = {{1, 16, 1, 1}, {6, 24, 2, 2}, {6, 32, 3, 2}, {6, 64, 4, 2},
                              {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
    int64_t in = 32;
    for (const auto& c : cfg)
      for (int64_t i = 0; i < c[2]; i++) {
        layers->push_back(InvertedResidual(in, c[1], i == 0 ? c[3] : 1, c[0]));
        in = c[1];
      }
    layers->extend(*conv_bn(in, 1280, 1, 1, 1, true));
    register_module("layers", layers);
    classifier = register_module("classifier", nn::Sequential(nn::Dropout(0.2), nn::Linear(1280, classes())));
  }
  torch::Tensor forward(torch::Tensor x) override {
    x = layers->forward(stem->forward(x));
    return classifier->forward(torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1));
  }
  std::vector<torch::Tensor> stem_parameters() override { return stem->parameters(); }
  std::vector<torch::Tensor> head_parameters() override { return classifier->parameters(); }
  torch::Tensor make_input(int64_t batch, int64_t size) override { return torch::rand({batch, 3, size, size}); }
};

// ---- Transformer encoder --------------------------------------------------------------------

struct Transformer : Model {
  static constexpr int64_t kVocab = 1000, kModel = 128, kHeads = 4, kLayers = 4;
  nn::Embedding embed{nullptr};
  nn::TransformerEncoder encoder{nullptr};
  nn::Linear head{nullptr};
  Transformer() {
    embed = register_module("embed", nn::Embedding(kVocab, kModel));
    encoder = register_module(
        "encoder", nn::TransformerEncoder(nn::TransformerEncoderOptions(
                                              nn::TransformerEncoderLayerOptions(kModel, kHeads).dim_feedforward(512).dropout(0.1),
                                              kLayers)));
    head = register_module("head", nn::Linear(kModel, classes()));
  }
  // Token ids (N, S) in; the encoder takes (S, N, E).
  torch::Tensor forward(torch::Tensor tokens) override {
    torch::Tensor x = embed->forward(tokens).transpose(0, 1);
    return head->forward(encoder->forward(x).mean(0));
  }
  std::vector<torch::Tensor> stem_parameters() override { return embed->parameters(); }
  std::vector<torch::Tensor> head_parameters() override { return head->parameters(); }
  torch::Tensor make_input(int64_t batch, int64_t size) override { return torch::randint(0, kVocab, {batch, size}); }
  bool input_is_image() const override { return false; }
};

// ---- LLaMA-style MLP stack and GELU encoder (bench/transformer_case.py's models) -------------

// Token ids (N, S) in; a linear head on the mean over the sequence.
struct TokenModel : Model {
  static constexpr int64_t kVocab = 1000, kModel = 256;
  nn::Embedding embed{nullptr};
  nn::Linear head{nullptr};
  TokenModel() {
    embed = register_module("embed", nn::Embedding(kVocab, kModel));
    head = register_module("head", nn::Linear(kModel, classes()));
  }
  std::vector<torch::Tensor> stem_parameters() override { return embed->parameters(); }
  std::vector<torch::Tensor> head_parameters() override { return head->parameters(); }
  torch::Tensor make_input(int64_t batch, int64_t size) override { return torch::randint(0, kVocab, {batch, size}); }
  bool input_is_image() const override { return false; }
};

// LLaMA's RMS norm, written out as LLaMA's code writes it: x * rsqrt(mean(x^2) + eps) * w.
struct RmsNormImpl : nn::Module {
  torch::Tensor weight;
  double eps;
  RmsNormImpl(int64_t d, double eps) : eps(eps) { weight = register_parameter("weight", torch::ones({d})); }
  torch::Tensor forward(const torch::Tensor& x) { return x * torch::rsqrt(x.pow(2).mean(-1, true) + eps) * weight; }
};
TORCH_MODULE(RmsNorm);

// x + down(silu(gate(norm(x))) * up(norm(x))), no bias.
struct LlamaMlpBlockImpl : nn::Module {
  RmsNorm norm{nullptr};
  nn::Linear gate{nullptr}, up{nullptr}, down{nullptr};
  LlamaMlpBlockImpl(int64_t d, int64_t hidden) {
    norm = register_module("norm", RmsNorm(d, 1e-6));
    gate = register_module("gate", nn::Linear(nn::LinearOptions(d, hidden).bias(false)));
    up = register_module("up", nn::Linear(nn::LinearOptions(d, hidden).bias(false)));
    down = register_module("down", nn::Linear(nn::LinearOptions(hidden, d).bias(false)));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    const torch::Tensor h = norm->forward(x);
    return x + down->forward(torch::silu(gate->forward(h)) * up->forward(h));
  }
};
TORCH_MODULE(LlamaMlpBlock);

// Four LLaMA-style MLP blocks, d_model 256, hidden 688 (N, S, E).
struct Llama : TokenModel {
  std::vector<LlamaMlpBlock> blocks;
  Llama() {
    for (int i = 0; i < 4; i++) blocks.push_back(register_module("block" + std::to_string(i), LlamaMlpBlock(kModel, 688)));
  }
  torch::Tensor forward(torch::Tensor tokens) override {
    torch::Tensor x = embed->forward(tokens);
    for (auto& b : blocks) x = b->forward(x);
    return head->forward(x.mean(1));
  }
  std::vector<torch::Tensor> norm_parameters() override {
    std::vector<torch::Tensor> out;
    for (auto& b : blocks) out.push_back(b->norm->weight);
    return out;
  }
};

// nn::TransformerEncoderLayer(256, 4 heads, ff 1024, GELU, dropout 0.1), 4 layers; (S, N, E).
struct GeluEncoder : TokenModel {
  nn::TransformerEncoder encoder{nullptr};
  GeluEncoder() {
    encoder = register_module(
        "encoder", nn::TransformerEncoder(nn::TransformerEncoderOptions(nn::TransformerEncoderLayerOptions(kModel, 4)
                                                                            .dim_feedforward(1024)
                                                                            .dropout(0.1)
                                                                            .activation(torch::kGELU),
                                                                        4)));
  }
  torch::Tensor forward(torch::Tensor tokens) override {
    torch::Tensor x = embed->forward(tokens).transpose(0, 1);
    return head->forward(encoder->forward(x).mean(0));
  }
};

}  // namespace

const std::vector<std::string>& model_names() {
  static const std::vector<std::string> names{"resnet18",    "resnet50", "vgg11", "vgg16", "mobilenet_v2",
                                              "transformer", "llama",    "gelu_encoder"};
  return names;
}

std::shared_ptr<Model> make_model(const std::string& name) {
  if (name == "resnet18") return std::make_shared<ResNet>(std::vector<int64_t>{2, 2, 2, 2}, false);
  if (name == "resnet50") return std::make_shared<ResNet>(std::vector<int64_t>{3, 4, 6, 3}, true);
  if (name == "vgg11") return std::make_shared<Vgg>(std::vector<int64_t>{64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0});
  if (name == "vgg16")
    return std::make_shared<Vgg>(
        std::vector<int64_t>{64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0});
  if (name == "mobilenet_v2") return std::make_shared<MobileNetV2>();
  if (name == "transformer") return std::make_shared<Transformer>();
  if (name == "llama") return std::make_shared<Llama>();
  if (name == "gelu_encoder") return std::make_shared<GeluEncoder>();
  return nullptr;
}

}  // namespace memsave_demo
