// SPDX-License-Identifier: MIT
// pool_windows.cpp: Note [Window offsets] and Note [Pieces] (pool_windows.h).
#include "pool_windows.h"

#include "../core/rules.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/aminmax.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/empty_strided.h>

#include <algorithm>

namespace memsave {
namespace {

std::vector<int64_t> strides_of(at::IntArrayRef sizes) {
  std::vector<int64_t> strides(sizes.size(), 1);
  for (int d = static_cast<int>(sizes.size()) - 2; d >= 0; d--) strides[d] = strides[d + 1] * sizes[d + 1];
  return strides;
}

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

}  // namespace

at::ScalarType Windows::offset_dtype() const {
  int64_t n = 1;
  for (int64_t k : kernel) n *= k;
  if (n <= 256) return at::kByte;
  if (n <= 32768) return at::kShort;
  return at::kInt;
}

at::Tensor Windows::offsets_in_pieces(const at::Tensor& indices, at::IntArrayRef in) const {
  // Note [Compile tracing] (core/rules.h): traced, the whole tensor, out of place.
  if (tracing()) return offsets(indices, in);
  return in_pieces(indices, offset_dtype(), [&](const at::Tensor& piece) { return offsets(piece, in); });
}

at::Tensor Windows::indices_in_pieces(const at::Tensor& offsets, at::IntArrayRef in, at::IntArrayRef out) const {
  // Note [Compiled autograd] (core/node.h): traced, the whole tensor, whose sizes may be symbolic.
  if (tracing()) return indices(offsets, in, out);
  return in_pieces(offsets, at::kLong, [&](const at::Tensor& piece) { return indices(piece, in, out); });
}

template <typename Fn>
at::Tensor Windows::in_pieces(const at::Tensor& t, at::ScalarType dtype, const Fn& convert) const {
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
at::Tensor Windows::offsets(const at::Tensor& indices, at::IntArrayRef in) const {
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
  const at::Tensor starts = start_sum(indices.sizes().slice(indices.dim() - n), indices.device(), Q);
  k = k.defined() ? k.sub_(starts) : indices.sub(starts);
  return k.to(offset_dtype());
}

// Stock's int64 indices from window-local positions; checked against the plane's size,
// since out-of-range indices crash the CPU kernel. The divisions run on the narrow type
// (every divisor is below the window's size, so it fits).
at::Tensor Windows::indices(const at::Tensor& offsets, at::IntArrayRef in, at::IntArrayRef out) const {
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
  index.add_(start_sum(out, offsets.device(), P));
  if (!tracing() && index.numel() > 0) {  // a fake tensor has no values to check
    auto range = at::aminmax(index);
    const int64_t lo = std::get<0>(range).item<int64_t>(), hi = std::get<1>(range).item<int64_t>();
    const int64_t plane = P[0] * in[0];
    TORCH_INTERNAL_ASSERT(lo >= 0 && hi < plane, "memsave: rebuilt max-pool indices out of range [", lo, ", ", hi,
                          "] for a plane of ", plane);
  }
  return index;
}

// The first position of each window along spatial dimension d, shaped to broadcast
// against a tensor whose last dims() dimensions are the output positions.
at::Tensor Windows::starts(int d, int64_t outputs, const at::Device& device) const {
  std::vector<int64_t> shape(dims() - d, 1);
  shape[0] = outputs;
  return at::arange(outputs, at::TensorOptions().dtype(at::kLong).device(device))
      .mul_(stride[d])
      .sub_(padding[d])
      .view(shape);
}

// sum_d s_d w_d over the output positions (`out`: the output's spatial sizes): a small int64
// tensor of the output's spatial shape.
at::Tensor Windows::start_sum(at::IntArrayRef out, const at::Device& device, const std::vector<int64_t>& w) const {
  const int n = dims();
  at::Tensor sum;
  for (int d = 0; d < n; d++) {
    at::Tensor s = starts(d, out[d], device).mul_(w[d]);
    sum = sum.defined() ? sum + s : s;
  }
  return sum;
}

// The spatial coordinates i_d of each of stock's indices, d = 0 .. dims() - 1.
std::vector<at::Tensor> Windows::coordinates(const at::Tensor& indices, at::IntArrayRef in) const {
  const int n = dims();
  std::vector<at::Tensor> coord(n);
  at::Tensor rest = indices;
  for (int d = n - 1; d > 0; d--) {
    coord[d] = rest.remainder(in[d]);
    rest = rest.div(in[d], "trunc");
  }
  coord[0] = rest;
  return coord;
}

// i_d - s_d for each index along spatial dimension d: k_d dil_d inside the window.
at::Tensor Windows::from_start(const at::Tensor& coord, const at::Tensor& indices, int d) const {
  return coord.sub(starts(d, indices.size(indices.dim() - dims() + d), indices.device()));
}

// offsets() with dilation: k_d = (i_d - s_d) / dil_d, one dimension at a time.
at::Tensor Windows::offsets_dilated(const at::Tensor& indices, at::IntArrayRef in) const {
  const std::vector<at::Tensor> coord = coordinates(indices, in);
  at::Tensor local;
  for (int d = 0; d < dims(); d++) {
    at::Tensor k = from_start(coord[d], indices, d);
    if (dilation[d] != 1) k = k.div(dilation[d], "trunc");
    local = d == 0 ? k : local.mul_(kernel[d]).add_(k);
  }
  return local.to(offset_dtype());
}

bool Windows::represents(const at::Tensor& indices, at::IntArrayRef in) const {
  bool dilated = false;
  for (int64_t d : dilation) dilated = dilated || d != 1;
  if (!dilated) return true;  // max(s_d, 0) is in the window whenever the window meets the input
  if (tracing()) return false;
  if (indices.numel() == 0) return true;
  const std::vector<at::Tensor> coord = coordinates(indices, in);
  at::Tensor off_grid;
  for (int d = 0; d < dims(); d++) {
    // i_d - s_d must be k_d dil_d with 0 <= k_d < K_d.
    const at::Tensor step = from_start(coord[d], indices, d);
    at::Tensor bad = step.lt(0).logical_or_(step.ge(kernel[d] * dilation[d]));
    if (dilation[d] != 1) bad.logical_or_(step.remainder(dilation[d]).ne(0));
    off_grid = off_grid.defined() ? off_grid.logical_or_(bad) : bad;
  }
  return !off_grid.any().item<bool>();
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

}  // namespace memsave
