// SPDX-License-Identifier: MIT
// recipe.cpp: aten::mul.Tensor, aten::bmm, aten::mm and aten::addmm on
// AutogradCPU/AutogradCUDA: a multiply whose operand is the output of SiLU or GELU keeps a
// recipe for it, not the tensor; a batched matrix product whose operand is a recipe
// (attention probabilities after dropout) likewise, and a matrix product (the routes of C++
// torch::nn::Linear); aten::native_layer_norm, stock's, noted so that its output has a
// recipe; aten::silu_, hardswish_ and mish_, stock's, noted likewise.
//
// Stock: a gated MLP (LLaMA, Qwen, Mistral) computes s = silu(g), then s * u. SiluBackward0
// keeps g, and MulBackward0 keeps s (for u's gradient) and u (for s's). But s is a pure
// function of g, which SiluBackward0 holds anyway: stock keeps one hidden-width tensor more
// than backward needs. The same holds for GELU (GeluBackward0 keeps its input).
// Here (Note [Recipe] in core/recipe.h): one MemsaveMulBackward in place of MulBackward0. An operand that needs
// keeping and is a producer's untouched output (Note [Recipe source]) is kept as a recipe: the
// producer's node (stock's own, untouched), its version, its geometry. Backward recomputes it
// from the producer's kept input with the kernel that made it, below autograd, and runs
// stock's formula (mul_tensor_backward: grad * other) on it; under create_graph the
// recomputed tensor carries the producer's edge, as stock's unpacked SavedVariable does, so
// the double-backward graph is stock's. Every other multiply is stock's, counted as
// passthrough (nothing to recompute).
#include <ATen/ops/bmm.h>
#include <ATen/ops/mul.h>

#include "../core/kernel.h"
#include "../core/recipe.h"
#include "mm_backward.h"

namespace memsave {
namespace {

using torch::autograd::variable_list;

constexpr auto F = MEMSAVE_FAMILY_RECIPE;

// Keeps operand `t` in `kept`, by recipe when `source` says so (the recipe of `base`: `t`
// itself, or `t` a view of it), and counts it as stock's node would have kept it.
void keep_operand(KeptOperand& kept, const at::Tensor& t, const c10::optional<RecipeSource>& source, Footprint& f,
                  const at::Tensor& base = {}) {
  kept.keep(t, source, base);
  uint64_t& stock = t.is_leaf() ? f.stock.parameters : f.stock.activations;
  uint64_t& ours = t.is_leaf() ? f.kept.parameters : f.kept.activations;
  stock += tensor_bytes(t);
  if (source) f.recomputed += tensor_bytes(t);
  else ours += tensor_bytes(t);
}

struct MulSaved {
  at::Tensor self, other;  // as unpack() returned them (KeptOperand::unpack)
};

// Note [Multiply backward]: MulBackward0's formula (derivatives.yaml, mul.Tensor: self's gradient is
// mul_tensor_backward(grad, other, self's dtype) = grad * other.conj(), other's likewise;
// conj() is the identity on the real dtypes we take), in stock's order: other's first (the
// generated nodes compute their gradients in the order of the inputs' names, as
// MmBackward0's mat2 before self; under double backward this orders the new graph's nodes,
// hence its sums: self's first gave other NaN payloads, tests/test_recipe.py's chains).
// With both operands kept, its output is itself a recipe (Note [Recipe]): a linear that keeps
// silu(g) * u recomputes it from g and u.
class MemsaveMulBackward final : public MemsaveNode<MulSaved>, public RecipeProducer {
 public:
  std::string name() const override { return "MemsaveMulBackward"; }

  KeptOperand self_, other_;  // kept when the other operand needs a gradient

