// SPDX-License-Identifier: MIT
// batchnorm.cpp: aten::native_batch_norm and aten::cudnn_batch_norm on AutogradCPU/AutogradCUDA,
// and the node that keeps no input.
//
// Stock: NativeBatchNormBackward0 (CPU, and CUDA without cuDNN) and CudnnBatchNormBackward0
// keep the input, the weight, the running statistics and the saved mean/invstd (cuDNN also
// its reserve space) for every requires_grad pattern, because one formula covers input,
// weight and bias. So a frozen batch norm keeps its whole input alive until backward.
// Here: the input is needed only for the weight gradient (eval mode, running statistics) or
// for the input and weight gradients (training mode, batch statistics). When it is not
// needed we keep the weight, the running statistics, the saved mean/invstd (C elements
// each, or none in eval) and the input's geometry; backward calls stock's
// native_batch_norm_backward with a stand-in for the input (Note [Batch norm stand-in]).
// When the input is needed, stock keeps exactly what backward needs and is called
// (counted as passthrough). So:
//   eval:     weight needs grad -> stock; otherwise (input and/or bias) -> no input kept
//   training: input or weight needs grad -> stock; only the bias -> no input kept
// Running statistics are updated by stock's own forward kernel, called below autograd,
// so their values and in-place updates are exactly stock's.
#include <ATen/ops/native_batch_norm_backward.h>
#include <torch/csrc/autograd/saved_variable.h>

#include "../core/kernel.h"

namespace memsave {
namespace {

using torch::autograd::SavedVariable;
using torch::autograd::variable_list;

// Note [Batch norm stand-in]: native_batch_norm_backward reads the input's data only for
// the input gradient in training mode and for the weight gradient (the dot product of
// (x - mean) and grad_out). The other results do not depend on it: in eval the input
// gradient is grad_out * invstd * weight, and the bias gradient is the sum of grad_out in
// both modes (aten/src/ATen/native/Normalization.cpp and cpu/batch_norm_kernel.cpp; the CPU
// kernels still read the input for the unused dot product, and discard it: an uninitialised
// stand-in is harmless there, though a memory sanitizer would report the read). Double
// backward (batchnorm_double_backward in FunctionsManual.cpp) uses the input only in terms
// that need the weight's gradient or the training input gradient, which our node never
// computes; tests/test_batchnorm.cpp compares it with stock.
// The kernel and the layout of grad_input are chosen from the input's strides, so the
// stand-in must have the recorded sizes and strides (docs/pytorch.md §2.1).
// The incoming gradient has the input's sizes, dtype and device and, usually, its strides;
// when it has all four it serves as the stand-in (the kernel only reads it), which saves an
// input-sized allocation in backward. Otherwise, and under create_graph (where the double
// backward node would keep the stand-in, and an alias of the gradient would tie the two
// tensors' version counters), an uninitialised tensor is built with empty_strided, as for
// convolution (Note [Stand-in]).
//
// Note [Batch norm eval in pieces]: in eval mode with only the input's gradient, each element
// of the result is grad_out * invstd * weight of its channel, invstd computed from the running
// variance alone (batch_norm_cpu_backward_contiguous_impl and the other CPU paths of
// batch_norm_backward_cpu in 1.13 and 2.x). So stock's kernel run on a slice of the batch
// gives, element for element, what it gives on the whole batch. When the incoming gradient is
// contiguous, has the input's geometry and is ours to reuse (Note [Reusing the incoming
// gradient] in core/rules.h), we run the kernel on slices of about kPieceBytes and copy each
// result into the gradient's own slice, which is returned. Stock's step holds the gradient and
// a result of the same size (in 1.13 two: its CPU kernel allocates grad_input twice); ours,
// the gradient and two slices. The bias gradient, a sum over the batch, would change with the
// slicing, so any call that wants it (or the weight's) keeps the single call. CPU only.
//
// CUDA (source reading only, not run: no GPU in the development setup): the eval kernel
// uses the input only for its sizes, but when the bias needs a gradient it runs a reduction
// over the input and picks kernels by its layout, and every training backward reads it
// (cuDNN's included). Those cases are sent to stock (counted as fallbacks).
struct BatchNormSaved {
  at::Tensor weight, running_mean, running_var, save_mean, save_invstd;
};

class MemsaveBatchNormBackward final : public MemsaveNode<BatchNormSaved> {
 public:
  MemsaveBatchNormBackward(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& running_mean,
                           const at::Tensor& running_var, bool training, double eps)
      : input_(input),
        weight_(weight, /*is_output=*/false),
        running_mean_(running_mean, /*is_output=*/false),
        running_var_(running_var, /*is_output=*/false),
        training_(training),
        eps_(eps) {}

