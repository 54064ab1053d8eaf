// SPDX-License-Identifier: MIT
// pool.cpp: max, average and adaptive average pooling (1-d to 3-d) and mean.dim (global
// average pooling) on AutogradCPU/AutogradCUDA, with nodes that keep no input.
//
// Stock: MaxPool{2,3}DWithIndicesBackward0 keeps the whole input, although backward reads
// only its sizes and memory format, plus the int64 index of every maximum.
// AvgPool{2,3}DBackward0 and AdaptiveAvgPool{2,3}DBackward0 keep the whole input for its
// sizes. On 1.13, MeanBackward1 keeps the whole input for its element count; global average
// pooling (adaptive_avg_pool with output size 1, as at the end of a ResNet) goes through
// mean.dim.
// Here: max pooling keeps where each maximum lies inside its window, in one byte when the
// window has at most 256 elements (Note [Window offsets]), or, when the caller asked for the
// indices, references that output as stock does. The other nodes keep sizes, strides and
// options only. The 1-d pools reach the 2-d ops through stock's composites (unsqueeze, 2-d
// op, squeeze), so they are covered too.
#include <ATen/TensorOperators.h>
#include <ATen/ops/_adaptive_avg_pool2d_backward.h>
#include <ATen/ops/_adaptive_avg_pool3d_backward.h>
#include <ATen/ops/avg_pool2d_backward.h>
#include <ATen/ops/avg_pool3d_backward.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/max_pool2d_with_indices_backward.h>
#include <ATen/ops/max_pool3d_with_indices_backward.h>
#include <c10/core/WrapDimMinimal.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/csrc/autograd/variable.h>

#include "../core/kernel.h"
#include "pool_windows.h"

namespace memsave {
namespace {

using torch::autograd::SavedVariable;
using torch::autograd::variable_list;

constexpr auto F = MEMSAVE_FAMILY_POOL;

// Note [Pool stand-in]: the pool backward kernels read only the input's sizes and its
// suggested memory format, which decides grad_input's layout (docs/pytorch.md §2.1;
// an expanded scalar loses channels_last). For a contiguous input, an expanded 0-dim tensor
// carries both without allocating; any other input gets an uninitialised tensor with its
// strides (Note [Stand-in] in conv.cpp).
// Under create_graph, stock's double-backward node (e.g. MaxPool2DWithIndicesBackwardBackward0)
// has an edge to the input, which receives zeros_like(input). The stand-in takes over the
// input's gradient edge, so the same graph is built and the input receives the same zeros.
template <class Saved>
class PoolBackward : public MemsaveNode<Saved> {
 protected:
  explicit PoolBackward(const at::Tensor& input)
      : input_(input),
        expand_stand_in_(input.is_contiguous() && input.suggest_memory_format() == at::MemoryFormat::Contiguous) {}

  at::Tensor stand_in(const at::Tensor& grad) const {
    at::Tensor s;
    {
      PlainUnlessTraced guard;  // a plain tensor, not a tracked view
      // Traced with static sizes, one that follows the gradient's layout if a compiler
      // changes it (Note [Traced stand-in] in core/standin.h).
      if (tracing() && !grad.unsafeGetTensorImpl()->has_symbolic_sizes_strides())
        s = input_.stand_in_like(grad);
      else
        s = expand_stand_in_ ? expanded_stand_in(input_.sizes, input_.options) : input_.empty_strided();
    }
    if (at::GradMode::is_enabled()) torch::autograd::impl::set_gradient_edge(s, this->next_edge(0));
    return s;
  }
  // What every pool node's fields() starts with (Note [Compiled autograd] in core/node.h).
  void stand_in_fields(Fields& f) const {
    f.geometry(input_);
    f.flag(expand_stand_in_);
  }

  Geometry input_;

 private:
  bool expand_stand_in_;
};

// Note [Indices the caller never sees]: max_pool{1,2,3}d are composites that call
// max_pool{2,3}d_with_indices and drop the indices; a direct call of the *_with_indices op
// (return_indices=True) hands them to the caller. Our kernels on the composites raise this
// flag around stock's composite; the *_with_indices kernel takes it down on entry. With it
// the node keeps window offsets; without it the node references the caller's indices, as
// stock does, instead of keeping a second copy.
thread_local bool t_indices_discarded = false;

struct IndicesDiscarded {
  bool previous = t_indices_discarded;
  IndicesDiscarded() { t_indices_discarded = true; }
  ~IndicesDiscarded() { t_indices_discarded = previous; }
};

bool take_indices_discarded() {
  const bool discarded = t_indices_discarded;
  t_indices_discarded = false;
  return discarded;
}

class MemsaveMaxPoolBackward final : public PoolBackward<at::Tensor> {
 public:
  MemsaveMaxPoolBackward(const at::Tensor& input, Windows windows, std::vector<int64_t> kernel,
                         std::vector<int64_t> stride, std::vector<int64_t> padding, std::vector<int64_t> dilation,
                         bool ceil_mode)
      : PoolBackward(input),
        windows_(std::move(windows)),
        kernel_(std::move(kernel)),
        stride_(std::move(stride)),
        padding_(std::move(padding)),
        dilation_(std::move(dilation)),
        ceil_mode_(ceil_mode) {}