  bool recomputable() const override { return self_.defined() && other_.defined(); }
  void recipe_check() override { (void)unpack(); }
  at::Tensor recompute_output() override {
    const MulSaved s = unpack();
    at::Tensor a = self_.value(s.self), b = other_.value(s.other);
    at::NoGradGuard no_grad;
    PlainUnlessTraced below;
    // Note [Recomputing in place] (core/recipe.h).
    if (self_.fresh() && can_multiply_into(a, b)) return at::mul_out(a, a, b);
    if (other_.fresh() && can_multiply_into(b, a)) return at::mul_out(b, a, b);
    return at::mul(a, b);
  }
  void recipe_fields(Fields& f) override { fields(f); }

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
    if (wanted(1)) out[1] = product(grad, self_, s.self);
    if (wanted(0)) out[0] = product(grad, other_, s.other);
  }
  // grad * operand; into a recomputed operand when nothing records it (Note [Recomputing in
  // place] in core/recipe.h).
  static at::Tensor product(const at::Tensor& grad, const KeptOperand& operand, const at::Tensor& unpacked) {
    if (operand.fresh() && !at::GradMode::is_enabled()) {
      at::Tensor t = operand.value(unpacked);
      if (can_multiply_into(t, grad) && t.sizes() == grad.sizes()) {
        PlainUnlessTraced below;
        return at::mul_out(t, grad, t);
      }
      return at::mul(grad, t);
    }
    return at::mul(grad, operand.tensor(unpacked));
  }
};

// aten::mul.Tensor(Tensor self, Tensor other) -> Tensor
struct Mul : Op<Mul> {
  static constexpr memsave_family_t kFamily = F;
  using Node = MemsaveMulBackward;

  at::Tensor self, other;
  c10::optional<RecipeSource> self_source, other_source;  // when kept (the other needs a gradient)
  explicit Mul(const Call& c) : self(c.tensor(0)), other(c.tensor(1)) {
    if (!recipes_on(python_keys(c.keys()))) return;
    if (other.requires_grad()) self_source = recipe_source(self);
    if (self.requires_grad()) other_source = recipe_source(other);
  }

  std::array<at::Tensor, 2> differentiable() const { return {self, other}; }
  // Nothing to recompute: stock's node keeps what it must. Under compile tracing the
  // compiler's partitioner decides what to recompute (its graph is stock's).
  bool stock_minimal() const { return !self_source && !other_source; }

  const char* prepare(const Call&) const {
    if (self.dtype() != other.dtype()) return "recipe: operands of different dtypes";
    if (saved_tensor_hooks_set()) return kRecipeUnderHooks;
    return nullptr;
  }

  NodePtr<Node> node(const Call&) const { return make_node<Node>(); }

  Footprint keep(const Call&, Node& node) const {
    Footprint f;
    if (other.requires_grad()) keep_operand(node.self_, self, self_source, f);
    if (self.requires_grad()) keep_operand(node.other_, other, other_source, f);
    return f;
  }
};

struct BmmSaved {
  at::Tensor self, mat2;  // as unpack() returned them (KeptOperand::unpack)
};

// Note [Bmm backward]: BmmBackward0's formula (derivatives.yaml, bmm: self's gradient is
// grad.bmm(mat2.transpose(1, 2).conj()), mat2's self.transpose(1, 2).conj().bmm(grad)), with
// the same calls in stock's order: mat2's first. It keeps self only for mat2's gradient and
// mat2 only for self's. Attention (1.13's F.multi_head_attention_forward) computes
// bmm(dropout(softmax(s)), v): the dropout's output is a recipe (the probabilities
// SoftmaxBackward0 keeps, times the dropout's 1-bit mask), so it is not kept twice. 4-D
// matmul (eager attention in LLaMA-style code) reaches bmm with views of its operands.
class MemsaveBmmBackward final : public MemsaveNode<BmmSaved> {
 public:
  std::string name() const override { return "MemsaveBmmBackward"; }

  KeptOperand self_, mat2_;  // kept when the other operand needs a gradient

 private:
  BmmSaved unpack() override {
    const bool check = !functional();
    return {self_.unpack(check), mat2_.unpack(check)};
  }
  void release() override {
    self_.reset_data();
    mat2_.reset_data();
  }
  void fields(Fields& f) override {
    self_.fields(f);
    mat2_.fields(f);
  }
  void backward(const at::Tensor& grad, const BmmSaved& s, variable_list& out) override {
    if (wanted(1)) out[1] = self_.tensor(s.self).transpose(1, 2).conj().bmm(grad);
    if (wanted(0)) out[0] = grad.bmm(mat2_.tensor(s.mat2).transpose(1, 2).conj());
  }
};

// aten::bmm(Tensor self, Tensor mat2) -> Tensor
struct Bmm : Op<Bmm> {
  static constexpr memsave_family_t kFamily = F;
  using Node = MemsaveBmmBackward;

  at::Tensor self, mat2;
  at::Tensor self_base, mat2_base;                      // what their recipes make
  c10::optional<RecipeSource> self_source, mat2_source;  // when kept (the other needs a gradient)
  // Through a view too: 4-D matmul (LLaMA's eager attention, probs @ v) reaches bmm with
  // views of its operands (expand, then a reshape that folds the batch dimensions).
  explicit Bmm(const Call& c) : self(c.tensor(0)), mat2(c.tensor(1)) {
    if (!recipes_on(python_keys(c.keys()))) return;
    if (mat2.requires_grad()) self_source = recipe_source_through_view(self, self_base);
    if (self.requires_grad()) mat2_source = recipe_source_through_view(mat2, mat2_base);
  }

