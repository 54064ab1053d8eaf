// SPDX-License-Identifier: MIT
// bitmask.cpp: packing and unpacking 1-bit masks with plain tensor ops, so that the same
// code runs on every device.
#include "bitmask.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <numeric>

namespace memsave {
namespace {

// Bit i of each byte holds element 8*k + i.
at::Tensor bit_weights(const at::Device& device) {
  return at::tensor({1, 2, 4, 8, 16, 32, 64, 128}, at::TensorOptions().dtype(at::kByte)).to(device);
}

// A permutation that orders dimensions by decreasing stride: for a dense tensor
// (contiguous or channels_last, say) the permuted view is contiguous.
std::vector<int64_t> memory_order(const at::Tensor& t) {
  std::vector<int64_t> perm(t.dim());
  std::iota(perm.begin(), perm.end(), 0);
  if (!t.is_non_overlapping_and_dense()) return perm;
  auto strides = t.strides();
  auto sizes = t.sizes();
  std::stable_sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) {
    // Size-1 dimensions may carry any stride; keep them in place relative to each other.
    if (sizes[a] == 1 || sizes[b] == 1) return false;
    return strides[a] > strides[b];
  });
  return perm;
}

}  // namespace

BitMask::BitMask(const at::Tensor& pred) {
  std::vector<int64_t> perm = memory_order(pred);
  at::Tensor ordered = pred.permute(perm);
  inverse_perm_.assign(perm.size(), 0);
  for (size_t i = 0; i < perm.size(); i++) inverse_perm_[perm[i]] = static_cast<int64_t>(i);
  sizes_ = ordered.sizes().vec();
  at::Tensor flat = ordered.ne(0).contiguous().view(-1).to(at::kByte);
  const int64_t n = flat.numel(), padded = (n + 7) / 8 * 8;
  if (padded != n) flat = at::constant_pad_nd(flat, {0, padded - n}, 0);
  bits_ = flat.view({-1, 8}).mul(bit_weights(pred.device())).sum(1, /*keepdim=*/false, at::kByte);
}

at::Tensor BitMask::unpack(at::ScalarType dtype) const {
  int64_t n = 1;
  for (int64_t s : sizes_) n *= s;
  at::Tensor flat = bits_.unsqueeze(1).bitwise_and(bit_weights(bits_.device())).ne(0).view(-1);
  return flat.narrow(0, 0, n).view(sizes_).to(dtype).permute(inverse_perm_);
}

uint64_t BitMask::nbytes() const { return bits_.defined() ? static_cast<uint64_t>(bits_.numel()) : 0; }

}  // namespace memsave