  std::string name() const override {
    return windows_.dims() == 2 ? "MemsaveMaxPool2DBackward" : "MemsaveMaxPool3DBackward";
  }

  // The caller holds the indices: reference them, as stock does.
  void keep_indices(const at::Tensor& indices) { argmax_ = SavedVariable(indices, /*is_output=*/true); }
  // The caller never sees the indices: keep window offsets (computed below autograd).
  void keep_offsets(const at::Tensor& offsets) {
    argmax_ = SavedVariable(offsets, /*is_output=*/false);
    offsets_ = true;
    out_sizes_ = offsets.sizes().slice(offsets.dim() - windows_.dims()).vec();
  }

 private:
  at::Tensor unpack() override { return argmax_.unpack(self_ptr(this)); }
  void release() override { argmax_.reset_data(); }
  void fields(Fields& f) override {
    stand_in_fields(f);
    f.saved(argmax_, /*is_output=*/!offsets_);
    f.flag(offsets_);
    f.ints(out_sizes_);
    for (const auto* v : {&windows_.kernel, &windows_.stride, &windows_.padding, &windows_.dilation, &kernel_, &stride_,
                          &padding_, &dilation_})
      f.ints(*v);
    f.flag(ceil_mode_);
  }

  void backward(const at::Tensor& grad, const at::Tensor& argmax, variable_list& out) override {
    const int n = windows_.dims();
    const at::IntArrayRef in = at::IntArrayRef(input_.sizes).slice(input_.sizes.size() - n);
    at::Tensor indices;
    if (offsets_) {
      PlainUnlessTraced guard;
      indices = windows_.indices_in_pieces(argmax, in, out_sizes_);
    } else {
      indices = argmax;
    }
    out[0] = n == 2 ? at::max_pool2d_with_indices_backward(grad, stand_in(grad), kernel_, stride_, padding_, dilation_,
                                                           ceil_mode_, indices)
                    : at::max_pool3d_with_indices_backward(grad, stand_in(grad), kernel_, stride_, padding_, dilation_,
                                                           ceil_mode_, indices);
  }

  Windows windows_;
  std::vector<int64_t> kernel_, stride_, padding_, dilation_;  // as given, for stock's backward
  bool ceil_mode_;
  SavedVariable argmax_;
  bool offsets_ = false;
  std::vector<int64_t> out_sizes_;  // with offsets: the output's spatial sizes
};

class MemsaveAvgPoolBackward final : public PoolBackward<Nothing> {
 public:
  MemsaveAvgPoolBackward(const at::Tensor& input, int dims, std::vector<int64_t> kernel, std::vector<int64_t> stride,
                         std::vector<int64_t> padding, bool ceil_mode, bool count_include_pad,
                         c10::optional<int64_t> divisor_override)
      : PoolBackward(input),
        dims_(dims),
        kernel_(std::move(kernel)),
        stride_(std::move(stride)),
        padding_(std::move(padding)),
        ceil_mode_(ceil_mode),
        count_include_pad_(count_include_pad),
        divisor_override_(divisor_override) {}

  std::string name() const override { return dims_ == 2 ? "MemsaveAvgPool2DBackward" : "MemsaveAvgPool3DBackward"; }

 private:
  Nothing unpack() override { return {}; }
  void fields(Fields& f) override {
    stand_in_fields(f);
    f.integer(dims_);
    for (const auto* v : {&kernel_, &stride_, &padding_}) f.ints(*v);
    f.flag(ceil_mode_);
    f.flag(count_include_pad_);
    f.flag(divisor_override_.has_value());
    f.integer(divisor_override_.value_or(0));
  }

  void backward(const at::Tensor& grad, const Nothing&, variable_list& out) override {
    out[0] = dims_ == 2 ? at::avg_pool2d_backward(grad, stand_in(grad), kernel_, stride_, padding_, ceil_mode_,
                                                  count_include_pad_, divisor_override_)
                        : at::avg_pool3d_backward(grad, stand_in(grad), kernel_, stride_, padding_, ceil_mode_,
                                                  count_include_pad_, divisor_override_);
  }

