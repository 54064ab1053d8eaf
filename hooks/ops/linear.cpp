// SPDX-License-Identifier: MIT
// linear.cpp: aten::linear on AutogradCPU/AutogradCUDA: one node for the whole layer.
//
// Stock: aten::linear is composite. A 2-D input with a bias becomes addmm(bias, x, w.t())
// (AddmmBackward0 after TBackward0); without a bias mm(x, w.t()) (MmBackward0); an N-D input
// is folded to 2-D by a view, and unfolded after. AddmmBackward0/MmBackward0 already keep
// the 2-D input only if the weight needs a gradient, and w.t() (a view of the weight, no
// new memory) only if the input needs one (docs/pytorch.md §1.2).
// Here: one MemsaveLinearBackward in place of stock's product node, the output's unfold
// view and the bias's add, with the same rule: the 2-D input only if the weight needs a
// gradient, w.t() only if the input needs one. Stock's w.t() and fold view are made as
// stock makes them, with their nodes, and the node's edges point at them (Note [Linear
// edges]). Backward runs the operations of stock's mm_mat1_backward/mm_mat2_backward
// (torch/csrc/autograd/FunctionsManual.cpp) on the same operands, in the same order (Note
// [Linear backward]).
// Stock keeps the same tensors, so this node saves no memory; it replaces two or three
// nodes by one. The family is off by default (MEMSAVE_OPS) for that reason.
#include <ATen/ExpandUtils.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/version.h>

#include "../core/kernel.h"
#include "../core/recipe.h"
#include "mm_backward.h"

namespace memsave {
namespace {

using torch::autograd::SavedVariable;
using torch::autograd::variable_list;

// Note [Linear backward]: stock's AddmmBackward0 or MmBackward0 with mat1 = the 2-D input (or
// its folded view) and mat2 = w.t(), alpha == beta == 1 (Note [Matrix product backward] in
// mm_backward.h), in their order (addmm: mat1's first; mm: mat2's first); the bias's gradient
// is grad (addmm) or the N-D gradient (matmul + add_), reduced to the bias's shape by the
// engine (at::sum_to, InputMetadata::reduce_grad). Then TBackward0 transposes the weight
// gradient and the fold's view node reshapes the gradient of an N-D input. The same calls
// on the same operands with the same strides: the results are bitwise stock's.
//
// Note [Linear edges]: the node's edges go to stock's own TBackward0 (of w.t()) and fold
// view node (of an N-D input), made in the forward as stock makes them and in stock's order
// (their sequence numbers order the engine's work), and the node keeps those views, as
// AddmmBackward0 does. Under double backward, the second-order paths to the weight (through
// the kept w.t() and through this node) then meet at that TBackward0, and those to the input
// at the view node, summed in stock's layout and order. Before, with edges to the weight
// and input themselves, they met at the leaves: NaN payloads and the strides of a weight
// with a size-1 dimension differed from stock (found by test_property, issue 15).
struct LinearSaved {
  at::Tensor mat1, mat2;
};

class MemsaveLinearBackward final : public MemsaveNode<LinearSaved> {
 public:
  // `mat1` is the 2-D input of stock's mm/addmm (the input or its folded view), `mat2` is
  // w.t(), both made with autograd (Note [Linear edges]).
  // `input_source`: the input's recipe (Note [Recipe] in core/recipe.h), kept in place of
  // mat1 (the input or its fold).
  MemsaveLinearBackward(const at::Tensor& mat1, const at::Tensor& mat2, const at::Tensor& bias, bool folded,
                        bool bias_grad_folded, const at::Tensor& input, const c10::optional<RecipeSource>& input_source)
      : mat2_(mat1.requires_grad() ? mat2 : at::Tensor(), /*is_output=*/false),
        mat1_geometry_(mat1),
        mat2_geometry_(mat2),
        bias_sizes_(bias.defined() ? bias.sizes().vec() : std::vector<int64_t>()),
        folded_(folded),
        bias_grad_folded_(bias_grad_folded),
        addmm_(bias.defined() && bias_grad_folded) {
    if (mat2.requires_grad()) mat1_.keep(mat1, input_source, input);
  }

