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
#include <ATen/core/grad_mode.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/ops/_adaptive_avg_pool2d_backward.h>
#include <ATen/ops/_adaptive_avg_pool3d_backward.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/aminmax.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/avg_pool2d_backward.h>
#include <ATen/ops/avg_pool3d_backward.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_strided.h>
#include <ATen/ops/max_pool2d_with_indices_backward.h>
#include <ATen/ops/max_pool3d_with_indices_backward.h>
#include <c10/core/WrapDimMinimal.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/version.h>

#include <algorithm>

#include "common.h"

namespace memsave {
namespace {

using torch::autograd::Node;
using torch::autograd::SavedVariable;
using torch::autograd::variable_list;

constexpr auto F = MEMSAVE_FAMILY_POOL;

// Note [Pool stand-in]: the pool backward kernels read only the input's sizes and its
// suggested memory format, which decides grad_input's layout (shared/PYTORCH-NOTES.md §2.1;
// an expanded scalar loses channels_last). For a contiguous input, an expanded 0-dim tensor
// carries both without allocating; any other input gets an uninitialised tensor with its
// strides (Note [Stand-in] in conv.cpp).
// Under create_graph, stock's double-backward node (e.g. MaxPool2DWithIndicesBackwardBackward0)
// has an edge to the input, which receives zeros_like(input). The stand-in takes over the
// input's gradient edge, so the same graph is built and the input receives the same zeros.
class PoolBackward : public Node {
 public:
  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    released_ = true;
    release_saved();
  }

  // The one apply of the pool nodes. Stock's node unpacks what it saved first, so a second
  // backward (or a version mismatch) raises even when the incoming gradient is undefined or
  // no gradient is wanted.
  variable_list apply(variable_list&& grads) final {
    std::lock_guard<std::mutex> lock(mutex_);
    TORCH_INTERNAL_ASSERT(grads.size() == 1, name(), ": expected 1 gradient, got ", grads.size());
    TORCH_CHECK(!released_, torch::autograd::ERR_BACKWARD_TWICE);
    const at::Tensor saved = unpack_saved();
    variable_list out(1);
    if (!task_should_compute_output(0) || !grads[0].defined()) return out;
    out[0] = backward(grads[0], saved);
    return out;
  }

 protected:
  explicit PoolBackward(const at::Tensor& input)
      : input_(input),
        expand_stand_in_(input.is_contiguous() && input.suggest_memory_format() == at::MemoryFormat::Contiguous) {}

  // What the node keeps besides the input's geometry (max pool: its indices or offsets),
  // unpacked; undefined for the others. Called with mutex_ held.
  virtual at::Tensor unpack_saved() { return {}; }
  virtual void release_saved() {}
  // Stock's backward kernel for `grad`, with `saved` from unpack_saved.
  virtual at::Tensor backward(const at::Tensor& grad, const at::Tensor& saved) = 0;

  at::Tensor stand_in() const {
    at::Tensor s;
    {
      at::AutoDispatchBelowADInplaceOrView guard;  // a plain tensor, not a tracked view
      s = expand_stand_in_ ? at::empty({}, input_.options).expand(input_.sizes) : input_.empty_strided();
    }
    if (at::GradMode::is_enabled()) torch::autograd::impl::set_gradient_edge(s, next_edge(0));
    return s;
  }

  Geometry input_;

