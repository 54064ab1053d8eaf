// SPDX-License-Identifier: MIT
// dropout.cpp: dropout, dropout_ and native_dropout on AutogradCPU/AutogradCUDA, with nodes
// that keep one bit per element.
//
// Stock: `dropout` on CPU, and `dropout_` on every device, are composites: noise =
// empty_like(x), noise.bernoulli_(1 - p), noise.div_(1 - p), then x * noise (x.mul_(noise));
// MulBackward0 keeps the floating-point noise, one element per input element (in a
// transformer the attention-dropout noise, batch x heads x seq x seq, is the largest tensor
// kept). On CUDA `dropout` calls native_dropout, whose node keeps the mask output, one byte
// per element. Feature dropout (dropout1d/2d/3d) keeps a noise of shape (N, C, 1, ...),
// already small: it stays stock (counted as passthrough).
// Here: the same ops run in the same order on the same generator, so outputs and the random
// stream are stock's; the node keeps the mask as bits (hooks/bitmask.h) plus, for the
// composite, the one nonzero value the division produced, and rebuilds stock's noise or
// mask exactly in backward (shared/PYTORCH-NOTES.md §2.2).
#include <ATen/core/grad_mode.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/native_dropout_backward.h>
#include <ATen/ops/ones.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/csrc/autograd/VariableTypeUtils.h>
#include <torch/version.h>

#include "bitmask.h"
#include "common.h"

namespace memsave {
namespace {

using torch::autograd::Node;
using torch::autograd::SavedVariable;
using torch::autograd::variable_list;

constexpr auto F = MEMSAVE_FAMILY_DROPOUT;

// The memory format of the composite's noise. 1.13 allocates it contiguous whatever the
// input's layout (checked in tests/test_dropout.cpp); later releases switched to the input's
// layout (pytorch/pytorch#129467) in a release we could not pin down, so on 2.x only
// contiguous inputs take our path, where both choices give the same noise.
constexpr at::MemoryFormat kNoiseFormat = at::MemoryFormat::Contiguous;

// Node for the composite: backward is MulBackward0's grad * noise, with noise rebuilt as
// mask * value: 1 * value and 0 * value are exact, so the rebuilt noise equals stock's bit
// for bit, with the same strides (BitMask keeps the memory order).
//
// Both nodes keep the packed bits (and the composite's value) in SavedVariables, as stock keeps
// its noise or mask: saved-tensor hooks (save_on_cpu, offloading) see them, and unpacking
// after release raises stock's "backward through the graph a second time".
class MemsaveDropoutBackward final : public Node {
 public:
  std::string name() const override { return "MemsaveDropoutBackward"; }

  void keep(BitMask mask, const at::Tensor& value) {
    bits_ = SavedVariable(mask.take_bits(), /*is_output=*/false);
    mask_ = std::move(mask);  // the layout; the bytes are in bits_
    value_ = SavedVariable(value, /*is_output=*/false);
  }

  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    bits_.reset_data();
    value_.reset_data();
  }

  variable_list apply(variable_list&& grads) override {
    std::lock_guard<std::mutex> lock(mutex_);
    TORCH_INTERNAL_ASSERT(grads.size() == 1, name(), ": expected 1 gradient, got ", grads.size());
    const at::Tensor bits = bits_.unpack(), value = value_.unpack();
    variable_list out(1);
    const at::Tensor& grad = grads[0];
    if (!task_should_compute_output(0) || !grad.defined()) return out;
    at::Tensor noise;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      // In place: one noise-sized buffer.
      noise = mask_.unpack_bits(bits, value.scalar_type(), 1, 0).mul_(value);
    }
    out[0] = at::mul(grad, noise);  // stock: mul_tensor_backward(grad, other) = grad * other.conj()
    return out;
  }

 private:
  BitMask mask_;
  SavedVariable bits_;
  SavedVariable value_;  // 0-dim, the noise's dtype and device
};

// Node for native_dropout: NativeDropoutBackward0's formula with the mask unpacked to the
// dtype native_dropout returned it in (bool on CUDA, the input's dtype on CPU).
class MemsaveNativeDropoutBackward final : public Node {
 public:
  MemsaveNativeDropoutBackward(double p, c10::optional<bool> train) : p_(p), train_(train) {}

