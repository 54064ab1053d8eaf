// SPDX-License-Identifier: MIT
// bitmask.h: 1-bit masks (8 elements per byte) for the nodes that keep a predicate instead
// of a tensor (the ReLU family, dropout).
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

namespace memsave {

// A boolean predicate of a tensor, one bit per element, in the tensor's memory order, so
// that unpacking gives back the tensor's strides (Note [Stand-in] explains why strides
// matter for stock's kernels).
class BitMask {
 public:
  BitMask() = default;
  // `pred` is any tensor; an element is set where it is nonzero. Call below autograd.
  explicit BitMask(const at::Tensor& pred);

  // The predicate as a tensor of `dtype` (1 where set, 0 elsewhere) with the sizes and
  // strides of the tensor packed (a dense tensor; others come back contiguous).
  at::Tensor unpack(at::ScalarType dtype) const;

  // The packed bytes; undefined for an empty BitMask.
  const at::Tensor& bits() const { return bits_; }
  bool defined() const { return bits_.defined(); }
  uint64_t nbytes() const;

 private:
  at::Tensor bits_;                   // uint8, ceil(numel / 8) bytes
  std::vector<int64_t> sizes_;        // the sizes of the permuted (memory-order) view
  std::vector<int64_t> inverse_perm_; // restores the original dimension order
};

}  // namespace memsave