  std::array<at::Tensor, 2> differentiable() const { return {self, mat2}; }
  // Nothing to recompute: stock's node keeps what it must (Mul's stock_minimal).
  bool stock_minimal() const { return !self_source && !mat2_source; }

  const char* prepare(const Call&) const { return saved_tensor_hooks_set() ? kRecipeUnderHooks : nullptr; }

  NodePtr<Node> node(const Call&) const { return make_node<Node>(); }

  Footprint keep(const Call&, Node& node) const {
    Footprint f;
    if (mat2.requires_grad()) keep_operand(node.self_, self, self_source, f, self_base);
    if (self.requires_grad()) keep_operand(node.mat2_, mat2, mat2_source, f, mat2_base);
    return f;
  }
};

struct MmSaved {
  at::Tensor mat1, mat2;  // as unpack() returned them (KeptOperand::unpack)
};

// Note [Mm consumer]: C++ torch::nn::Linear does not call aten::linear (linear.cpp's
// consumer): its functional linear computes addmm(bias, x, w.t()) for a 2-D input with a
// bias, and x.matmul(w.t()) (then += bias) otherwise, which for a 3-D input is mm of a fold
// (a view of x) and w.t(). MmBackward0 and AddmmBackward0 keep mat1 when mat2 needs a
// gradient and mat2 when mat1 does; this node keeps either as a recipe when it is one, or a
// view of one (the fold: recipe_source_through_view), with stock's formulas in stock's order
// (Note [Matrix product backward] in mm_backward.h). addmm only with alpha == beta == 1
// (C++ Linear's; self's gradient is then grad itself).
class MemsaveMmBackward final : public MemsaveNode<MmSaved> {
 public:
  MemsaveMmBackward(const at::Tensor& mat1, const at::Tensor& mat2, bool addmm)
      : mat1_geometry_(mat1), mat2_geometry_(mat2), addmm_(addmm) {}
  std::string name() const override { return addmm_ ? "MemsaveAddmmBackward" : "MemsaveMmBackward"; }

  KeptOperand mat1_, mat2_;  // kept when the other operand needs a gradient

 private:
  MmSaved unpack() override {
    const bool check = !functional();
    return {mat1_.unpack(check), mat2_.unpack(check)};
  }
  void release() override {
    mat1_.reset_data();
    mat2_.reset_data();
  }
  void fields(Fields& f) override {
    mat1_.fields(f);
    mat2_.fields(f);
    for (const MatrixGeometry* m : {&mat1_geometry_, &mat2_geometry_}) {
      f.ints(m->sizes);
      f.ints(m->strides);
    }
    f.flag(addmm_);
  }
  void backward(const at::Tensor& grad, const MmSaved& s, variable_list& out) override {
    const size_t m1 = addmm_ ? 1 : 0, m2 = m1 + 1;  // addmm's inputs: self, mat1, mat2
    const auto mat1_grad = [&] {
      if (wanted(m1)) out[m1] = mm_mat1_grad(grad, mat2_.tensor(s.mat2), mat1_geometry_);
    };
    const auto mat2_grad = [&] {
      if (wanted(m2)) out[m2] = mm_mat2_grad(grad, mat1_.tensor(s.mat1), mat2_geometry_);
    };
    if (addmm_) {
      if (wanted(0)) out[0] = grad;  // the engine reduces it to self's shape
      mat1_grad(), mat2_grad();
    } else {
      mat2_grad(), mat1_grad();
    }
  }

  MatrixGeometry mat1_geometry_, mat2_geometry_;
  bool addmm_;
};

// What aten::mm and aten::addmm share: the two matrices, their recipes.
template <class O>
struct MatrixProduct : Op<O> {
  static constexpr memsave_family_t kFamily = F;
  using Node = MemsaveMmBackward;

  at::Tensor mat1, mat2;
  at::Tensor mat1_base, mat2_base;                      // what their recipes make
  c10::optional<RecipeSource> mat1_source, mat2_source;  // when kept (the other needs a gradient)
  MatrixProduct(const Call& c, size_t first) : mat1(c.tensor(first)), mat2(c.tensor(first + 1)) {
    if (!recipes_on(python_keys(c.keys()))) return;
    if (mat2.requires_grad()) mat1_source = recipe_source_through_view(mat1, mat1_base);
    if (mat1.requires_grad()) mat2_source = recipe_source_through_view(mat2, mat2_base);
  }

