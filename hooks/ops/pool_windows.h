// SPDX-License-Identifier: MIT
// pool_windows.h: max pooling's window arithmetic: stock's int64 index of each maximum to
// its position inside its window (one byte for windows of up to 256 elements) and back.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <vector>

namespace memsave {

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
// Note [Index outside its window]: one kernel breaks "an element of the window". The CPU
// channels_last 3-d max pool of 2.6 and 2.14 starts each window's search at its first
// element clamped into the input (max(s_d, 0)), not at the first element on the dilation
// grid, and keeps that index when no element beats it: with dilation, padding and only -inf
// in a window, stock's index names an element outside the window (found by test_property
// under issue 23, seed 17497279895674684339: max_pool3d k[2,1,1] p[1,0,0] d[2,2,1], an index
// in depth 0 for the window {-1, 1}; 1.13 picks depth 1). Stock's backward sends the
// gradient there, so the offsets cannot carry it: with dilation, represents() checks every
// index and the node keeps stock's indices when one is off its window's grid.
struct Windows {
  std::vector<int64_t> kernel, stride, padding, dilation;  // one entry per spatial dimension

  int dims() const { return static_cast<int>(kernel.size()); }

  // The smallest type that holds every window-local position.
  at::ScalarType offset_dtype() const;

  // Window-local positions from stock's indices, a piece at a time (Note [Pieces]).
  // `in`: the input's spatial sizes.
  at::Tensor offsets_in_pieces(const at::Tensor& indices, at::IntArrayRef in) const;
  // Stock's int64 indices from window-local positions, a piece at a time (Note [Pieces]);
  // checked against the plane's size, since out-of-range indices crash the CPU kernel.
  // `out`: the output's spatial sizes (those of the offsets' last dims(), which may be
  // symbolic under compiled autograd: Note [Compiled autograd] in core/node.h).
  at::Tensor indices_in_pieces(const at::Tensor& offsets, at::IntArrayRef in, at::IntArrayRef out) const;

  // Whether every one of stock's indices is an element of its window (Note [Index outside
  // its window]): false when one is not, and traced with dilation (no values to look at).
  bool represents(const at::Tensor& indices, at::IntArrayRef in) const;

  // The conversions of a whole tensor (what offsets_in_pieces does on each piece).
  at::Tensor offsets(const at::Tensor& indices, at::IntArrayRef in) const;
  at::Tensor indices(const at::Tensor& offsets, at::IntArrayRef in, at::IntArrayRef out) const;

 private:
  // Note [Pieces]: the conversions below build several int64 temporaries of the output's
  // size (the indices are 2x a float output; the temporaries were as large again). They are
  // exact integer arithmetic, element by element with the window starts of the element's
  // own output position, so they run on pieces of the non-spatial dimension with the most
  // entries and write into one result with the strides the whole conversion would give
  // (dense input: the same strides; otherwise the whole tensor at once).
  template <typename Fn>
  at::Tensor in_pieces(const at::Tensor& t, at::ScalarType dtype, const Fn& convert) const;
  at::Tensor offsets_dilated(const at::Tensor& indices, at::IntArrayRef in) const;
  std::vector<at::Tensor> coordinates(const at::Tensor& indices, at::IntArrayRef in) const;
  at::Tensor from_start(const at::Tensor& coord, const at::Tensor& indices, int d) const;
  at::Tensor starts(int d, int64_t outputs, const at::Device& device) const;
  at::Tensor start_sum(at::IntArrayRef out, const at::Device& device, const std::vector<int64_t>& w) const;
};

// The windows of a pooling call with `n` spatial dimensions, from its arguments as stock
// accepts them (one value for every dimension or one per dimension; an empty stride is the
// kernel size); nullopt for arguments stock rejects.
c10::optional<Windows> windows_of(int n, const std::vector<int64_t>& kernel, const std::vector<int64_t>& stride,
                                  const std::vector<int64_t>& padding, const std::vector<int64_t>& dilation);

}  // namespace memsave