 private:
  bool expand_stand_in_;
  bool released_ = false;
};

// Note [Window offsets]: stock's index of a maximum is its flat position in the input plane
// of its (batch, channel): index = sum_d i_d P_d, with S_d the input's spatial sizes and
// P_d = S_{d+1} ... S_{n-1} the plane's strides. Every kernel (CPU, channels_last, CUDA)
// picks an element of the maximum's window, and the window of output position o has its
// element k_d (0 <= k_d < K_d, the kernel size) at i_d = s_d + k_d dil_d, where
// s_d = o_d stride_d - padding_d; ceil_mode only adds output positions, whose windows follow
// the same rule. We keep the window-local position k = sum_d k_d Q_d, with
// Q_d = K_{d+1} ... K_{n-1}: below 256 for a window of at most 256 elements. Both directions
// are exact integer arithmetic in plain tensor ops, so they run on every device:
//   k     = index - sum_{d<n-1} i_d (P_d - Q_d) - sum_d s_d Q_d          (no dilation)
//   index = k dil_{n-1} + sum_{d<n-1} k_d (dil_d P_d - dil_{n-1} Q_d) + sum_d s_d P_d
// where i_d and k_d come from index and k by integer division, and the sums over s_d are
// small tensors of the output's spatial shape. A dimension with S_d == 1 (the 1-d pools,
// which run as 2-d pools of height 1) has i_d == 0; one with K_d == 1 has k_d == 0.
struct Windows {
  std::vector<int64_t> kernel, stride, padding, dilation;  // one entry per spatial dimension

  int dims() const { return static_cast<int>(kernel.size()); }

  // The smallest type that holds every window-local position.
  at::ScalarType offset_dtype() const {
    int64_t n = 1;
    for (int64_t k : kernel) n *= k;
    if (n <= 256) return at::kByte;
    if (n <= 32768) return at::kShort;
    return at::kInt;
  }

  // Window-local positions from stock's indices, a piece at a time (Note [Pieces]).
  at::Tensor offsets_in_pieces(const at::Tensor& indices, at::IntArrayRef in) const {
    return in_pieces(indices, offset_dtype(), [&](const at::Tensor& piece) { return offsets(piece, in); });
  }

  // Stock's int64 indices from window-local positions, a piece at a time (Note [Pieces]).
  at::Tensor indices_in_pieces(const at::Tensor& offsets, at::IntArrayRef in) const {
    return in_pieces(offsets, at::kLong, [&](const at::Tensor& piece) { return indices(piece, in); });
  }

 private:
  // Note [Pieces]: the conversions below build several int64 temporaries of the output's
  // size (the indices are 2x a float output; the temporaries were as large again). They are
  // exact integer arithmetic, element by element with the window starts of the element's
  // own output position, so they run on pieces of the non-spatial dimension with the most
  // entries and write into one result with the strides the whole conversion would give
  // (dense input: the same strides; otherwise the whole tensor at once).
  template <typename Fn>
  at::Tensor in_pieces(const at::Tensor& t, at::ScalarType dtype, const Fn& convert) const {
    constexpr int64_t kPiece = int64_t{1} << 16;  // elements
    const int64_t batch_dims = t.dim() - dims();
    int64_t split = 0;
    for (int64_t d = 1; d < batch_dims; d++)
      if (t.size(d) > t.size(split)) split = d;
    if (batch_dims < 1 || t.numel() <= kPiece || t.size(split) < 2 || !t.is_non_overlapping_and_dense())
      return convert(t);
    at::Tensor out = at::empty_strided(t.sizes(), t.strides(), t.options().dtype(dtype));
    const int64_t per_entry = t.numel() / t.size(split);
    const int64_t step = std::max<int64_t>(1, kPiece / per_entry);
    for (int64_t i = 0; i < t.size(split); i += step) {
      const int64_t len = std::min(step, t.size(split) - i);
      out.narrow(split, i, len).copy_(convert(t.narrow(split, i, len)));
    }
    return out;
  }

