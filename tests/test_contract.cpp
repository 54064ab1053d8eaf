// SPDX-License-Identifier: MIT
// test_contract: the autograd contract every libmemsave node keeps, checked once for every
// family's operators (one row each): the node is ours when the hooks are active, and none is
// built under no_grad or inference mode, nor ours when disabled; a second backward raises
// stock's error; retain_graph, double backward and an undefined incoming gradient behave as
// in stock; an in-place change of a tensor ours keeps raises stock's version error, and of
// an input ours no longer keeps does not (the documented difference); forward-mode AD goes
// to stock, counted; saved-tensor hooks see exactly the bytes ours reports as kept. The
// families' own files keep their equality grids and what is special to them.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/engine.h>
#include <torch/csrc/autograd/forward_grad.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/saved_variable_hooks.h>

#include <atomic>
#include <cctype>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "testing.h"

namespace {

using namespace memsave_test;  // the harness: tests/testing.h

// What a row's forward works on: `x`, a leaf that needs grad; `h = x * 1`, the non-leaf the
// operator is applied to (in-place forms may change it); `frozen`, arguments that need no
// grad; `outs`, what the operator returned (the result first).
struct Call {
  at::Tensor x, h;
  std::vector<at::Tensor> frozen;
  std::vector<at::Tensor> outs;
  const at::Tensor& y() const { return outs.at(0); }
};

struct Row {
  std::string name;
  std::string stock_node, node;  // grad_fn names on the CPU
  std::vector<int64_t> sizes;    // of x
  std::function<std::vector<at::Tensor>()> frozen;
  std::function<std::vector<at::Tensor>(Call&)> forward;
  // Changes in place a tensor that our node keeps as stock's does (null where ours keeps no
  // such tensor): backward must then raise stock's version error.
  std::function<void(Call&)> modify_kept;
  bool keeps = true;      // our node keeps tensors: saved-tensor hooks must see them
  bool cpu_only = false;  // the operator reaches another kernel on CUDA
  // Stock keeps the input and ours does not (a documented difference): changing the input in
  // place after the call raises in stock only.
  bool drops_input = false;
  int family = -1;  // MEMSAVE_FAMILY_*, from the name below
};

// The arguments of one call and the call itself, with the random stream seeded for it.
Call prepare(const Row& row) {
  at::manual_seed(5);
  Call c;
  c.x = to_test_device(at::randn(row.sizes)).requires_grad_(true);
  c.h = c.x * 1;
  c.frozen = row.frozen ? row.frozen() : std::vector<at::Tensor>{};
  for (auto& t : c.frozen) t = to_test_device(t);
  return c;
}

Call call(const Row& row) {
  Call c = prepare(row);
  at::manual_seed(7);
  c.outs = row.forward(c);
  return c;
}

std::vector<at::Tensor> one(const at::Tensor& t) { return {t}; }
std::vector<at::Tensor> two(const std::tuple<at::Tensor, at::Tensor>& t) { return {std::get<0>(t), std::get<1>(t)}; }
void modify_input(Call& c) { c.h.add_(1); }
void modify_output(Call& c) { c.y().add_(1); }
void modify_first_frozen(Call& c) { c.frozen.at(0).add_(1); }

std::vector<Row> rows() {
  const std::vector<int64_t> image{2, 3, 6, 7};
  std::vector<Row> r;
  r.push_back({"conv2d", "ConvolutionBackward0", "MemsaveConvolutionBackward", image,
               [] { return std::vector<at::Tensor>{at::randn({4, 3, 3, 3}), at::randn({4})}; },
               [](Call& c) { return one(at::conv2d(c.h, c.frozen[0], c.frozen[1], 1, 1)); }, modify_first_frozen});
  r.push_back(
      {"batch_norm_eval", "NativeBatchNormBackward0", "MemsaveBatchNormBackward", image,
       [] {
         return std::vector<at::Tensor>{at::rand({3}) + 0.5, at::randn({3}), at::randn({3}), at::rand({3}) + 0.5};
       },
       [](Call& c) {
         const auto& f = c.frozen;
         return one(at::batch_norm(c.h, f[0], f[1], f[2], f[3], false, 0.1, 1e-5, true));
       },
       modify_first_frozen});
  // ReLU family: stock keeps the result of relu, relu_ and leaky_relu_, the input of the
  // out-of-place others, and a private clone for threshold_ and hardtanh_.
  r.push_back({"relu", "ReluBackward0", "MemsaveReluBackward", image, {},
               [](Call& c) { return one(at::relu(c.h)); }, modify_output});
  r.push_back({"relu_", "ReluBackward0", "MemsaveReluBackward", image, {},
               [](Call& c) { return one(at::relu_(c.h)); }, modify_output});
  r.push_back({"threshold", "ThresholdBackward0", "MemsaveThresholdBackward", image, {},
               [](Call& c) { return one(at::threshold(c.h, 0.5, -2.5)); }, modify_input});
  r.push_back({"threshold_", "ThresholdBackward1", "MemsaveThresholdBackward", image, {},
               [](Call& c) { return one(at::threshold_(c.h, 0.5, 7)); }, nullptr});
  r.push_back({"leaky_relu", "LeakyReluBackward0", "MemsaveLeakyReluBackward", image, {},
               [](Call& c) { return one(at::leaky_relu(c.h, 0.2)); }, modify_input});
  r.push_back({"leaky_relu_", "LeakyReluBackward1", "MemsaveLeakyReluBackward", image, {},
               [](Call& c) { return one(at::leaky_relu_(c.h, 0.2)); }, modify_output});
  r.push_back({"hardtanh", "HardtanhBackward0", "MemsaveHardtanhBackward", image, {},
               [](Call& c) { return one(at::hardtanh(c.h, -1, 1)); }, modify_input});
  r.push_back({"hardtanh_", "HardtanhBackward0", "MemsaveHardtanhBackward", image, {},
               [](Call& c) { return one(at::hardtanh_(c.h, -1, 1)); }, nullptr});
  r.push_back({"relu6", "HardtanhBackward0", "MemsaveHardtanhBackward", image, {},
               [](Call& c) { return one(at::relu6(c.h)); }, modify_input});
  // Pooling: ours keeps no input (a documented difference: changing it no longer raises);
  // max pooling keeps window offsets, or the indices it returned.
  r.push_back({"relu6_", "HardtanhBackward0", "MemsaveHardtanhBackward", image, {},
               [](Call& c) { return one(at::relu6_(c.h)); }, nullptr});
  r.push_back({"max_pool2d", "MaxPool2DWithIndicesBackward0", "MemsaveMaxPool2DBackward", image, {},
               [](Call& c) { return one(at::max_pool2d(c.h, {2})); }, nullptr});
  r.push_back({"max_pool2d_with_indices", "MaxPool2DWithIndicesBackward0", "MemsaveMaxPool2DBackward", image, {},
               [](Call& c) { return two(at::max_pool2d_with_indices(c.h, {2}, {2})); },
               [](Call& c) { c.outs.at(1).add_(0); }});
  r.push_back({"avg_pool2d", "AvgPool2DBackward0", "MemsaveAvgPool2DBackward", image, {},
               [](Call& c) { return one(at::avg_pool2d(c.h, {2})); }, nullptr, /*keeps=*/false});
  r.push_back({"adaptive_avg_pool2d", "AdaptiveAvgPool2DBackward0", "MemsaveAdaptiveAvgPool2DBackward", image, {},
               [](Call& c) { return one(at::adaptive_avg_pool2d(c.h, {3, 3})); }, nullptr, /*keeps=*/false});
#if TORCH_VERSION_MAJOR < 2
  // On 2.x stock's MeanBackward1 keeps only sizes: mean.dim goes to stock (passthrough).
  r.push_back({"mean_dim", "MeanBackward1", "MemsaveMeanBackward", image, {},
               [](Call& c) { return one(c.h.mean({2, 3})); }, nullptr, /*keeps=*/false});
#endif
  // Dropout: stock keeps its noise, which the host never sees. On CUDA, dropout is
  // native_dropout's fused kernel (the native_dropout row).
  r.push_back({"dropout", "MulBackward0", "MemsaveDropoutBackward", image, {},
               [](Call& c) { return one(at::dropout(c.h, 0.5, true)); }, nullptr, true, /*cpu_only=*/true});
  r.push_back({"dropout_", "MulBackward0", "MemsaveDropoutBackward", image, {},
               [](Call& c) { return one(at::dropout_(c.h, 0.5, true)); }, nullptr, true, /*cpu_only=*/true});
  r.push_back({"native_dropout", "NativeDropoutBackward0", "MemsaveNativeDropoutBackward", image, {},
               [](Call& c) { return two(at::native_dropout(c.h, 0.5, true)); }, nullptr});
  // Linear (MEMSAVE_OPS=all): stock keeps the weight for the input's gradient, as ours does.
  r.push_back({"linear", "AddmmBackward0", "MemsaveLinearBackward", {6, 7},
               [] { return std::vector<at::Tensor>{at::randn({5, 7}), at::randn({5})}; },
               [](Call& c) { return one(at::linear(c.h, c.frozen[0], c.frozen[1])); }, modify_first_frozen});
  for (Row& row : r) {
    const std::string& n = row.name;
    row.family = n == "conv2d"                             ? MEMSAVE_FAMILY_CONV
                 : n == "batch_norm_eval"                  ? MEMSAVE_FAMILY_BATCHNORM
                 : n == "linear"                           ? MEMSAVE_FAMILY_LINEAR
                 : n.find("dropout") != std::string::npos  ? MEMSAVE_FAMILY_DROPOUT
                 : n.find("pool") != std::string::npos || n == "mean_dim" ? MEMSAVE_FAMILY_POOL
                                                                           : MEMSAVE_FAMILY_RELU;
    row.drops_input = row.family == MEMSAVE_FAMILY_CONV || row.family == MEMSAVE_FAMILY_BATCHNORM ||
                      row.family == MEMSAVE_FAMILY_POOL;
  }
  return r;
}

void PrintTo(const Row& row, std::ostream* os) { *os << row.name; }

class Contract : public ::testing::TestWithParam<Row> {
 protected:
  void SetUp() override {
    if (GetParam().cpu_only) MEMSAVE_CPU_ONLY(GetParam().name + " reaches another kernel on CUDA");
  }
};

bool is_ours(const std::string& node) { return node.rfind("Memsave", 0) == 0; }

TEST_P(Contract, OurNodeWhenActive) {
  const Row& row = GetParam();
  EXPECT_EQ(memsave_is_active(), 1);
  const std::string ours = with_memsave(true, [&] { return grad_fn_name(call(row).y()); });
  EXPECT_TRUE(is_ours(ours)) << ours;
  EXPECT_EQ(ours, row.node);
}

// Under no_grad or inference mode the result gets no node: none at all, or for an in-place
// form the history its argument had before.
void expect_no_new_node(const Row& row, const char* mode) {
  Call c = prepare(row);
  const std::string before = grad_fn_name(c.h);
  std::string name;
  bool same = false;
  {
    at::NoGradGuard no_grad;
    c10::optional<c10::InferenceMode> inference;
    if (std::string(mode) == "inference mode") inference.emplace();
    const at::Tensor y = row.forward(c).at(0);
    name = grad_fn_name(y), same = y.is_same(c.h);
  }
  EXPECT_TRUE(name == "(none)" || (same && name == before)) << mode << ": " << name;
}

TEST_P(Contract, NoNodeUnderNoGradOrInferenceModeNoOursWhenDisabled) {
  const Row& row = GetParam();
  with_memsave(true, [&] {
    expect_no_new_node(row, "no_grad");
    expect_no_new_node(row, "inference mode");
    return 0;
  });
  const std::string stock = with_memsave(false, [&] { return grad_fn_name(call(row).y()); });
  EXPECT_FALSE(is_ours(stock)) << stock;
  if (!on_cuda()) {
    EXPECT_EQ(stock, row.stock_node);
  }
}

TEST_P(Contract, SecondBackwardRaisesStockError) {
  const Row& row = GetParam();
  auto twice = [&](bool on) {
    return with_memsave(on, [&] {
      at::Tensor s = call(row).y().sum();
      s.backward();
      return error_of([&] { s.backward(); });
    });
  };
  const std::string stock = twice(false), ours = twice(true);
  const char* expected = "Trying to backward through the graph a second time";
  EXPECT_NE(stock.find(expected), std::string::npos) << stock;
  EXPECT_NE(ours.find(expected), std::string::npos) << ours;
  EXPECT_EQ(first_line(stock), first_line(ours));
}

TEST_P(Contract, RetainGraphAllowsSecondBackward) {
  const Row& row = GetParam();
  auto twice = [&](bool on) {
    return with_memsave(on, [&] {
      Call c = call(row);
      const at::Tensor go = random_grad()(c.y());
      at::Tensor first = torch::autograd::grad({c.y()}, {c.x}, {go}, /*retain_graph=*/true)[0];
      return std::make_pair(first, torch::autograd::grad({c.y()}, {c.x}, {go})[0]);
    });
  };
  const auto stock = twice(false), ours = twice(true);
  EXPECT_TRUE(bitwise_equal(stock.first, ours.first)) << "first backward";
  EXPECT_TRUE(bitwise_equal(stock.second, ours.second)) << "second backward";
}

// The row as the harness's forward over {x, frozen...}, for its double-backward comparison.
Forward as_forward(const Row& row) {
  return [&row](std::vector<at::Tensor>& a) {
    Call c;
    c.x = a.at(0);
    c.h = c.x * 1;
    c.frozen.assign(a.begin() + 1, a.end());
    at::manual_seed(7);
    return row.forward(c);
  };
}

TEST_P(Contract, DoubleBackwardAsStock) {
  const Row& row = GetParam();
  Call c = prepare(row);
  std::vector<at::Tensor> args{c.x.detach()};
  args.insert(args.end(), c.frozen.begin(), c.frozen.end());
  if (!compare_double_backward(as_forward(row), args, /*pattern=*/1, row.name))
    std::printf("%s: stock has no double backward; ours fails alike\n", row.name.c_str());
}

TEST_P(Contract, UndefinedIncomingGradientGivesUndefinedGradients) {
  const Row& row = GetParam();
  const Call c = with_memsave(true, [&] { return call(row); });
  ASSERT_TRUE(is_ours(grad_fn_name(c.y())));
  const auto& node = c.y().grad_fn();
  const auto out = (*node)(torch::autograd::variable_list(node->num_inputs()));
  EXPECT_EQ(out.size(), node->num_outputs());
  for (const auto& t : out) EXPECT_FALSE(t.defined());
}

// The error of backward from the call's result after `change` (an in-place change of a
// tensor), or "".
std::string backward_after(const Row& row, bool on, const std::function<void(Call&)>& change) {
  return with_memsave(on, [&] {
    Call c = call(row);
    at::Tensor s = c.y().sum();
    change(c);
    return error_of([&] { s.backward(); });
  });
}

TEST_P(Contract, KeptTensorModifiedInPlaceRaisesStockError) {
  const Row& row = GetParam();
  if (!row.modify_kept) GTEST_SKIP() << "our node keeps no tensor that stock keeps and the host can change";
  const std::string stock = backward_after(row, false, row.modify_kept),
                    ours = backward_after(row, true, row.modify_kept);
  const char* expected = "modified by an inplace operation";
  EXPECT_NE(stock.find(expected), std::string::npos) << stock;
  EXPECT_NE(ours.find(expected), std::string::npos) << ours;
  // The same tensor at the same versions; only the node's name may differ.
  auto tail = [](const std::string& e) { return first_line(e.substr(std::min(e.size(), e.find("is at version")))); };
  EXPECT_EQ(tail(stock), tail(ours)) << "stock: " << stock << "\nours: " << ours;
}

// Documented difference: ours does not keep the input, and backward does not need it, so an
// in-place change of the input after the call no longer raises.
TEST_P(Contract, DroppedInputModifiedInPlaceNoLongerRaises) {
  const Row& row = GetParam();
  if (!row.drops_input) GTEST_SKIP() << "our node keeps what stock keeps of the input";
  auto change_input = [](Call& c) { c.h.mul_(2); };
  EXPECT_NE(backward_after(row, false, change_input).find("modified by an inplace operation"), std::string::npos);
  EXPECT_EQ(backward_after(row, true, change_input), "");
}

// Forward-mode AD (a dual input) goes to stock, which computes the tangent, and is counted
// as a fallback of the row's family.
TEST_P(Contract, ForwardModeAdGoesToStockCounted) {
  const Row& row = GetParam();
  const uint64_t level = torch::autograd::ForwardADLevel::get_next_idx();
  Call c = prepare(row);
  c.x = at::_make_dual(c.x.detach(), at::ones_like(c.x), level).requires_grad_(true);
  c.h = c.x * 1;
  const auto before = stats();
  at::manual_seed(7);
  c.outs = with_memsave(true, [&] { return row.forward(c); });
  const auto after = stats();
  EXPECT_FALSE(is_ours(grad_fn_name(c.y()))) << grad_fn_name(c.y());
  if (!on_cuda()) {
    EXPECT_EQ(grad_fn_name(c.y()), row.stock_node);
  }
  EXPECT_TRUE(std::get<1>(at::_unpack_dual(c.y(), level)).defined()) << "stock computes the tangent";
  EXPECT_EQ(after.fallbacks[row.family], before.fallbacks[row.family] + 1);
  torch::autograd::ForwardADLevel::release_idx(level);
}

// Saved-tensor hooks. In a C++ process they come from the autograd engine's
// get_default_saved_variable_hooks (Python's saved_tensors_hooks install them the same way,
// through its engine); this program's engine hands out counting identity hooks while
// `pack_counts` is set.
struct PackCounts {
  int packs = 0, unpacks = 0;
  uint64_t bytes = 0;
};
std::atomic<PackCounts*> pack_counts{nullptr};

class CountingHooks : public torch::autograd::SavedVariableHooks {
 public:
  explicit CountingHooks(PackCounts* counts) : counts_(counts) {}
  void call_pack_hook(const at::Tensor& t) override {
    counts_->packs++;
    counts_->bytes += t.numel() * t.element_size();
    kept_ = t;
  }
  at::Tensor call_unpack_hook() override {
    counts_->unpacks++;
    return kept_;
  }

