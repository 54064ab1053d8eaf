// SPDX-License-Identifier: MIT
// linear.cpp: aten::linear on AutogradCPU/AutogradCUDA: one node for the whole layer.
//
// Stock: aten::linear is composite. A 2-D input with a bias becomes addmm(bias, x, w.t())
// (AddmmBackward0 after TBackward0); without a bias mm(x, w.t()) (MmBackward0); an N-D input
// is folded to 2-D by a view, and unfolded after. AddmmBackward0/MmBackward0 already keep
// the 2-D input only if the weight needs a gradient, and w.t() (a view of the weight, no
// new memory) only if the input needs one (docs/pytorch.md §1.2).
// Here: one MemsaveLinearBackward with the same rule: the input only if the weight needs a
// gradient, the weight only if the input needs one. Backward runs the operations of
// stock's mm_mat1_backward/mm_mat2_backward (torch/csrc/autograd/FunctionsManual.cpp) on
// the same operands, in the same order (Note [Linear backward]).
// Stock keeps the same tensors, so this node saves no memory; it replaces two to four
// nodes by one. The family is off by default (MEMSAVE_OPS) for that reason.
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/version.h>

#include "../core/kernel.h"

namespace memsave {
namespace {

using torch::autograd::SavedVariable;
using torch::autograd::variable_list;

// Note [Linear backward]: stock computes, with mat1 = the 2-D input (or its folded view)
// and mat2 = w.t(), and alpha == beta == 1 (so maybe_multiply returns its argument):
//   grad mat1 = mat1 column-major ? mat2.mm(grad.t()).t() : grad.mm(mat2.t())
//   grad mat2 = mat2 column-major ? grad.t().mm(mat1).t() : mat1.t().mm(grad)
//   grad bias = grad (addmm) or the N-D gradient (matmul + add_), reduced to the bias's
//               shape by the engine (at::sum_to, InputMetadata::reduce_grad)
// then TBackward0 transposes the weight gradient and the view nodes reshape the gradients
// of an N-D input. "Column-major" is stock's test strides[0] == 1 && strides[1] == sizes[0]
// on the 2-D operand; conj() is the identity for real dtypes. We do the same, on the same
// operands with the same strides, so the results are bitwise stock's.
struct MatrixGeometry {
  std::vector<int64_t> sizes, strides;
  MatrixGeometry(std::vector<int64_t> sizes, std::vector<int64_t> strides)
      : sizes(std::move(sizes)), strides(std::move(strides)) {}
  bool column_major() const { return strides[0] == 1 && strides[1] == sizes[0]; }
};

struct LinearSaved {
  at::Tensor input, weight;
};

class MemsaveLinearBackward final : public MemsaveNode<LinearSaved> {
 public:
  // `mat1` is the 2-D input of stock's mm/addmm (the input or its folded view).
  MemsaveLinearBackward(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& mat1,
                        bool bias_grad_folded)
      : input_(weight.requires_grad() ? input : at::Tensor(), /*is_output=*/false),
        weight_(input.requires_grad() ? weight : at::Tensor(), /*is_output=*/false),
        input_sizes_(input.sizes().vec()),
        mat1_(mat1.sizes().vec(), mat1.strides().vec()),
        // w.t(), without building the view (and its node) here.
        mat2_({weight.size(1), weight.size(0)}, {weight.stride(1), weight.stride(0)}),
        bias_grad_folded_(bias_grad_folded) {}

  std::string name() const override { return "MemsaveLinearBackward"; }

 private:
  LinearSaved unpack() override { return {input_.unpack(), weight_.unpack()}; }
  void release() override { reset_data(input_, weight_); }
  void fields(Fields& f) override {
    f.saved(input_, false);
    f.saved(weight_, false);
    f.ints(input_sizes_);
    for (const MatrixGeometry* m : {&mat1_, &mat2_}) {
      f.ints(m->sizes);
      f.ints(m->strides);
    }
    f.flag(bias_grad_folded_);
  }