  std::string name() const override { return "MemsaveBatchNormBackward"; }

  // Kept after the forward ran, as stock keeps result1/result2.
  void save_statistics(const at::Tensor& save_mean, const at::Tensor& save_invstd) {
    save_mean_ = SavedVariable(save_mean, /*is_output=*/true);
    save_invstd_ = SavedVariable(save_invstd, /*is_output=*/true);
  }

 private:
  // In stock's order, so that a version error names the same tensor first.
  BatchNormSaved unpack() override {
    return {weight_.unpack(), running_mean_.unpack(), running_var_.unpack(), save_mean_.unpack(self_ptr(this)),
            save_invstd_.unpack(self_ptr(this))};
  }

  void release() override { reset_data(weight_, running_mean_, running_var_, save_mean_, save_invstd_); }
  void fields(Fields& f) override {
    f.geometry(input_);
    for (SavedVariable* v : {&weight_, &running_mean_, &running_var_}) f.saved(*v, false);
    for (SavedVariable* v : {&save_mean_, &save_invstd_}) f.saved(*v, true);
    f.flag(training_);
    f.real(eps_);
  }

  void backward(const at::Tensor& grad, const BatchNormSaved& s, variable_list& out) override {
    const std::array<bool, 3> mask{wanted(0), wanted(1), wanted(2)};
    // We build this node only when backward never reads the input's values.
    TORCH_INTERNAL_ASSERT(!mask[1], name(), ": weight gradient requested without a kept input");
    TORCH_INTERNAL_ASSERT(!(training_ && mask[0]), name(), ": training input gradient requested");
    if (in_pieces(grad, mask)) {
      out[0] = backward_in_pieces(grad, s);
      return;
    }
    // cudnn_batch_norm's eval formula is this same call (with training == false).
    auto res = at::native_batch_norm_backward(grad, stand_in(grad), s.weight, s.running_mean, s.running_var,
                                              s.save_mean, s.save_invstd, training_, eps_, mask);
    if (mask[0]) out[0] = std::move(std::get<0>(res));
    if (mask[2]) out[2] = std::move(std::get<2>(res));
  }

  bool has_input_geometry(const at::Tensor& grad) const {
    return grad.sizes() == at::IntArrayRef(input_.sizes) && grad.strides() == at::IntArrayRef(input_.strides) &&
           grad.dtype() == input_.options.dtype() && grad.device() == input_.options.device();
  }

  // Note [Batch norm stand-in].
  at::Tensor stand_in(const at::Tensor& grad) const {
    // Traced, the gradient's sizes may be symbolic (Note [Compiled autograd] in core/node.h);
    // when they are not, the gradient serves in the graph as it does in eager, and a compiler
    // that changes its layout changes the stand-in's with it (Note [Traced stand-in]).
    const bool symbolic = grad.unsafeGetTensorImpl()->has_symbolic_sizes_strides();
    if (!at::GradMode::is_enabled() && !symbolic && has_input_geometry(grad)) return stand_in_for(grad);
    return tracing() ? input_.stand_in_like(grad) : input_.empty_strided();
  }

  // Note [Batch norm eval in pieces].
  static constexpr int64_t kPieceBytes = int64_t{1} << 20;

  bool in_pieces(const at::Tensor& grad, const std::array<bool, 3>& mask) const {
    if (training_ || !mask[0] || mask[1] || mask[2] || tracing() || !grad.is_cpu() || grad.dim() < 2 || !grad.is_contiguous() ||
        !has_input_geometry(grad) || !gradient_is_reusable(grad))
      return false;
    return samples_per_piece(grad) < grad.size(0);  // two pieces at least
  }

  // Samples per piece: about kPieceBytes, at least one.
  static int64_t samples_per_piece(const at::Tensor& grad) {
    const int64_t sample_bytes = static_cast<int64_t>(tensor_bytes(grad)) / std::max<int64_t>(grad.size(0), 1);
    return std::max<int64_t>(1, kPieceBytes / std::max<int64_t>(sample_bytes, 1));
  }