  // Nothing to recompute: stock's node keeps what it must (Mul's stock_minimal).
  bool stock_minimal() const { return !mat1_source && !mat2_source; }

  NodePtr<Node> node(const Call&) const { return make_node<Node>(mat1, mat2, O::kAddmm); }

  Footprint keep(const Call&, Node& node) const {
    Footprint f;
    if (mat2.requires_grad()) keep_operand(node.mat1_, mat1, mat1_source, f, mat1_base);
    if (mat1.requires_grad()) keep_operand(node.mat2_, mat2, mat2_source, f, mat2_base);
    return f;
  }
};

// aten::mm(Tensor self, Tensor mat2) -> Tensor
struct Mm : MatrixProduct<Mm> {
  static constexpr bool kAddmm = false;
  explicit Mm(const Call& c) : MatrixProduct(c, 0) {}
  std::array<at::Tensor, 2> differentiable() const { return {mat1, mat2}; }
  const char* prepare(const Call&) const { return saved_tensor_hooks_set() ? kRecipeUnderHooks : nullptr; }
};

// aten::addmm(Tensor self, Tensor mat1, Tensor mat2, *, Scalar beta=1, Scalar alpha=1) -> Tensor
struct Addmm : MatrixProduct<Addmm> {
  static constexpr bool kAddmm = true;
  at::Tensor self;
  bool unit_scalars;  // beta == alpha == 1
  explicit Addmm(const Call& c) : MatrixProduct(c, 1), self(c.tensor(0)) {
    const auto one = [](const c10::IValue& v) { return v.isInt() ? v.toInt() == 1 : v.isDouble() && v.toDouble() == 1; };
    unit_scalars = one(c.arg(3)) && one(c.arg(4));
  }
  std::array<at::Tensor, 3> differentiable() const { return {self, mat1, mat2}; }
  const char* prepare(const Call&) const {
    if (saved_tensor_hooks_set()) return kRecipeUnderHooks;
    return unit_scalars ? nullptr : "recipe: addmm with beta or alpha other than 1";
  }
};

// aten::native_layer_norm(Tensor input, SymInt[] normalized_shape, Tensor? weight, Tensor? bias,
// float eps) -> (Tensor, Tensor, Tensor): stock's kernel, node and outputs, untouched; then eps
// is noted for the output stock made (Note [Layer norm eps] in core/recipe.h), so that it has
// a recipe: a linear that keeps it (a post-norm transformer's first MLP linear, the next
// layer's attention projection) keeps the recipe.
void layer_norm_producer(const c10::OperatorHandle& op, c10::DispatchKeySet, torch::jit::Stack* stack) {
  const double eps = stack->back().toDouble();
  op.callBoxedForDispatchKey(c10::DispatchKey::Autograd, *stack);
  if (!family_on(F) || !at::GradMode::is_enabled()) return;
  const at::Tensor& out = (*stack)[stack->size() - 3].toTensor();
  if (out.requires_grad() && out.grad_fn()) remember_layer_norm_eps(out, eps);
}

// aten::silu_, aten::hardswish_, aten::mish_(Tensor(a!) self) -> Tensor(a!): stock's kernel,
// node and output, untouched; then the version stock left the output at is noted (Note
// [In-place producer] in core/recipe.h), so that it has a recipe while it stays there.
void inplace_producer(const c10::OperatorHandle& op, c10::DispatchKeySet, torch::jit::Stack* stack) {
  op.callBoxedForDispatchKey(c10::DispatchKey::Autograd, *stack);
  if (!family_on(F) || !at::GradMode::is_enabled()) return;
  const at::Tensor& out = stack->back().toTensor();
  if (out.requires_grad() && out.grad_fn() && !out.is_view()) remember_inplace_producer(out);
}

void register_recipe(Registrar& r) {
  r.op<Mul>("mul.Tensor");
  r.op<Bmm>("bmm");
  r.op<Mm>("mm");
  r.op<Addmm>("addmm");
  r.boxed<&layer_norm_producer>("native_layer_norm");
  for (const char* name : {"silu_", "hardswish_", "mish_"}) r.boxed<&inplace_producer>(name);
}
const FamilyRegistration registration(F, &register_recipe);

}  // namespace
}  // namespace memsave