  void backward(const at::Tensor& grad, const LinearSaved& s, variable_list& out) override {
    const bool folded = input_sizes_.size() != 2;
    // ViewBackward0/UnsafeViewBackward0 of the output: grad.reshape(the 2-D product's sizes).
    const at::Tensor grad2 = folded ? grad.reshape({mat1_.sizes[0], mat2_.sizes[1]}) : grad;
    if (task_should_compute_output(0)) {
      const at::Tensor mat2 = s.weight.t();
      at::Tensor g = mat1_.column_major() ? mat2.mm(grad2.t()).t() : grad2.mm(mat2.t());
      out[0] = folded ? g.reshape(input_sizes_) : g;  // the fold's view node
    }
    if (task_should_compute_output(1)) {
      const at::Tensor mat1 = folded ? s.input.view(mat1_.sizes) : s.input;
      at::Tensor g = mat2_.column_major() ? grad2.t().mm(mat1).t() : mat1.t().mm(grad2);
      out[1] = g.t();  // TBackward0
    }
    if (task_should_compute_output(2)) out[2] = bias_grad_folded_ ? grad2 : grad;
  }

  SavedVariable input_, weight_;
  std::vector<int64_t> input_sizes_;
  MatrixGeometry mat1_;  // the 2-D input of stock's mm/addmm
  MatrixGeometry mat2_;  // w.t()
  bool bias_grad_folded_;
};

// Whether stock reduces the bias gradient from the 2-D product (addmm) rather than from the
// N-D output (matmul, then add_). Only asked for a contiguous input of 3 or more dimensions
// and a 1-D contiguous bias.
bool stock_folds_bias(int64_t dim) {
#if TORCH_VERSION_MAJOR >= 2
  // 2.x: any contiguous input with a 1-D bias goes through _flatten_nd_linear (2.6; the
  // 2.10-era source also asks for a contiguous bias, which the caller requires).
  (void)dim;
  return true;
#else
  // 1.13: only a contiguous 3-D input goes through _flatten_3d_linear.
  return dim == 3;
#endif
}

// aten::linear(input, weight, bias?) -> Tensor
struct Linear : Op<Linear> {
  static constexpr memsave_family_t kFamily = MEMSAVE_FAMILY_LINEAR;
  static constexpr c10::DispatchKey kStock = c10::DispatchKey::CompositeImplicitAutograd;
  using Node = MemsaveLinearBackward;

  at::Tensor input, weight, bias;
  at::Tensor mat1;  // the 2-D operand of stock's mm/addmm
  explicit Linear(const Call& c) : input(c.tensor(0)), weight(c.tensor(1)), bias(c.optional_tensor(2)) {}

  std::array<at::Tensor, 3> differentiable() const { return {input, weight, bias}; }

  const char* prepare(const Call&) {
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
    // The input, or the view that folds it (the same view op stock uses, run below autograd
    // so that it builds no node).
    at::AutoDispatchBelowADInplaceOrView guard;
    mat1 = input.dim() == 2 ? input : input.view({-1, input.size(-1)});
    return nullptr;
  }

  std::shared_ptr<Node> node(const Call&) const {
    return make_node<Node>(input, weight, mat1, input.dim() == 2 || stock_folds_bias(input.dim()));
  }

  // Stock keeps the (folded) input when the weight needs a gradient and w.t() when the
  // input does: the same tensors as ours.
  Footprint keep(const Call&, Node&) const {
    const Bytes kept{weight.requires_grad() ? tensor_bytes(input) : 0, input.requires_grad() ? tensor_bytes(weight) : 0};
    return {kept, kept};
  }
};

void register_linear(Registrar& r) { r.op<Linear>("linear"); }
const FamilyRegistration registration(MEMSAVE_FAMILY_LINEAR, &register_linear);

}  // namespace
}  // namespace memsave