  int dims_;
  std::vector<int64_t> kernel_, stride_, padding_;
  bool ceil_mode_, count_include_pad_;
  c10::optional<int64_t> divisor_override_;
};

class MemsaveAdaptiveAvgPoolBackward final : public PoolBackward<Nothing> {
 public:
  MemsaveAdaptiveAvgPoolBackward(const at::Tensor& input, int dims) : PoolBackward(input), dims_(dims) {}

  std::string name() const override {
    return dims_ == 2 ? "MemsaveAdaptiveAvgPool2DBackward" : "MemsaveAdaptiveAvgPool3DBackward";
  }

 private:
  Nothing unpack() override { return {}; }
  void fields(Fields& f) override {
    stand_in_fields(f);
    f.integer(dims_);
  }

  void backward(const at::Tensor& grad, const Nothing&, variable_list& out) override {
    out[0] = dims_ == 2 ? at::_adaptive_avg_pool2d_backward(grad, stand_in(grad))
                        : at::_adaptive_avg_pool3d_backward(grad, stand_in(grad));
  }

  int dims_;
};

// MeanBackward1 on 1.13 computes mean_backward(grad, self.sizes(), dim, self.numel(),
// keepdim) from FunctionsManual.cpp, which LibTorch does not export. This is the same
// sequence of ops: sum_backward (unsqueeze the reduced dimensions unless keepdim, expand to
// the input's sizes), then a division by the number of elements averaged, an integer
// Scalar. Checked bit for bit against stock in tests/test_pool.cpp (every dtype, keepdim,
// dim lists, channels_last).
class MemsaveMeanBackward final : public MemsaveNode<Nothing> {
 public:
  MemsaveMeanBackward(const at::Tensor& input, c10::optional<std::vector<int64_t>> dims, bool keepdim)
      : sizes_(input.sizes().vec()), numel_(input.numel()), dims_(std::move(dims)), keepdim_(keepdim) {}

  std::string name() const override { return "MemsaveMeanBackward"; }

 private:
  Nothing unpack() override { return {}; }
  void fields(Fields& f) override {
    f.ints(sizes_);
    f.integer(numel_);
    f.optional_ints(dims_);
    f.flag(keepdim_);
  }

  void backward(const at::Tensor& grad, const Nothing&, variable_list& out) override {
    const bool all = !dims_ || dims_->empty();
    out[0] = sum_backward(grad) / (all ? numel_ : reduced_numel());
  }

  at::Tensor sum_backward(const at::Tensor& grad) const {
    if (keepdim_ || sizes_.empty() || !dims_ || dims_->empty()) return grad.expand(sizes_);
    if (dims_->size() == 1) return grad.unsqueeze((*dims_)[0]).expand(sizes_);
    std::vector<bool> reduced(sizes_.size(), false);
    for (int64_t d : *dims_) reduced[c10::maybe_wrap_dim(d, static_cast<int64_t>(sizes_.size()))] = true;
    at::Tensor g = grad;
    for (size_t i = 0; i < sizes_.size(); i++)
      if (reduced[i]) g = g.unsqueeze(static_cast<int64_t>(i));
    return g.expand(sizes_);
  }

  // FunctionsManual's _safe_size: the product of the reduced sizes.
  int64_t reduced_numel() const {
    if (sizes_.empty()) return 1;
    int64_t n = 1;
    for (int64_t d : *dims_) n *= sizes_[c10::maybe_wrap_dim(d, static_cast<int64_t>(sizes_.size()))];
    return n;
  }

  std::vector<int64_t> sizes_;
  int64_t numel_;
  c10::optional<std::vector<int64_t>> dims_;
  bool keepdim_;
};

// What every pooling operator shares: one differentiable input, which must not be named.
template <class O>
struct Pool : OneInput<O, F> {
  using OneInput<O, F>::OneInput;
  // Stock keeps the input; we keep `kept` bytes of activations.
  Footprint input_not_kept(uint64_t kept = 0, uint64_t stock_more = 0) const {
    return {{kept, 0}, {tensor_bytes(this->input) + stock_more, 0}};
  }
};

// max_pool{2,3}d_with_indices(self, kernel_size, stride, padding, dilation, ceil_mode) -> (Tensor, Tensor)
template <int Dims>
struct MaxPoolWithIndices : Pool<MaxPoolWithIndices<Dims>> {
  using Node = MemsaveMaxPoolBackward;
  const bool discarded = take_indices_discarded();  // first, whatever route the call takes
  c10::optional<Windows> windows;
  using Pool<MaxPoolWithIndices>::Pool;