  std::string name() const override { return "MemsaveNativeDropoutBackward"; }

  void keep(BitMask mask, at::ScalarType dtype) {
    bits_ = SavedVariable(mask.take_bits(), /*is_output=*/false);
    mask_ = std::move(mask);
    mask_dtype_ = dtype;
  }

  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    bits_.reset_data();
  }

  variable_list apply(variable_list&& grads) override {
    std::lock_guard<std::mutex> lock(mutex_);
    TORCH_INTERNAL_ASSERT(grads.size() == 1, name(), ": expected 1 gradient, got ", grads.size());
    const at::Tensor bits = bits_.unpack();
    variable_list out(1);
    const at::Tensor& grad = grads[0];
    if (!task_should_compute_output(0) || !grad.defined()) return out;
    // derivatives.yaml: the scale is 1 unless train is given and true.
    const double scale = (!train_.has_value() || !*train_) ? 1 : (p_ == 1 ? 0.0 : 1.0 / (1.0 - p_));
    at::Tensor mask;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      mask = mask_.unpack_bits(bits, mask_dtype_, 1, 0);
    }
    if (at::GradMode::is_enabled()) {
      out[0] = grad * (mask.type_as(grad) * scale);  // infinitely_differentiable_native_dropout_backward
    } else {
      out[0] = at::native_dropout_backward(grad, mask, scale);
    }
    return out;
  }

 private:
  double p_;
  c10::optional<bool> train_;
  BitMask mask_;  // the layout; the bytes are in bits_
  SavedVariable bits_;
  at::ScalarType mask_dtype_ = at::kBool;
};

const char* unsupported_input(c10::DispatchKeySet ks, const at::Tensor& input) {
  const char* why = unsupported_keys(ks);
  if (!why) why = unsupported_tensor(input);
  if (!why && input.has_names()) why = "named tensor";
  return why;
}

void return_tensor(torch::jit::Stack* stack, size_t args, at::Tensor result) {
  torch::jit::drop(*stack, args);
  stack->emplace_back(std::move(result));
}

// dropout(input, p, train) and dropout_(self, p, train): composites reproduced op for op.
template <bool Inplace>
void dropout_autograd(const c10::OperatorHandle& op, c10::DispatchKeySet ks, torch::jit::Stack* stack) {
  const c10::IValue* args = &(*stack)[stack->size() - 3];
  at::Tensor input = args[0].toTensor();
  const double p = args[1].toDouble();
  const bool train = args[2].toBool();
  const auto stock = [&] { call_stock(op, stack, c10::DispatchKey::CompositeImplicitAutograd); };
  if (!family_on(F) || !at::GradMode::is_enabled() || !input.requires_grad()) return stock();
  // Eval, p == 0 and empty inputs give the input itself (no node); p outside [0, 1] raises.
  if (!train || !(p > 0 && p < 1) || input.numel() == 0) {
    if (train && p == 1 && input.numel() > 0) count_passthrough(F);  // x * zeros({}): MulBackward0 keeps a 0-dim tensor
    return stock();
  }
  // Out of place on CUDA the composite calls native_dropout, which has our kernel below.
  if (!Inplace && !input.is_cpu()) return stock();
  const char* why = unsupported_input(ks, input);
#if TORCH_VERSION_MAJOR >= 2
  if (!why && !input.is_contiguous()) why = "non-contiguous input (noise layout differs across 2.x releases)";
#endif
  if (why) {
    count_fallback(F, why);
    return stock();
  }

  at::Tensor noise, value;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    noise = at::empty_like(input, kNoiseFormat);
    noise.bernoulli_(1 - p);
    noise.div_(1 - p);
    value = at::ones({}, noise.options()).div_(1 - p);  // the same division, on the value bernoulli_ set
  }
  // Stock's mul_ checks here, after drawing the noise: a leaf or a view of one raises.
  if (Inplace) torch::autograd::check_inplace(input, /*requires_grad=*/true);
  std::shared_ptr<MemsaveDropoutBackward> node(new MemsaveDropoutBackward(), torch::autograd::deleteNode);
  node->set_next_edges(torch::autograd::collect_next_edges(input));
  {
    // Packed before the product is allocated, so that the packing's temporaries and the
    // output are never alive together.
    at::AutoDispatchBelowADInplaceOrView guard;
    BitMask mask(noise);
    count_substituted(F, mask.nbytes() + tensor_bytes(value), tensor_bytes(noise));
    node->keep(std::move(mask), std::move(value));
  }
  at::Tensor result;
  if (Inplace) {
    at::AutoDispatchBelowAutograd guard;  // ADInplaceOrView bumps the version counter
    input.mul_(noise);
    result = input;
  } else {
    at::AutoDispatchBelowADInplaceOrView guard;
    result = at::mul(input, noise);
  }
  noise.reset();
  if (Inplace) {
    torch::autograd::rebase_history(result, node);
  } else {
    torch::autograd::set_history(result, node);
  }
  return_tensor(stack, 3, std::move(result));
}

