// SPDX-License-Identifier: MIT
// conv.cpp: aten::convolution on AutogradCPU/AutogradCUDA, and the node that keeps no input.
//
// Stock: ConvolutionBackward0 keeps the input and the weight for every requires_grad
// pattern, because one formula covers input, weight and bias. So a frozen convolution whose
// input needs a gradient keeps its whole input alive until backward.
// Here: when the weight does not need a gradient, the input is never read in backward
// (only its geometry is), so we keep the weight (a parameter, already alive), the input's
// sizes/strides/options and the arguments. When the weight needs a gradient, stock already
// keeps what backward needs, and the call goes to stock (counted as passthrough).
#include <ATen/core/grad_mode.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/ops/convolution_backward.h>
#include <ATen/ops/empty_strided.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>

#include "common.h"

namespace memsave {
namespace {

using torch::autograd::Node;
using torch::autograd::SavedVariable;
using torch::autograd::variable_list;

// Note [Stand-in]: convolution_backward with output_mask[1] == false never reads the input's
// data, but it picks the backend and memory format from the input's strides, and a stand-in
// with other strides changed gradient values in dozens of channels_last configurations
// (shared/PYTORCH-NOTES.md §2.1). So backward builds an uninitialised stand-in with the
// recorded sizes, strides and options. Every CPU path copies the input to a contiguous
// buffer of that size anyway; a stand-in that already has the right strides avoids the copy.
// When the host still holds the input at backward time, it is borrowed instead (Note [Live
// stand-in] in common.h), so a convolution whose input stays alive costs nothing extra.
struct MemsaveConvolutionBackward final : public Node {
  MemsaveConvolutionBackward(const at::Tensor& input, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                             std::vector<int64_t> stride, std::vector<int64_t> padding, std::vector<int64_t> dilation,
                             bool transposed, std::vector<int64_t> output_padding, int64_t groups)
      : input_(input),
        weight_(weight, /*is_output=*/false),
        stride_(std::move(stride)),
        padding_(std::move(padding)),
        dilation_(std::move(dilation)),
        output_padding_(std::move(output_padding)),
        transposed_(transposed),
        groups_(groups) {
    if (bias) bias_sizes_ = bias->sizes().vec();
  }

  std::string name() const override { return "MemsaveConvolutionBackward"; }

  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    weight_.reset_data();
  }

  variable_list apply(variable_list&& grads) override {
    std::lock_guard<std::mutex> lock(mutex_);
    TORCH_INTERNAL_ASSERT(grads.size() == 1, "MemsaveConvolutionBackward: expected 1 gradient, got ", grads.size());
    variable_list out(3);
    const at::Tensor& grad = grads[0];
    const std::array<bool, 3> mask{task_should_compute_output(0), task_should_compute_output(1),
                                   task_should_compute_output(2)};
    auto weight = weight_.unpack();
    if (!(mask[0] || mask[1] || mask[2]) || !grad.defined()) return out;
    // The weight has no gradient edge (we only build this node for a frozen weight).
    TORCH_INTERNAL_ASSERT(!mask[1], "MemsaveConvolutionBackward: weight gradient requested without a kept input");
    at::OptionalIntArrayRef bias_sizes;
    if (bias_sizes_) bias_sizes = at::IntArrayRef(*bias_sizes_);
    auto res = at::convolution_backward(grad, input_.stand_in(), weight, bias_sizes, stride_, padding_,
                                        dilation_, transposed_, output_padding_, groups_, mask);
    if (mask[0]) out[0] = std::move(std::get<0>(res));
    if (mask[2]) out[2] = std::move(std::get<2>(res));
    return out;
  }

 private:
  Geometry input_;
  SavedVariable weight_;
  c10::optional<std::vector<int64_t>> bias_sizes_;
  std::vector<int64_t> stride_, padding_, dilation_, output_padding_;
  bool transposed_;
  int64_t groups_;
};

bool int_lists(const c10::IValue* args, std::initializer_list<int> idx) {
  for (int i : idx)
    if (!args[i].isIntList()) return false;
  return true;
}

// aten::convolution(input, weight, bias?, stride, padding, dilation, transposed, output_padding, groups)
void convolution_autograd(const c10::OperatorHandle& op, c10::DispatchKeySet ks, torch::jit::Stack* stack) {
  constexpr auto F = MEMSAVE_FAMILY_CONV;
  const c10::IValue* args = &(*stack)[stack->size() - 9];
  const at::Tensor input = args[0].toTensor();
  const at::Tensor weight = args[1].toTensor();
  c10::optional<at::Tensor> bias;
  if (!args[2].isNone() && args[2].toTensor().defined()) bias = args[2].toTensor();

  if (!family_on(F) || !at::GradMode::is_enabled() ||
      !(input.requires_grad() || weight.requires_grad() || (bias && bias->requires_grad())))
    return call_stock(op, stack, c10::DispatchKey::Autograd);
  if (weight.requires_grad()) {
    count_passthrough(F);
    return call_stock(op, stack, c10::DispatchKey::Autograd);
  }
  const char* why = unsupported_keys(ks);
  if (!why) why = unsupported_tensor(input);
  if (!why) why = unsupported_tensor(weight);
  if (!why && bias) why = unsupported_tensor(*bias);
  if (!why && !int_lists(args, {3, 4, 5, 7})) why = "symbolic sizes";
  if (why) {
    count_fallback(F, why);
    return call_stock(op, stack, c10::DispatchKey::Autograd);
  }

  // One node per call, made before the forward runs, as stock does (sequence numbers).
  std::shared_ptr<MemsaveConvolutionBackward> node(
      new MemsaveConvolutionBackward(input, weight, bias, args[3].toIntVector(), args[4].toIntVector(),
                                     args[5].toIntVector(), args[6].toBool(), args[7].toIntVector(), args[8].toInt()),
      torch::autograd::deleteNode);
  node->set_next_edges(torch::autograd::collect_next_edges(input, weight, bias));
  count_substituted(F, tensor_bytes(weight), tensor_bytes(input) + tensor_bytes(weight));
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    op.redispatchBoxed(ks & c10::after_autograd_keyset, stack);
  }
  at::Tensor result = stack->back().toTensor();
  torch::autograd::set_history(result, node);
}

}  // namespace

namespace {
void register_conv(Registrar& r) {
  r.impl("convolution", [] { return torch::CppFunction::makeFromBoxedFunction<&convolution_autograd>(); });
}
const FamilyRegistration registration(MEMSAVE_FAMILY_CONV, &register_conv);
}  // namespace

}  // namespace memsave