  const char* prepare(const Call& c) {
    if (const char* why = this->unnamed_with_int_lists(c, {1, 2, 3, 4})) return why;
    if (this->input.dim() == Dims + 1 || this->input.dim() == Dims + 2)
      windows = windows_of(Dims, c.ints(1), c.ints(2), c.ints(3), c.ints(4));
    return windows ? nullptr : "pooling arguments stock rejects";
  }
  NodePtr<Node> node(const Call& c) const {
    return make_node<Node>(this->input, *windows, c.ints(1), c.ints(2), c.ints(3), c.ints(4), c.arg(5).toBool());
  }
  Footprint keep(const Call& c, Node& node) const {
    const at::Tensor indices = c.output(1);
    at::Tensor offsets;
    if (discarded) {
      at::AutoDispatchBelowADInplaceOrView guard;
      const at::IntArrayRef in = this->input.sizes().slice(this->input.dim() - Dims);
      // Note [Index outside its window] (pool_windows.h): otherwise stock's indices, as below.
      if (windows->represents(indices, in)) offsets = windows->offsets_in_pieces(indices, in);
    }
    if (!offsets.defined()) {
      node.keep_indices(indices);
      return this->input_not_kept(tensor_bytes(indices), tensor_bytes(indices));
    }
    node.keep_offsets(offsets);
    return this->input_not_kept(tensor_bytes(offsets), tensor_bytes(indices));
  }
};

// avg_pool{2,3}d(self, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
template <int Dims>
struct AvgPool : Pool<AvgPool<Dims>> {
  using Node = MemsaveAvgPoolBackward;
  using Pool<AvgPool>::Pool;
  const char* prepare(const Call& c) const { return this->unnamed_with_int_lists(c, {1, 2, 3}); }
  NodePtr<Node> node(const Call& c) const {
    const c10::optional<int64_t> divisor = c.arg(6).isNone() ? c10::nullopt : c10::optional<int64_t>(c.arg(6).toInt());
    return make_node<Node>(this->input, Dims, c.ints(1), c.ints(2), c.ints(3), c.arg(4).toBool(), c.arg(5).toBool(),
                           divisor);
  }
  Footprint keep(const Call&, Node&) const { return this->input_not_kept(); }
};

// _adaptive_avg_pool{2,3}d(self, output_size)
template <int Dims>
struct AdaptiveAvgPool : Pool<AdaptiveAvgPool<Dims>> {
  using Node = MemsaveAdaptiveAvgPoolBackward;
  using Pool<AdaptiveAvgPool>::Pool;
  const char* prepare(const Call& c) const { return this->unnamed_with_int_lists(c, {1}); }
  NodePtr<Node> node(const Call&) const { return make_node<Node>(this->input, Dims); }
  Footprint keep(const Call&, Node&) const { return this->input_not_kept(); }
};

// mean.dim(self, dim?, keepdim, *, dtype?)
struct MeanDim : Pool<MeanDim> {
  using Node = MemsaveMeanBackward;
  using Pool<MeanDim>::Pool;
  // 2.x's MeanBackward1 keeps sizes and the element count only (docs/pytorch.md §1.2).
  bool stock_minimal() const { return kStockMeanPoolMinimal; }
  const char* prepare(const Call& c) const {
    return unnamed_with_int_lists(c, c.arg(1).isNone() ? std::initializer_list<size_t>{} : std::initializer_list<size_t>{1});
  }
  NodePtr<Node> node(const Call& c) const {
    c10::optional<std::vector<int64_t>> dims;
    if (!c.arg(1).isNone()) dims = c.ints(1);
    return make_node<Node>(input, std::move(dims), c.arg(2).toBool());
  }
  Footprint keep(const Call&, Node&) const { return input_not_kept(); }
};

void register_pool(Registrar& r) {
  r.composite<IndicesDiscarded>("max_pool1d");
  r.composite<IndicesDiscarded>("max_pool2d");
  r.composite<IndicesDiscarded>("max_pool3d");
  r.op<MaxPoolWithIndices<2>>("max_pool2d_with_indices");
  r.op<MaxPoolWithIndices<3>>("max_pool3d_with_indices");
  r.op<AvgPool<2>>("avg_pool2d");
  r.op<AvgPool<3>>("avg_pool3d");
  r.op<AdaptiveAvgPool<2>>("_adaptive_avg_pool2d");
  r.op<AdaptiveAvgPool<3>>("_adaptive_avg_pool3d");
  r.op<MeanDim>("mean.dim");
  // Note [Uncovered route]: adaptive and fractional max pooling keep input and indices.
  r.uncovered<MEMSAVE_FAMILY_POOL>({"adaptive_max_pool2d", "adaptive_max_pool3d", "fractional_max_pool2d",
                                    "fractional_max_pool3d", "_mps_max_pool2d"});
}
const FamilyRegistration registration(F, &register_pool);

}  // namespace
}  // namespace memsave