  std::string name() const override { return "MemsaveLinearBackward"; }

 private:
  LinearSaved unpack() override { return {mat1_.unpack(!functional()), mat2_.unpack()}; }
  void release() override { reset_data(mat1_, mat2_); }
  void fields(Fields& f) override {
    mat1_.fields(f);
    f.saved(mat2_, false);
    for (const MatrixGeometry* m : {&mat1_geometry_, &mat2_geometry_}) {
      f.ints(m->sizes);
      f.ints(m->strides);
    }
    f.ints(bias_sizes_);
    f.flag(folded_);
    f.flag(bias_grad_folded_);
    f.flag(addmm_);
  }

  void backward(const at::Tensor& grad, const LinearSaved& s, variable_list& out) override {
    // matmul + add_: stock's AddBackward0 runs first, and the engine reduces its bias
    // gradient (at::sum_to, InputMetadata::reduce_grad) before the product's nodes run; made
    // first here too, so that under double backward the graph's nodes keep stock's order.
    if (!bias_grad_folded_ && wanted(2)) out[2] = at::sum_to(grad, bias_sizes_);
    // The output's unfold view (ViewBackward0/UnsafeViewBackward0): grad.reshape(the 2-D
    // product's sizes).
    const at::Tensor grad2 = folded_ ? grad.reshape({mat1_geometry_.sizes[0], mat2_geometry_.sizes[1]}) : grad;
    // To the fold's view node (or the 2-D input), and to TBackward0.
    const auto mat1_grad = [&] {
      if (wanted(0)) out[0] = mm_mat1_grad(grad2, s.mat2, mat1_geometry_);
    };
    const auto mat2_grad = [&] {
      if (wanted(1)) out[1] = mm_mat2_grad(grad2, mat1_.tensor(s.mat1), mat2_geometry_);
    };
    if (addmm_) mat1_grad(), mat2_grad();
    else mat2_grad(), mat1_grad();
    if (bias_grad_folded_ && wanted(2)) out[2] = grad2;  // addmm: the engine reduces it
  }

  KeptOperand mat1_;  // the 2-D input, or its recipe
  SavedVariable mat2_;
  MatrixGeometry mat1_geometry_;  // the 2-D input of stock's mm/addmm
  MatrixGeometry mat2_geometry_;  // w.t()
  std::vector<int64_t> bias_sizes_;
  bool folded_;                   // an N-D input
  bool bias_grad_folded_;         // reduced from the 2-D product (2-D input, or a fold)
  bool addmm_;                    // stock's product is addmm (with the bias), not mm
};

// Whether stock reduces the bias gradient from the 2-D product (addmm) rather than from the
// N-D output (matmul, then add_). Only asked for a contiguous input of 3 or more dimensions
// and a 1-D contiguous bias.
bool stock_folds_bias(int64_t dim) {
  // 2.x: any contiguous input with a 1-D bias goes through _flatten_nd_linear (2.6; the
  // 2.10-era source also asks for a contiguous bias, which the caller requires). 1.13: only a
  // contiguous 3-D input goes through _flatten_3d_linear. (compat.h)
  return kLinearFoldsAnyRank || dim == 3;
}

// aten::linear(input, weight, bias?) -> Tensor
struct Linear : Op<Linear> {
  static constexpr memsave_family_t kFamily = MEMSAVE_FAMILY_LINEAR;
  static constexpr c10::DispatchKey kStock = c10::DispatchKey::CompositeImplicitAutograd;
  using Node = MemsaveLinearBackward;

  at::Tensor input, weight, bias;
  at::Tensor mat1, mat2;  // the 2-D operands of stock's mm/addmm, made with autograd
  // The input's recipe, kept in place of mat1 when the weight needs a gradient (the recipe
  // family's consumer, Note [Recipe] in core/recipe.h).
  c10::optional<RecipeSource> input_source;
  bool recipe_call = false;  // counted under the recipe family
  explicit Linear(const Call& c) : input(c.tensor(0)), weight(c.tensor(1)), bias(c.optional_tensor(2)) {
    if (weight.requires_grad() && recipes_on(python_keys(c.keys()))) input_source = recipe_source(input);
    recipe_call = input_source.has_value();
  }

