// SPDX-License-Identifier: MIT
// bitmask.h: 1-bit masks (8 elements per byte) for the nodes that keep a predicate instead
// of a tensor (the ReLU family, dropout).
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "fields.h"

namespace memsave {

// Note [Mask layout]: bit k of the mask (bit k % 8 of byte k / 8) holds the k-th element of
// the packed tensor in memory order, that is, ordered by decreasing stride. For a dense
// tensor (contiguous, channels_last, any permutation) that is plain storage order, so the
// CPU path packs and unpacks by walking raw memory, and unpacking gives back the tensor's
// exact sizes and strides (strides matter to stock's kernels: Note [Stand-in] in conv.cpp).
// A non-dense tensor without overlap (a slice) also comes back with its exact strides, in a
// buffer that spans the same storage extent as the original. A tensor whose elements overlap
// (expanded) is packed in row-major order and comes back contiguous.
//
// Dense CPU tensors of float, double, bfloat16 and half (and bool/uint8 predicates) take a
// vectorisable loop over raw memory, split with at::parallel_for. Everything else (CUDA, other
// layouts and dtypes) takes a path built from tensor ops, which runs on every device and
// gives the same bits.
// memsave::mask_flags (Note [Traced mask]); memsave_hooks_init registers it (2.6).
void register_mask_flags_op();

class BitMask {
 public:
  // What the fused constructor tests, comparing in the tensor's own dtype (bounds converted
  // to it): a bound that is not exactly representable in bfloat16/half may compare
  // differently from stock's kernels, which compare those in float in some versions.
  enum class Test {
    kGreater,    // x > a             (NaN: clear)
    kNotAtMost,  // !(x <= a)         (NaN: set)
    kInside,     // !(x <= a || x >= b)  (NaN: set)
  };

  BitMask() = default;
  // `pred` is any tensor; an element is set where it is nonzero. Call below autograd.
  explicit BitMask(const at::Tensor& pred);
  // The same, for a `pred` computed from `like` (same sizes): packed in the memory order of
  // `like`, and unpacked with the strides of `like`.
  BitMask(const at::Tensor& pred, const at::Tensor& like);
  // The outcome of `test` on each element of `t`, without a temporary tensor on the CPU
  // path. When `saw_nan` is given it is set to whether `t` holds a NaN (on CUDA this syncs).
  BitMask(const at::Tensor& t, Test test, double a, double b = 0, bool* saw_nan = nullptr);

  // The predicate as a tensor of `dtype` (1 where set, 0 elsewhere) with the sizes and
  // strides of the tensor packed (Note [Mask layout]).
  at::Tensor unpack(at::ScalarType dtype) const { return unpack(dtype, 1, 0); }
  // The same with `set` where set and `unset` elsewhere (any values, inf and NaN included).
  at::Tensor unpack(at::ScalarType dtype, double set, double unset) const { return unpack_bits(bits_, dtype, set, unset); }

  // Nodes keep the packed bytes in a SavedVariable, so that saved-tensor hooks and the
  // "backward through the graph a second time" error apply to them: take_bits() hands the
  // bytes over and leaves the layout, and unpack_bits() unpacks bytes with this layout.
  at::Tensor take_bits() { return std::move(bits_); }
  // Note [Traced mask]: traced (Note [Compiled autograd] in node.h, Note [Compile tracing] in
  // rules.h) the values are built out of place, from one bool per element in the mask's
  // memory order. A compiler may change layouts after tracing (inductor turns convolutions
  // and their neighbours channels-last); values in the traced order then gave stock's
  // kernel a proxy in another layout than stock's tensor, whose result, in the proxy's
  // layout, cost a conversion at the next convolution. So given `like` (a tensor of the
  // mask's sizes that backward has: the incoming gradient), the flags come from our
  // operator memsave::mask_flags(bits, like, like's strides when traced, ...), which keeps
  // the traced order while `like` keeps its traced strides (aot_eager: stock's layout) and
  // takes `like`'s memory format when a compiler changed it (inductor reruns its meta
  // kernel on its own layouts). Registered with the families (2.6).
  at::Tensor unpack_bits(const at::Tensor& bits, at::ScalarType dtype, double set, double unset,
                         const at::Tensor& like = {}) const;

  // Whether unpack_range can serve: a dense mask (raw storage order) on the CPU.
  bool can_unpack_range(const at::Tensor& bits, at::ScalarType dtype) const;
  // Elements [start, start + out.numel()) of the mask in storage order (Note [Mask layout]),
  // `start` a multiple of 8, written into `out`: a contiguous 1-d CPU tensor of `dtype` with
  // can_unpack_range(bits, dtype). Lets a node unpack a large mask a piece at a time.
  void unpack_range(const at::Tensor& bits, int64_t start, const at::Tensor& out, double set, double unset) const;

  // Whether unpacking gives back the strides of `t` (false when elements overlap).
  static bool keeps_strides(const at::Tensor& t);
  // The sizes of the tensor packed.
  const std::vector<int64_t>& sizes() const { return sizes_; }
  // The strides unpacking gives back (contiguous ones when elements overlap).
  std::vector<int64_t> strides() const;

  // The packed bytes; undefined for an empty BitMask.
  const at::Tensor& bits() const { return bits_; }
  bool defined() const { return bits_.defined(); }
  uint64_t nbytes() const;

  // The layout, for compiled autograd's key (Note [Compiled autograd] in node.h); the bytes
  // are the node's to visit, in its SavedVariable.
  void layout(Fields& f) const {
    f.ints(sizes_);
    f.ints(strides_);
    f.ints(order_);
    f.integer(numel_);
    f.flag(dense_);
    f.flag(exact_);
  }

  // For tests: take the tensor-op path (the one CUDA uses) on the CPU as well.
  static void force_tensor_ops(bool on);

 private:
  void set_layout(const at::Tensor& like);
  void pack_tensor_ops(const at::Tensor& pred);

  at::Tensor bits_;                // uint8, ceil(numel / 8) bytes
  std::vector<int64_t> sizes_;     // of the tensor packed
  std::vector<int64_t> strides_;   // of the tensor packed
  std::vector<int64_t> order_;     // dimensions in memory order (Note [Mask layout])
  int64_t numel_ = 0;
  bool dense_ = false;             // non-overlapping and dense: raw storage order
  bool exact_ = false;             // no overlap: unpack restores the strides
};

}  // namespace memsave
