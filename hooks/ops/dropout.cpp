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
// mask exactly in backward (docs/pytorch.md §2.2).
#include <ATen/TensorOperators.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/native_dropout_backward.h>
#include <ATen/ops/ones.h>
#include <torch/csrc/autograd/saved_variable.h>

#include "../core/bitmask.h"
#include "../core/kernel.h"
#include "../core/recipe.h"

namespace memsave {
namespace {

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
struct DropoutSaved {
  at::Tensor bits, value;
};

// When the input is itself a recipe (dropout(gelu(h)) in a transformer's MLP), or a tensor
// stock keeps anyway (dropout(softmax(s)), attention probabilities, which SoftmaxBackward0
// keeps), the output is a recipe too (Note [Recipe] in core/recipe.h): input * noise, with the
// input recomputed (or unpacked) and the noise rebuilt as backward rebuilds it.
class MemsaveDropoutBackward final : public MemsaveNode<DropoutSaved>, public RecipeProducer {
 public:
  std::string name() const override { return "MemsaveDropoutBackward"; }

  void keep(BitMask mask, const at::Tensor& value) {
    bits_ = SavedVariable(mask.take_bits(), /*is_output=*/false);
    mask_ = std::move(mask);  // the layout; the bytes are in bits_
    value_ = SavedVariable(value, /*is_output=*/false);
  }
  // The input's recipe, which costs nothing to keep.
  void keep_input_recipe(const at::Tensor& input, const RecipeSource& source) { input_.keep(input, source); }

  bool recomputable() const override { return input_.by_recipe(); }
  // The input's own version is not checked: stock's node does not keep the input, and a
  // change of it after the dropout changes nothing the output was made of (what the recipe
  // reads, the producer's input, is checked).
  void recipe_check() override {
    (void)unpack();
    (void)input_.unpack(false);
  }
  at::Tensor recompute_output() override {
    const DropoutSaved s = unpack();
    at::Tensor input = input_.value(input_.unpack(false));
    const at::Tensor n = noise(s);
    PlainUnlessTraced guard;
    at::NoGradGuard no_grad;
    // The forward's input * noise (Note [Recomputing in place] in core/recipe.h).
    return input_.fresh() && can_multiply_into(input, n) ? at::mul_out(input, input, n) : at::mul(input, n);
  }
  void recipe_fields(Fields& f) override {
    fields(f);
    input_.fields(f);
  }

 private:
  at::Tensor noise(const DropoutSaved& s) const {
    PlainUnlessTraced guard;
    // In place: one noise-sized buffer.
    return mask_.unpack_bits(s.bits, s.value.scalar_type(), 1, 0).mul_(s.value);
  }

  DropoutSaved unpack() override { return {bits_.unpack(), value_.unpack()}; }
  // The input's recipe goes too: every consumer of the output ran its backward before this one
  // (and a kKept input holds the very tensor: Note [Kept source] in core/recipe.cpp).
  void release() override {
    reset_data(bits_, value_);
    input_.reset_data();
  }
  void fields(Fields& f) override {
    f.saved(bits_, false);
    f.saved(value_, false);
    mask_.layout(f);
  }

  void backward(const at::Tensor& grad, const DropoutSaved& s, variable_list& out) override {
    out[0] = at::mul(grad, noise(s));  // stock: mul_tensor_backward(grad, other) = grad * other.conj()
  }

  BitMask mask_;
  SavedVariable bits_;
  SavedVariable value_;  // 0-dim, the noise's dtype and device
  KeptOperand input_;    // by recipe only
};

// Node for native_dropout: NativeDropoutBackward0's formula with the mask unpacked to the
// dtype native_dropout returned it in (bool for every non-empty input on 1.13 and 2.6; empty
// inputs, whose mask has the input's dtype, go to stock: docs/pytorch.md §2.2).
class MemsaveNativeDropoutBackward final : public MemsaveNode<at::Tensor> {
 public:
  MemsaveNativeDropoutBackward(double p, c10::optional<bool> train) : p_(p), train_(train) {}