  // Window-local positions from stock's indices. `in`: the input's spatial sizes. In-place
  // ops without alpha only: they are the vectorised ones for integers.
  at::Tensor offsets(const at::Tensor& indices, at::IntArrayRef in) const {
    for (int64_t d : dilation)
      if (d != 1) return offsets_dilated(indices, in);
    const int n = dims();
    const std::vector<int64_t> P = strides_of(in), Q = strides_of(kernel);
    at::Tensor k, outer;  // outer: index / P_{d-1}, the flat position of (i_0 .. i_{d-1})
    for (int d = 0; d + 1 < n; d++) {
      if (in[d] == 1) continue;
      at::Tensor flat = indices.div(P[d], "trunc");  // indices are never negative
      at::Tensor i = outer.defined() ? flat.sub(outer.mul(in[d])) : d + 2 < n ? flat.clone() : flat;
      outer = flat;
      i.mul_(Q[d] - P[d]);
      k = k.defined() ? k.add_(i) : i.add_(indices);
    }
    const at::Tensor starts = start_sum(indices, Q);
    k = k.defined() ? k.sub_(starts) : indices.sub(starts);
    return k.to(offset_dtype());
  }

  // Stock's int64 indices from window-local positions; checked against the plane's size,
  // since out-of-range indices crash the CPU kernel. The divisions run on the narrow type
  // (every divisor is below the window's size, so it fits).
  at::Tensor indices(const at::Tensor& offsets, at::IntArrayRef in) const {
    const int n = dims();
    const std::vector<int64_t> P = strides_of(in), Q = strides_of(kernel);
    const int64_t last = dilation[n - 1];
    at::Tensor index, outer;  // outer: k / Q_{d-1}
    for (int d = 0; d + 1 < n; d++) {
      if (kernel[d] == 1) continue;
      at::Tensor flat = offsets.div(Q[d], "trunc");
      at::Tensor kd = outer.defined() ? flat.sub(outer.mul(kernel[d])) : flat;
      outer = flat;
      at::Tensor term = kd.to(at::kLong).mul_(dilation[d] * P[d] - last * Q[d]);
      index = index.defined() ? index.add_(term) : term;
    }
    at::Tensor k = offsets.to(at::kLong);
    if (last != 1) k.mul_(last);
    index = index.defined() ? index.add_(k) : k;
    index.add_(start_sum(offsets, P));
    if (index.numel() > 0) {
      auto range = at::aminmax(index);
      const int64_t lo = std::get<0>(range).item<int64_t>(), hi = std::get<1>(range).item<int64_t>();
      const int64_t plane = P[0] * in[0];
      TORCH_INTERNAL_ASSERT(lo >= 0 && hi < plane, "memsave: rebuilt max-pool indices out of range [", lo, ", ", hi,
                            "] for a plane of ", plane);
    }
    return index;
  }

  static std::vector<int64_t> strides_of(at::IntArrayRef sizes) {
    std::vector<int64_t> strides(sizes.size(), 1);
    for (int d = static_cast<int>(sizes.size()) - 2; d >= 0; d--) strides[d] = strides[d + 1] * sizes[d + 1];
    return strides;
  }

  // The first position of each window along spatial dimension d, shaped to broadcast
  // against a tensor whose last dims() dimensions are the output positions.
  at::Tensor starts(int d, int64_t outputs, const at::Device& device) const {
    std::vector<int64_t> shape(dims() - d, 1);
    shape[0] = outputs;
    return at::arange(outputs, at::TensorOptions().dtype(at::kLong).device(device))
        .mul_(stride[d])
        .sub_(padding[d])
        .view(shape);
  }

  // sum_d s_d w_d over the output positions of `t` (whose last dims() dimensions are the
  // output positions): a small int64 tensor of the output's spatial shape.
  at::Tensor start_sum(const at::Tensor& t, const std::vector<int64_t>& w) const {
    const int n = dims();
    at::Tensor sum;
    for (int d = 0; d < n; d++) {
      at::Tensor s = starts(d, t.size(t.dim() - n + d), t.device()).mul_(w[d]);
      sum = sum.defined() ? sum + s : s;
    }
    return sum;
  }