  // Registered for the recipe family too (its registration below): a call is ours when the
  // linear family is on, or when the recipe family can keep the input's recipe.
  static bool enabled() { return family_on(MEMSAVE_FAMILY_LINEAR) || family_on(MEMSAVE_FAMILY_RECIPE); }
  memsave_family_t family() const { return recipe_call ? MEMSAVE_FAMILY_RECIPE : MEMSAVE_FAMILY_LINEAR; }
  bool wanted() const {
    return (family_on(MEMSAVE_FAMILY_LINEAR) || recipe_call) && Op<Linear>::wanted();
  }

  std::array<at::Tensor, 3> differentiable() const { return {input, weight, bias}; }
  std::array<at::Tensor, 3> edges() const { return {mat1, mat2, bias}; }

  const char* prepare(const Call&) {
    if (input_source && saved_tensor_hooks_set()) {
      if (!family_on(MEMSAVE_FAMILY_LINEAR)) return kRecipeUnderHooks;  // counted as the recipe family's
      input_source.reset();  // stock's tensors, as the hooks expect
      recipe_call = false;
    }
    if (weight.dim() != 2) return "linear weight is not 2-D";
    if (input.dim() < 2) return "linear input is 1-D";  // stock goes through unsqueeze/squeeze
    if (input.numel() == 0) return "linear input is empty";
    if (input.dim() > 2) {
      // Stock's N-D path depends on the layout and the version (bmm on expanded weights for
      // some non-contiguous inputs); we follow only the fold of a contiguous input.
      if (!input.is_contiguous()) return "linear N-D input is not contiguous";
      if (bias.defined() && (bias.dim() != 1 || !bias.is_contiguous()))
        return "linear N-D input with a bias not 1-D contiguous";
    }
    // Stock's w.t() and fold, with their nodes, in stock's order (Note [Linear edges]): the
    // fold of an addmm input is a view on 1.13 (_flatten_3d_linear, made after w.t()) and a
    // reshape on 2.x (_flatten_nd_linear, made before it); matmul's is a reshape, after w.t().
    const auto fold = [&] { return input.reshape({-1, input.size(-1)}); };
    if (input.dim() == 2) {
      mat2 = weight.t();
      mat1 = input;
    } else if (!folds_bias()) {
      mat2 = weight.t();
      mat1 = fold();
    } else if (kLinearFoldsAnyRank) {
      mat1 = fold();
      mat2 = weight.t();
    } else {
      mat2 = weight.t();
      mat1 = input.view({-1, input.size(-1)});
    }
    return nullptr;
  }

  NodePtr<Node> node(const Call&) const {
    return make_node<Node>(mat1, mat2, bias, input.dim() != 2, input.dim() == 2 || folds_bias(), input, input_source);
  }

  // Stock keeps the (folded) input when the weight needs a gradient and w.t() when the
  // input does: the same tensors as ours, but for an input kept as a recipe.
  Footprint keep(const Call&, Node&) const {
    const Bytes stock{weight.requires_grad() ? tensor_bytes(input) : 0, input.requires_grad() ? tensor_bytes(weight) : 0};
    return {{input_source ? 0 : stock.activations, stock.parameters}, stock, input_source ? stock.activations : 0};
  }

 private:
  // Whether an N-D input goes through stock's addmm with the bias (rather than matmul).
  bool folds_bias() const { return bias.defined() && stock_folds_bias(input.dim()); }
};

void register_linear(Registrar& r) { r.op<Linear>("linear"); }
const FamilyRegistration registration(MEMSAVE_FAMILY_LINEAR, &register_linear, 1u << MEMSAVE_FAMILY_RECIPE);

}  // namespace
}  // namespace memsave
