// SPDX-License-Identifier: MIT
// mm_backward.h: stock's gradients of a matrix product (mm, addmm; linear's product), shared
// by the linear family (linear.cpp) and the recipe family's mm/addmm consumers (recipe.cpp).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace memsave {

// Note [Matrix product backward]: stock's mm_mat1_backward and mm_mat2_backward
// (torch/csrc/autograd/FunctionsManual.cpp), for alpha == 1 (maybe_multiply returns its
// argument), strided operands and real dtypes (conj() is the identity):
//   grad mat1 = mat1 column-major ? mat2.mm(grad.t()).t() : grad.mm(mat2.t())
//   grad mat2 = mat2 column-major ? grad.t().mm(mat1).t() : mat1.t().mm(grad)
// "Column-major" is stock's test on the 2-D operand's sizes and strides as they were in the
// forward: strides[0] == 1 && strides[1] == sizes[0]. The same calls on the same operands
// give stock's bits. The generated nodes compute them in the order of derivatives.yaml's
// entries: AddmmBackward0 self, mat1, mat2; MmBackward0 mat2's first (under double backward
// this orders the new graph's nodes, hence its sums: the other order gave other NaN
// payloads).
struct MatrixGeometry {
  std::vector<int64_t> sizes, strides;
  explicit MatrixGeometry(const at::Tensor& m) : sizes(m.sizes().vec()), strides(m.strides().vec()) {}
  bool column_major() const { return strides[0] == 1 && strides[1] == sizes[0]; }
};

inline at::Tensor mm_mat1_grad(const at::Tensor& grad, const at::Tensor& mat2, const MatrixGeometry& mat1) {
  return mat1.column_major() ? mat2.mm(grad.t()).t() : grad.mm(mat2.t());
}

inline at::Tensor mm_mat2_grad(const at::Tensor& grad, const at::Tensor& mat1, const MatrixGeometry& mat2) {
  return mat2.column_major() ? grad.t().mm(mat1).t() : mat1.t().mm(grad);
}

}  // namespace memsave