  // offsets() with dilation: k_d = (i_d - s_d) / dil_d, one dimension at a time.
  at::Tensor offsets_dilated(const at::Tensor& indices, at::IntArrayRef in) const {
    const int n = dims();
    std::vector<at::Tensor> coord(n);
    at::Tensor rest = indices;
    for (int d = n - 1; d > 0; d--) {
      coord[d] = rest.remainder(in[d]);
      rest = rest.div(in[d], "trunc");
    }
    coord[0] = rest;
    at::Tensor local;
    for (int d = 0; d < n; d++) {
      at::Tensor k = coord[d].sub(starts(d, indices.size(indices.dim() - n + d), indices.device()));
      if (dilation[d] != 1) k = k.div(dilation[d], "trunc");
      local = d == 0 ? k : local.mul_(kernel[d]).add_(k);
    }
    return local.to(offset_dtype());
  }
};

// A pooling parameter as stock accepts it: one value for every dimension or one per
// dimension; `fallback` (the kernel size, for an omitted stride) when empty.
bool per_dim(const std::vector<int64_t>& given, int n, const std::vector<int64_t>* fallback, std::vector<int64_t>& out) {
  if (given.empty() && fallback) {
    out = *fallback;
    return true;
  }
  if (given.size() == 1) {
    out.assign(n, given[0]);
    return true;
  }
  if (static_cast<int>(given.size()) != n) return false;
  out = given;
  return true;
}

c10::optional<Windows> windows_of(int n, const std::vector<int64_t>& kernel, const std::vector<int64_t>& stride,
                                  const std::vector<int64_t>& padding, const std::vector<int64_t>& dilation) {
  Windows w;
  if (!per_dim(kernel, n, nullptr, w.kernel) || !per_dim(stride, n, &w.kernel, w.stride) ||
      !per_dim(padding, n, nullptr, w.padding) || !per_dim(dilation, n, nullptr, w.dilation))
    return c10::nullopt;
  for (int d = 0; d < n; d++)
    if (w.kernel[d] <= 0 || w.stride[d] <= 0 || w.dilation[d] <= 0 || w.padding[d] < 0) return c10::nullopt;
  return w;
}

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

class MemsaveMaxPoolBackward final : public PoolBackward {
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
  }

 private:
  at::Tensor unpack_saved() override { return argmax_.unpack(shared_from_this()); }
  void release_saved() override { argmax_.reset_data(); }

  at::Tensor backward(const at::Tensor& grad, const at::Tensor& argmax) override {
    const int n = windows_.dims();
    const at::IntArrayRef in = at::IntArrayRef(input_.sizes).slice(input_.sizes.size() - n);
    at::Tensor indices;
    if (offsets_) {
      at::AutoDispatchBelowADInplaceOrView guard;
      indices = windows_.indices_in_pieces(argmax, in);
    } else {
      indices = argmax;
    }
    return n == 2 ? at::max_pool2d_with_indices_backward(grad, stand_in(), kernel_, stride_, padding_, dilation_,
                                                         ceil_mode_, indices)
                  : at::max_pool3d_with_indices_backward(grad, stand_in(), kernel_, stride_, padding_, dilation_,
                                                         ceil_mode_, indices);
  }

  Windows windows_;
  std::vector<int64_t> kernel_, stride_, padding_, dilation_;  // as given, for stock's backward
  bool ceil_mode_;
  SavedVariable argmax_;
  bool offsets_ = false;
};

class MemsaveAvgPoolBackward final : public PoolBackward {
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
  at::Tensor backward(const at::Tensor& grad, const at::Tensor&) override {
    return dims_ == 2 ? at::avg_pool2d_backward(grad, stand_in(), kernel_, stride_, padding_, ceil_mode_,
                                                count_include_pad_, divisor_override_)
                      : at::avg_pool3d_backward(grad, stand_in(), kernel_, stride_, padding_, ceil_mode_,
                                                count_include_pad_, divisor_override_);
  }

  int dims_;
  std::vector<int64_t> kernel_, stride_, padding_;
  bool ceil_mode_, count_include_pad_;
  c10::optional<int64_t> divisor_override_;
};