 private:
  PackCounts* counts_;
  at::Tensor kept_;
};

class HookedEngine : public torch::autograd::Engine {
 public:
  std::unique_ptr<torch::autograd::SavedVariableHooks> get_default_saved_variable_hooks() override {
    PackCounts* counts = pack_counts.load();
    return counts ? std::make_unique<CountingHooks>(counts) : nullptr;
  }
};

torch::autograd::Engine& hooked_engine() {
  static auto* engine = new HookedEngine;  // never destroyed: backward may run during exit
  return *engine;
}
const bool hooked_engine_installed = (torch::autograd::set_default_engine_stub(&hooked_engine), true);

TEST_P(Contract, SavedTensorHooksSeeWhatIsKept) {
  const Row& row = GetParam();
  struct Hooked {
    at::Tensor gx;
    PackCounts counts;
    uint64_t bytes_kept = 0;
  };
  auto once = [&](bool on, bool hooks) {
    return with_memsave(on, [&] {
      Hooked r;
      Call c = prepare(row);
      const auto before = stats();
      if (hooks) pack_counts = &r.counts;
      at::manual_seed(7);
      c.outs = row.forward(c);
      pack_counts = nullptr;
      r.bytes_kept = stats().bytes_kept - before.bytes_kept;
      r.gx = torch::autograd::grad({c.y()}, {c.x}, {random_grad()(c.y())})[0];
      return r;
    });
  };
  const Hooked stock = once(false, true), ours = once(true, true), plain = once(true, false);
  EXPECT_GT(stock.counts.packs, 0) << "the engine's hooks reach stock's nodes";
  EXPECT_TRUE(bitwise_equal(stock.gx, ours.gx)) << "with hooks";
  EXPECT_TRUE(bitwise_equal(plain.gx, ours.gx)) << "with and without hooks";
  EXPECT_EQ(ours.counts.packs > 0, row.keeps) << ours.counts.packs << " tensors packed";
  EXPECT_EQ(ours.counts.unpacks, ours.counts.packs) << "backward unpacks every kept tensor once";
  EXPECT_EQ(ours.counts.bytes, ours.bytes_kept) << "the hooks see the bytes the counters report as kept";
  EXPECT_LE(ours.counts.bytes, stock.counts.bytes);
}

std::string row_name(const ::testing::TestParamInfo<Row>& info) {
  std::string s = info.param.name;
  for (char& ch : s)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return s;
}

INSTANTIATE_TEST_SUITE_P(Families, Contract, ::testing::ValuesIn(rows()), row_name);

}  // namespace