  std::string name() const override { return "MemsaveNativeDropoutBackward"; }

  void keep(BitMask mask, at::ScalarType dtype) {
    bits_ = SavedVariable(mask.take_bits(), /*is_output=*/false);
    mask_ = std::move(mask);
    mask_dtype_ = dtype;
  }

 private:
  at::Tensor unpack() override { return bits_.unpack(); }
  void release() override { bits_.reset_data(); }
  void fields(Fields& f) override {
    f.saved(bits_, false);
    mask_.layout(f);
    f.real(p_);
    f.flag(train_.has_value());
    f.flag(train_.value_or(false));
    f.integer(static_cast<int64_t>(mask_dtype_));
  }

  void backward(const at::Tensor& grad, const at::Tensor& bits, variable_list& out) override {
    // derivatives.yaml: the scale is 1 unless train is given and true.
    const double scale = (!train_.has_value() || !*train_) ? 1 : (p_ == 1 ? 0.0 : 1.0 / (1.0 - p_));
    at::Tensor mask;
    {
      PlainUnlessTraced guard;
      mask = mask_.unpack_bits(bits, mask_dtype_, 1, 0);
    }
    if (at::GradMode::is_enabled()) {
      out[0] = grad * (mask.type_as(grad) * scale);  // infinitely_differentiable_native_dropout_backward
    } else {
      out[0] = at::native_dropout_backward(grad, mask, scale);
    }
  }

  double p_;
  c10::optional<bool> train_;
  BitMask mask_;  // the layout; the bytes are in bits_
  SavedVariable bits_;
  at::ScalarType mask_dtype_ = at::kBool;
};

// What the dropout operators share: one differentiable input, which must not be named.
template <class O>
struct DropoutOp : OneInput<O, F> {
  using OneInput<O, F>::OneInput;
  // Note [Compile tracing] (core/rules.h): a traced random stream is the compiler's business.
  const char* prepare(const Call& c) const {
    if (tracing()) return "compile tracing: dropout (random numbers drawn by the compiled graph)";
    return this->unnamed_with_int_lists(c);
  }
};

// dropout(input, p, train) and dropout_(self, p, train): composites reproduced op for op.
// Eval, p == 0 and empty inputs give the input itself (no node); p outside [0, 1] raises;
// p == 1 is x * zeros({}), whose MulBackward0 keeps a 0-dim tensor (minimal). Out of place
// on CUDA the composite calls native_dropout, which has its own kernel below.
template <bool kInplaceOp>
struct Dropout : DropoutOp<Dropout<kInplaceOp>> {
  static constexpr c10::DispatchKey kStock = c10::DispatchKey::CompositeImplicitAutograd;
  static constexpr bool kInplace = kInplaceOp;
  using Node = MemsaveDropoutBackward;
  double p;
  bool train;
  at::Tensor noise, value;
  uint64_t noise_bytes = 0, kept_bytes = 0;
  explicit Dropout(const Call& c) : DropoutOp<Dropout>(c), p(c.arg(1).toDouble()), train(c.arg(2).toBool()) {}

  bool wanted() const {
    if (!this->input.requires_grad() || !train || this->input.numel() == 0) return false;
    return p == 1 || (p > 0 && p < 1 && (kInplace || this->input.is_cpu()));
  }
  bool stock_minimal() const { return p == 1; }

  // Stock's mul_ checks after drawing the noise: a leaf or a view of one raises, after the
  // random stream has moved on, as here.
  const char* prepare(const Call& c) {
    if (const char* why = DropoutOp<Dropout>::prepare(c)) return why;
    if (kDropoutNoiseLayoutVaries && !this->input.is_contiguous())
      return "non-contiguous input (noise layout differs across 2.x releases)";
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      noise = at::empty_like(this->input, kNoiseFormat);
      noise.bernoulli_(1 - p);
      noise.div_(1 - p);
      value = at::ones({}, noise.options()).div_(1 - p);  // the same division, on the value bernoulli_ set
    }
    if (kInplace) torch::autograd::check_inplace(this->input, /*requires_grad=*/true);
    return nullptr;
  }