class MemsaveAdaptiveAvgPoolBackward final : public PoolBackward {
 public:
  MemsaveAdaptiveAvgPoolBackward(const at::Tensor& input, int dims) : PoolBackward(input), dims_(dims) {}

  std::string name() const override {
    return dims_ == 2 ? "MemsaveAdaptiveAvgPool2DBackward" : "MemsaveAdaptiveAvgPool3DBackward";
  }

 private:
  at::Tensor backward(const at::Tensor& grad, const at::Tensor&) override {
    return dims_ == 2 ? at::_adaptive_avg_pool2d_backward(grad, stand_in())
                      : at::_adaptive_avg_pool3d_backward(grad, stand_in());
  }

  int dims_;
};

// MeanBackward1 on 1.13 computes mean_backward(grad, self.sizes(), dim, self.numel(),
// keepdim) from FunctionsManual.cpp, which LibTorch does not export. This is the same
// sequence of ops: sum_backward (unsqueeze the reduced dimensions unless keepdim, expand to
// the input's sizes), then a division by the number of elements averaged, an integer
// Scalar. Checked bit for bit against stock in tests/test_pool.cpp (every dtype, keepdim,
// dim lists, channels_last).
class MemsaveMeanBackward final : public Node {
 public:
  MemsaveMeanBackward(const at::Tensor& input, c10::optional<std::vector<int64_t>> dims, bool keepdim)
      : sizes_(input.sizes().vec()), numel_(input.numel()), dims_(std::move(dims)), keepdim_(keepdim) {}

  std::string name() const override { return "MemsaveMeanBackward"; }

  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    released_ = true;
  }

  variable_list apply(variable_list&& grads) override {
    std::lock_guard<std::mutex> lock(mutex_);
    TORCH_INTERNAL_ASSERT(grads.size() == 1, name(), ": expected 1 gradient, got ", grads.size());
    TORCH_CHECK(!released_, torch::autograd::ERR_BACKWARD_TWICE);
    variable_list out(1);
    const at::Tensor& grad = grads[0];
    if (!task_should_compute_output(0) || !grad.defined()) return out;
    const bool all = !dims_ || dims_->empty();
    out[0] = sum_backward(grad) / (all ? numel_ : reduced_numel());
    return out;
  }

 private:
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
  bool released_ = false;
};

bool int_lists(const c10::IValue* args, std::initializer_list<int> idx) {
  for (int i : idx)
    if (!args[i].isIntList()) return false;
  return true;
}

// Why a pooling input cannot take our path, or nullptr.
const char* unsupported_input(c10::DispatchKeySet ks, const at::Tensor& input) {
  const char* why = unsupported_keys(ks);
  if (!why) why = unsupported_tensor(input);
  if (!why && input.has_names()) why = "named tensor";
  return why;
}

bool wants_node(const at::Tensor& input) {
  return family_on(F) && at::GradMode::is_enabled() && input.requires_grad();
}

// Runs the forward below autograd; the op's first output gets the node's history.
void forward_below_autograd(const c10::OperatorHandle& op, c10::DispatchKeySet ks, torch::jit::Stack* stack) {
  at::AutoDispatchBelowADInplaceOrView guard;
  op.redispatchBoxed(ks & c10::after_autograd_keyset, stack);
}

// max_pool{1,2,3}d (composites): Note [Indices the caller never sees].
void max_pool_autograd(const c10::OperatorHandle& op, c10::DispatchKeySet, torch::jit::Stack* stack) {
  IndicesDiscarded scope;
  call_stock(op, stack, c10::DispatchKey::CompositeImplicitAutograd);
}