  at::Tensor backward_in_pieces(const at::Tensor& grad, const BatchNormSaved& s) const {
    at::AutoDispatchBelowADInplaceOrView guard;  // plain tensors: no grad (in_pieces), no view tracking
    const int64_t n = grad.size(0), per = samples_per_piece(grad);
    for (int64_t start = 0; start < n; start += per) {
      const at::Tensor g = grad.narrow(0, start, std::min(per, n - start));
      // The piece is its own stand-in, as the whole gradient is in Note [Batch norm stand-in].
      auto res = at::native_batch_norm_backward(g, stand_in_for(g), s.weight, s.running_mean, s.running_var, s.save_mean,
                                                s.save_invstd, /*train=*/false, eps_, {true, false, false});
      g.copy_(std::get<0>(res));
    }
    return grad;
  }

  Geometry input_;
  SavedVariable weight_, running_mean_, running_var_, save_mean_, save_invstd_;
  bool training_;
  double eps_;
};

bool requires_grad(const at::Tensor& t) { return t.defined() && t.requires_grad(); }

// aten::native_batch_norm(input, weight?, bias?, running_mean?, running_var?, training, momentum, eps)
//   -> (output, save_mean, save_invstd)
// aten::cudnn_batch_norm(input, weight, bias?, running_mean?, running_var?, training,
//   exponential_average_factor, epsilon) -> (output, save_mean, save_var, reserve)
// Only the first output is differentiable in both (as in stock).
template <bool kCudnn>
struct BatchNorm : Op<BatchNorm<kCudnn>> {
  static constexpr memsave_family_t kFamily = MEMSAVE_FAMILY_BATCHNORM;
  using Node = MemsaveBatchNormBackward;

  at::Tensor input, weight, bias, running_mean, running_var;
  bool training;
  explicit BatchNorm(const Call& c)
      : input(c.tensor(0)),
        weight(c.optional_tensor(1)),
        bias(c.optional_tensor(2)),
        running_mean(c.optional_tensor(3)),
        running_var(c.optional_tensor(4)),
        training(c.arg(5).toBool()) {}

  std::array<at::Tensor, 3> differentiable() const { return {input, weight, bias}; }
  std::array<at::Tensor, 5> checked() const { return {input, weight, bias, running_mean, running_var}; }
  // The input is read for the weight's gradient, and in training for the input's.
  bool stock_minimal() const { return training ? input.requires_grad() || requires_grad(weight) : requires_grad(weight); }

  // Stock raises its own error for the first two; the CUDA cases of Note [Batch norm stand-in].
  const char* prepare(const Call&) const {
    if (requires_grad(running_mean) || requires_grad(running_var)) return "running statistics require grad";
    if (!training && !(running_mean.defined() && running_var.defined())) return "eval mode without running statistics";
    if (input.is_cuda()) {
      if (training) return kCudnn ? "cuDNN batch norm training backward reads the input"
                                  : "CUDA batch norm training backward reads the input";
      if (requires_grad(bias)) return "CUDA batch norm eval backward reads the input for the bias gradient";
    }
    return nullptr;
  }

  NodePtr<Node> node(const Call& c) const {
    return make_node<Node>(input, weight, running_mean, running_var, training, c.arg(7).toDouble());
  }

  Footprint keep(const Call& c, Node& node) const {
    const at::Tensor save_mean = c.output(1), save_invstd = c.output(2);
    node.save_statistics(save_mean, save_invstd);
    const Bytes kept{tensor_bytes(save_mean) + tensor_bytes(save_invstd),
                     tensor_bytes(weight) + tensor_bytes(running_mean) + tensor_bytes(running_var)};
    // Stock also keeps the input and cuDNN's reserve space, which eval does not need.
    const uint64_t reserve = kCudnn ? tensor_bytes(c.output(3)) : 0;
    return {kept, {kept.activations + tensor_bytes(input) + reserve, kept.parameters}};
  }
};

void register_batchnorm(Registrar& r) {
  r.op<BatchNorm<false>>("native_batch_norm");
  r.op<BatchNorm<true>>("cudnn_batch_norm");
  // Note [Uncovered route]: ROCm's kernel, and 2.x's batch norms that export and compile
  // programs call (eager batch_norm does not).
  r.uncovered<MEMSAVE_FAMILY_BATCHNORM>(
      {"miopen_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit.no_stats",
       "_native_batch_norm_legit_functional", "_native_batch_norm_legit_no_training", "_batch_norm_with_update",
       "_batch_norm_with_update_functional", "_batch_norm_no_update"});
}
const FamilyRegistration registration(MEMSAVE_FAMILY_BATCHNORM, &register_batchnorm);

}  // namespace
}  // namespace memsave
