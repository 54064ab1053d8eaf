// SPDX-License-Identifier: MIT
// recipe.cpp: aten::mul.Tensor on AutogradCPU/AutogradCUDA: a multiply whose operand is the
// output of SiLU or GELU keeps a recipe for it, not the tensor.
//
// Stock: a gated MLP (LLaMA, Qwen, Mistral) computes s = silu(g), then s * u. SiluBackward0
// keeps g, and MulBackward0 keeps s (for u's gradient) and u (for s's). But s is a pure
// function of g, which SiluBackward0 holds anyway: stock keeps one hidden-width tensor more
// than backward needs. The same holds for GELU (GeluBackward0 keeps its input).
// Here (Note [Recipe]): one MemsaveMulBackward in place of MulBackward0. An operand that needs
// keeping and is a producer's untouched output (Note [Recipe source]) is kept as a recipe: the
// producer's node (stock's own, untouched), its version, its geometry. Backward recomputes it
// from the producer's kept input with the kernel that made it, below autograd, and runs
// stock's formula (mul_tensor_backward: grad * other) on it; under create_graph the
// recomputed tensor carries the producer's edge, as stock's unpacked SavedVariable does, so
// the double-backward graph is stock's. Every other multiply is stock's, counted as
// passthrough (nothing to recompute).
#include <ATen/SavedTensorHooks.h>
#include <ATen/ops/gelu.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/silu.h>
#include <torch/csrc/autograd/generated/Functions.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/csrc/autograd/variable.h>

#include "../core/kernel.h"

namespace memsave {
namespace {

using torch::autograd::Edge;
using torch::autograd::SavedVariable;
using torch::autograd::variable_list;

constexpr auto F = MEMSAVE_FAMILY_RECIPE;

// Note [Recipe source]: a tensor t is recomputable when
//   - its grad_fn is stock's SiluBackward0 or GeluBackward0 and t is its output 0, not a view:
//     those nodes keep their input (`self_`), from which t was computed;
//   - t is at version 0: t is an out-of-place result that nothing modified since, even under
//     no_grad (an in-place change with grad mode on would have replaced its grad_fn; silu_,
//     whose result has version >= 1, never qualifies);
//   - t has the dtype the producer computes in (no autocast cast between them).
// What autograd cannot see cannot be seen here either: a write through `.data` (which shares
// no version counter) changes t without a trace, and stock's saved t would carry it while our
// recomputed one would not (README's limits).
enum class Producer : int64_t { kSilu = 0, kGeluNone = 1, kGeluTanh = 2 };

struct Source {
  Producer producer;
  SavedVariable* input;  // the producer node's kept input (its `self_`)
};

NodePtr<torch::autograd::Node> producer_node(const at::Tensor& t) { return t.grad_fn(); }

c10::optional<Source> recipe_source(const at::Tensor& t) {
  if (!t.defined() || !t.requires_grad() || t.is_view() || t.output_nr() != 0 || t._version() != 0) return c10::nullopt;
  torch::autograd::Node* node = t.grad_fn().get();
  if (!node) return c10::nullopt;
  if (auto* silu = dynamic_cast<torch::autograd::generated::SiluBackward0*>(node))
    return Source{Producer::kSilu, &silu->self_};
  if (auto* gelu = dynamic_cast<torch::autograd::generated::GeluBackward0*>(node)) {
    if (gelu->approximate == "none") return Source{Producer::kGeluNone, &gelu->self_};
    if (gelu->approximate == "tanh") return Source{Producer::kGeluTanh, &gelu->self_};
  }
  return c10::nullopt;
}

// The producer's kernel, below autograd (the kernel that made the value: same input, same
// sizes and strides, so the same elements in the same order).
at::Tensor recompute(Producer p, const at::Tensor& input) {
  at::NoGradGuard no_grad;
  PlainUnlessTraced below;
  switch (p) {
    case Producer::kSilu: return at::silu(input);
    case Producer::kGeluNone: return at::gelu(input, "none");
    case Producer::kGeluTanh: return at::gelu(input, "tanh");
  }
  TORCH_INTERNAL_ASSERT(false, "unknown producer");
}

// One operand a node needs in backward: a SavedVariable, as stock keeps it, or a recipe
// (Note [Recipe]).
class KeptOperand {
 public:
  // Keeps `t` as stock would, or, when `source` is set, its recipe.
  void keep(const at::Tensor& t, const c10::optional<Source>& source) {
    if (!source) {
      saved_ = SavedVariable(t, /*is_output=*/false);
      return;
    }
    source_ = *source;
    producer_ = producer_node(t);
    version_ = torch::autograd::impl::version_counter(t);
    saved_version_ = version_.current_version();
    sizes_ = t.sizes().vec();
    strides_ = t.strides().vec();
    options_ = t.options();
  }
  bool by_recipe() const { return source_.has_value(); }