// max_pool{2,3}d_with_indices(self, kernel_size, stride, padding, dilation, ceil_mode) -> (Tensor, Tensor)
template <int Dims>
void max_pool_with_indices_autograd(const c10::OperatorHandle& op, c10::DispatchKeySet ks, torch::jit::Stack* stack) {
  const bool discarded = take_indices_discarded();
  const c10::IValue* args = &(*stack)[stack->size() - 6];
  const at::Tensor input = args[0].toTensor();
  if (!wants_node(input)) return call_stock(op, stack, c10::DispatchKey::Autograd);
  const char* why = unsupported_input(ks, input);
  if (!why && !int_lists(args, {1, 2, 3, 4})) why = "symbolic sizes";
  c10::optional<Windows> windows;
  if (!why && (input.dim() == Dims + 1 || input.dim() == Dims + 2)) {
    windows = windows_of(Dims, args[1].toIntVector(), args[2].toIntVector(), args[3].toIntVector(),
                         args[4].toIntVector());
  }
  if (!why && !windows) why = "pooling arguments stock rejects";
  if (why) {
    count_fallback(F, why);
    return call_stock(op, stack, c10::DispatchKey::Autograd);
  }

  std::shared_ptr<MemsaveMaxPoolBackward> node(
      new MemsaveMaxPoolBackward(input, *windows, args[1].toIntVector(), args[2].toIntVector(), args[3].toIntVector(),
                                 args[4].toIntVector(), args[5].toBool()),
      torch::autograd::deleteNode);
  node->set_next_edges(torch::autograd::collect_next_edges(input));
  forward_below_autograd(op, ks, stack);
  at::Tensor output = (*stack)[stack->size() - 2].toTensor();
  const at::Tensor indices = (*stack)[stack->size() - 1].toTensor();
  if (discarded) {
    at::Tensor offsets;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      offsets = windows->offsets_in_pieces(indices, input.sizes().slice(input.dim() - Dims));
    }
    node->keep_offsets(offsets);
    count_substituted(F, tensor_bytes(offsets), tensor_bytes(input) + tensor_bytes(indices));
  } else {
    node->keep_indices(indices);
    count_substituted(F, tensor_bytes(indices), tensor_bytes(input) + tensor_bytes(indices));
  }
  torch::autograd::set_history(output, node);
}

// avg_pool{2,3}d(self, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
template <int Dims>
void avg_pool_autograd(const c10::OperatorHandle& op, c10::DispatchKeySet ks, torch::jit::Stack* stack) {
  const c10::IValue* args = &(*stack)[stack->size() - 7];
  const at::Tensor input = args[0].toTensor();
  if (!wants_node(input)) return call_stock(op, stack, c10::DispatchKey::Autograd);
  const char* why = unsupported_input(ks, input);
  if (!why && !int_lists(args, {1, 2, 3})) why = "symbolic sizes";
  if (why) {
    count_fallback(F, why);
    return call_stock(op, stack, c10::DispatchKey::Autograd);
  }
  const c10::optional<int64_t> divisor = args[6].isNone() ? c10::nullopt : c10::optional<int64_t>(args[6].toInt());
  std::shared_ptr<MemsaveAvgPoolBackward> node(
      new MemsaveAvgPoolBackward(input, Dims, args[1].toIntVector(), args[2].toIntVector(), args[3].toIntVector(),
                                 args[4].toBool(), args[5].toBool(), divisor),
      torch::autograd::deleteNode);
  node->set_next_edges(torch::autograd::collect_next_edges(input));
  count_substituted(F, 0, tensor_bytes(input));
  forward_below_autograd(op, ks, stack);
  torch::autograd::set_history(stack->back().toTensor(), node);
}