  NodePtr<Node> node(const Call&) const { return make_node<Node>(); }

  void forward(const Call& c, Node& node) {
    {
      // Packed before the product is allocated, so that the packing's temporaries and the
      // output are never alive together.
      at::AutoDispatchBelowADInplaceOrView guard;
      BitMask mask(noise);
      kept_bytes = mask.nbytes() + tensor_bytes(value);
      noise_bytes = tensor_bytes(noise);
      node.keep(std::move(mask), std::move(value));
    }
    if (!kInplace && recipes_on(python_keys(c.keys())) && !saved_tensor_hooks_set())
      if (const auto source = recipe_source(this->input, /*kept=*/true)) node.keep_input_recipe(this->input, *source);
    at::Tensor result;
    if (kInplace) {
      at::AutoDispatchBelowAutograd guard;  // ADInplaceOrView bumps the version counter
      result = this->input.mul_(noise);
    } else {
      at::AutoDispatchBelowADInplaceOrView guard;
      result = at::mul(this->input, noise);
    }
    noise.reset();
    c.return_tensor(std::move(result));
  }

  Footprint keep(const Call&, Node&) const { return {{kept_bytes, 0}, {noise_bytes, 0}}; }
};

// feature_dropout(_) (dropout1d/2d/3d): stock's noise is (N, C, 1, ...), already small.
struct FeatureDropout : DropoutOp<FeatureDropout> {
  static constexpr c10::DispatchKey kStock = c10::DispatchKey::CompositeImplicitAutograd;
  using Node = void;
  double p;
  bool train;
  explicit FeatureDropout(const Call& c)
      : DropoutOp<FeatureDropout>(c), p(c.arg(1).toDouble()), train(c.arg(2).toBool()) {}
  bool wanted() const { return input.requires_grad() && train && p > 0 && p <= 1 && input.numel() > 0; }
  bool stock_minimal() const { return true; }
};

// native_dropout(input, p, train?) -> (Tensor, Tensor)
struct NativeDropout : DropoutOp<NativeDropout> {
  using Node = MemsaveNativeDropoutBackward;
  using DropoutOp<NativeDropout>::DropoutOp;
  // The CPU kernel returns an empty input itself; nothing to keep.
  bool stock_minimal() const { return input.numel() == 0; }
  NodePtr<Node> node(const Call& c) const {
    const c10::optional<bool> train = c.arg(2).isNone() ? c10::nullopt : c10::optional<bool>(c.arg(2).toBool());
    return make_node<Node>(c.arg(1).toDouble(), train);
  }
  Footprint keep(const Call& c, Node& node) const {
    at::AutoDispatchBelowADInplaceOrView guard;
    const at::Tensor mask = c.output(1);
    BitMask bits(mask);
    const Footprint footprint{{bits.nbytes(), 0}, {tensor_bytes(mask), 0}};
    node.keep(std::move(bits), mask.scalar_type());
    return footprint;
  }
};

void register_dropout(Registrar& r) {
  r.op<Dropout<false>>("dropout");
  r.op<Dropout<true>>("dropout_");
  r.op<FeatureDropout>("feature_dropout");
  r.op<FeatureDropout>("feature_dropout_");
  r.op<NativeDropout>("native_dropout");
  r.uncovered<MEMSAVE_FAMILY_DROPOUT>({"_fused_dropout"});  // Note [Uncovered route]: legacy CUDA dropout
}
const FamilyRegistration registration(F, &register_dropout);

}  // namespace
}  // namespace memsave