  // What stock's unpack raises, in stock's order: backward twice (the producer's released
  // input), a version mismatch of the operand or of the producer's input. Returns what
  // tensor() needs: the operand, or the producer's input.
  at::Tensor unpack(bool check) const {
    if (!by_recipe()) return saved_.unpack();
    if (check && version_.current_version() != saved_version_) raise_version_error();
    return source_->input->unpack();
  }
  // The operand from what unpack() returned.
  at::Tensor tensor(const at::Tensor& unpacked) const {
    if (!by_recipe()) return unpacked;
    at::Tensor t = recompute(source_->producer, unpacked);
    TORCH_INTERNAL_ASSERT(t.sizes() == at::IntArrayRef(sizes_) && t.strides() == at::IntArrayRef(strides_) &&
                              t.dtype() == options_.dtype(),
                          "memsave: a recomputed operand's geometry differs from the original's");
    // As stock's SavedVariable::unpack: the producer's edge (double backward meets stock's
    // SiluBackward0/GeluBackward0) and the operand's version counter.
    if (!tracing()) {
      t = torch::autograd::make_variable(t, Edge(producer_, 0));
      torch::autograd::impl::set_version_counter(t, version_);
    }
    return t;
  }
  void reset_data() {
    saved_.reset_data();
    producer_.reset();
  }
  void fields(Fields& f) {
    f.flag(by_recipe());
    if (!by_recipe()) return f.saved(saved_, false);
    f.saved(*source_->input, false);
    f.integer(static_cast<int64_t>(source_->producer));
    f.ints(sizes_);
    f.ints(strides_);
    f.options(options_);
  }

 private:
  [[noreturn]] void raise_version_error() const {
    std::ostringstream msg;
    msg << "one of the variables needed for gradient computation has been modified by an inplace operation: ["
        << c10::toString(options_.computeDispatchKey()) << c10::toString(options_.dtype().toScalarType()) << "Type "
        << at::IntArrayRef(sizes_) << "], which is output 0 of " << version_error_name(*producer_) << ", is at version "
        << version_.current_version() << "; expected version " << saved_version_ << " instead." << stock_version_hint();
    TORCH_CHECK(false, msg.str());
  }

  SavedVariable saved_;
  c10::optional<Source> source_;
  NodePtr<torch::autograd::Node> producer_;  // the operand's grad_fn, which keeps the source
  c10::VariableVersion version_{c10::VariableVersion::DISABLED};
  uint32_t saved_version_ = 0;
  std::vector<int64_t> sizes_, strides_;
  at::TensorOptions options_;
};

struct MulSaved {
  at::Tensor self, other;  // as unpack() returned them (KeptOperand::unpack)
};

// Note [Recipe]: MulBackward0's formula (derivatives.yaml, mul.Tensor: self's gradient is
// mul_tensor_backward(grad, other, self's dtype) = grad * other.conj(), other's likewise;
// conj() is the identity on the real dtypes we take), in stock's order, self's first.
class MemsaveMulBackward final : public MemsaveNode<MulSaved> {
 public:
  std::string name() const override { return "MemsaveMulBackward"; }

  KeptOperand self_, other_;  // kept when the other operand needs a gradient

 private:
  MulSaved unpack() override {
    const bool check = !functional();
    return {self_.unpack(check), other_.unpack(check)};
  }
  void release() override {
    self_.reset_data();
    other_.reset_data();
  }
  void fields(Fields& f) override {
    self_.fields(f);
    other_.fields(f);
  }
  void backward(const at::Tensor& grad, const MulSaved& s, variable_list& out) override {
    if (wanted(0)) out[0] = at::mul(grad, other_.tensor(s.other));
    if (wanted(1)) out[1] = at::mul(grad, self_.tensor(s.self));
  }
};

// aten::mul.Tensor(Tensor self, Tensor other) -> Tensor
struct Mul : Op<Mul> {
  static constexpr memsave_family_t kFamily = F;
  using Node = MemsaveMulBackward;

  at::Tensor self, other;
  c10::optional<Source> self_source, other_source;  // when kept (the other needs a gradient)
  bool traced;
  explicit Mul(const Call& c) : self(c.tensor(0)), other(c.tensor(1)), traced(python_keys(c.keys())) {
    if (other.requires_grad()) self_source = recipe_source(self);
    if (self.requires_grad()) other_source = recipe_source(other);
  }

  std::array<at::Tensor, 2> differentiable() const { return {self, other}; }
  // Nothing to recompute: stock's node keeps what it must. Under compile tracing the
  // compiler's partitioner decides what to recompute (its graph is stock's).
  bool stock_minimal() const { return traced || (!self_source && !other_source); }

  const char* prepare(const Call&) const {
    if (self.dtype() != other.dtype()) return "recipe: operands of different dtypes";
    if (!at::SavedTensorDefaultHooks::get_tls_state().stack.empty())
      return "recipe: saved-tensor hooks are set (they see what stock keeps)";
    return nullptr;
  }

  NodePtr<Node> node(const Call&) const { return make_node<Node>(); }

  Footprint keep(const Call&, Node& node) const {
    Footprint f;
    const auto count = [&f](const at::Tensor& t, bool by_recipe) {
      uint64_t& stock = t.is_leaf() ? f.stock.parameters : f.stock.activations;
      uint64_t& kept = t.is_leaf() ? f.kept.parameters : f.kept.activations;
      stock += tensor_bytes(t);
      if (!by_recipe) kept += tensor_bytes(t);
    };
    if (other.requires_grad()) {
      node.self_.keep(self, self_source);
      count(self, self_source.has_value());
    }
    if (self.requires_grad()) {
      node.other_.keep(other, other_source);
      count(other, other_source.has_value());
    }
    return f;
  }
};

void register_recipe(Registrar& r) { r.op<Mul>("mul.Tensor"); }
const FamilyRegistration registration(F, &register_recipe);

}  // namespace
}  // namespace memsave