// _adaptive_avg_pool{2,3}d(self, output_size)
template <int Dims>
void adaptive_avg_pool_autograd(const c10::OperatorHandle& op, c10::DispatchKeySet ks, torch::jit::Stack* stack) {
  const c10::IValue* args = &(*stack)[stack->size() - 2];
  const at::Tensor input = args[0].toTensor();
  if (!wants_node(input)) return call_stock(op, stack, c10::DispatchKey::Autograd);
  const char* why = unsupported_input(ks, input);
  if (!why && !args[1].isIntList()) why = "symbolic sizes";
  if (why) {
    count_fallback(F, why);
    return call_stock(op, stack, c10::DispatchKey::Autograd);
  }
  std::shared_ptr<MemsaveAdaptiveAvgPoolBackward> node(new MemsaveAdaptiveAvgPoolBackward(input, Dims),
                                                       torch::autograd::deleteNode);
  node->set_next_edges(torch::autograd::collect_next_edges(input));
  count_substituted(F, 0, tensor_bytes(input));
  forward_below_autograd(op, ks, stack);
  torch::autograd::set_history(stack->back().toTensor(), node);
}

// mean.dim(self, dim?, keepdim, *, dtype?)
void mean_dim_autograd(const c10::OperatorHandle& op, c10::DispatchKeySet ks, torch::jit::Stack* stack) {
  const c10::IValue* args = &(*stack)[stack->size() - 4];
  const at::Tensor input = args[0].toTensor();
  if (!wants_node(input)) return call_stock(op, stack, c10::DispatchKey::Autograd);
#if TORCH_VERSION_MAJOR >= 2
  // 2.x's MeanBackward1 keeps sizes and the element count only (PYTORCH-NOTES.md §1b).
  count_passthrough(F);
  call_stock(op, stack, c10::DispatchKey::Autograd);
#else
  const char* why = unsupported_input(ks, input);
  if (!why && !args[1].isNone() && !args[1].isIntList()) why = "symbolic sizes";
  if (why) {
    count_fallback(F, why);
    return call_stock(op, stack, c10::DispatchKey::Autograd);
  }
  c10::optional<std::vector<int64_t>> dims;
  if (!args[1].isNone()) dims = args[1].toIntVector();
  std::shared_ptr<MemsaveMeanBackward> node(new MemsaveMeanBackward(input, std::move(dims), args[2].toBool()),
                                            torch::autograd::deleteNode);
  node->set_next_edges(torch::autograd::collect_next_edges(input));
  count_substituted(F, 0, tensor_bytes(input));
  forward_below_autograd(op, ks, stack);
  torch::autograd::set_history(stack->back().toTensor(), node);
#endif
}

}  // namespace

namespace {
void register_pool(Registrar& r) {
  r.impl("max_pool1d", [] { return torch::CppFunction::makeFromBoxedFunction<&max_pool_autograd>(); });
  r.impl("max_pool2d", [] { return torch::CppFunction::makeFromBoxedFunction<&max_pool_autograd>(); });
  r.impl("max_pool3d", [] { return torch::CppFunction::makeFromBoxedFunction<&max_pool_autograd>(); });
  r.impl("max_pool2d_with_indices",
         [] { return torch::CppFunction::makeFromBoxedFunction<&max_pool_with_indices_autograd<2>>(); });
  r.impl("max_pool3d_with_indices",
         [] { return torch::CppFunction::makeFromBoxedFunction<&max_pool_with_indices_autograd<3>>(); });
  r.impl("avg_pool2d", [] { return torch::CppFunction::makeFromBoxedFunction<&avg_pool_autograd<2>>(); });
  r.impl("avg_pool3d", [] { return torch::CppFunction::makeFromBoxedFunction<&avg_pool_autograd<3>>(); });
  r.impl("_adaptive_avg_pool2d",
         [] { return torch::CppFunction::makeFromBoxedFunction<&adaptive_avg_pool_autograd<2>>(); });
  r.impl("_adaptive_avg_pool3d",
         [] { return torch::CppFunction::makeFromBoxedFunction<&adaptive_avg_pool_autograd<3>>(); });
  r.impl("mean.dim", [] { return torch::CppFunction::makeFromBoxedFunction<&mean_dim_autograd>(); });
}
const FamilyRegistration registration(MEMSAVE_FAMILY_POOL, &register_pool);
}  // namespace

}  // namespace memsave