// feature_dropout(_) (dropout1d/2d/3d): stock's noise is (N, C, 1, ...), already small.
void feature_dropout_autograd(const c10::OperatorHandle& op, c10::DispatchKeySet, torch::jit::Stack* stack) {
  const c10::IValue* args = &(*stack)[stack->size() - 3];
  const at::Tensor input = args[0].toTensor();
  const double p = args[1].toDouble();
  if (family_on(F) && at::GradMode::is_enabled() && input.requires_grad() && args[2].toBool() && p > 0 && p <= 1 &&
      input.numel() > 0)
    count_passthrough(F);
  call_stock(op, stack, c10::DispatchKey::CompositeImplicitAutograd);
}

// native_dropout(input, p, train?) -> (Tensor, Tensor)
void native_dropout_autograd(const c10::OperatorHandle& op, c10::DispatchKeySet ks, torch::jit::Stack* stack) {
  const c10::IValue* args = &(*stack)[stack->size() - 3];
  const at::Tensor input = args[0].toTensor();
  if (!family_on(F) || !at::GradMode::is_enabled() || !input.requires_grad())
    return call_stock(op, stack, c10::DispatchKey::Autograd);
  if (input.numel() == 0) {  // the CPU kernel returns the input itself; nothing to keep
    count_passthrough(F);
    return call_stock(op, stack, c10::DispatchKey::Autograd);
  }
  if (const char* why = unsupported_input(ks, input)) {
    count_fallback(F, why);
    return call_stock(op, stack, c10::DispatchKey::Autograd);
  }
  const double p = args[1].toDouble();
  const c10::optional<bool> train = args[2].isNone() ? c10::nullopt : c10::optional<bool>(args[2].toBool());
  std::shared_ptr<MemsaveNativeDropoutBackward> node(new MemsaveNativeDropoutBackward(p, train),
                                                     torch::autograd::deleteNode);
  node->set_next_edges(torch::autograd::collect_next_edges(input));
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    op.redispatchBoxed(ks & c10::after_autograd_keyset, stack);
    const at::Tensor mask = (*stack)[stack->size() - 1].toTensor();
    BitMask bits(mask);
    count_substituted(F, bits.nbytes(), tensor_bytes(mask));
    node->keep(std::move(bits), mask.scalar_type());
  }
  at::Tensor output = (*stack)[stack->size() - 2].toTensor();
  torch::autograd::set_history(output, node);
}

}  // namespace

namespace {
void register_dropout(Registrar& r) {
  r.impl("dropout", [] { return torch::CppFunction::makeFromBoxedFunction<&dropout_autograd<false>>(); });
  r.impl("dropout_", [] { return torch::CppFunction::makeFromBoxedFunction<&dropout_autograd<true>>(); });
  r.impl("feature_dropout", [] { return torch::CppFunction::makeFromBoxedFunction<&feature_dropout_autograd>(); });
  r.impl("feature_dropout_", [] { return torch::CppFunction::makeFromBoxedFunction<&feature_dropout_autograd>(); });
  r.impl("native_dropout", [] { return torch::CppFunction::makeFromBoxedFunction<&native_dropout_autograd>(); });
}
const FamilyRegistration registration(MEMSAVE_FAMILY_DROPOUT, &register_dropout);
}  // namespace

}  // namespace memsave
