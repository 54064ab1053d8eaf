// SPDX-License-Identifier: MIT
// standin.h: what backward passes in place of a tensor it does not keep: a tensor with the
// same geometry, whose values nobody reads.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/TensorImpl.h>

#include <vector>

namespace memsave {

// Note [Untouched stand-in]: the kernels that take a stand-in never use its values (Note
// [Stand-in] in ops/conv.cpp, Note [Batch norm stand-in], Note [Pool stand-in]), and most never
// read it. So a large CPU stand-in is a private anonymous mapping (mmap, MAP_NORESERVE)
// instead of an allocation: pages that are never touched cost no memory, pages that are
// only read map the kernel's shared zero page, and a page written (no kernel writes to an
// input) becomes ordinary private memory. Its bytes do not pass through the CPU allocator,
// so they are not in the tensor-byte counts, as they are not in RSS. Small stand-ins (under
// 1 MiB), other devices and a failed mmap take at::empty_strided.
// Note [Traced stand-in]: traced (Note [Compile tracing] in rules.h, Note [Compiled autograd]
// in node.h), the stand-in is one node of the graph, memsave::stand_in(size, stride, dtype,
// device), an operator of ours (2.6; registered with the families): its kernel maps as above
// when the compiled graph runs, and makes a meta tensor for FakeTensorMode and inductor, which
// call it with device=meta. An empty_strided node would allocate the whole input for real
// in every compiled backward (inductor merges equal ones, which helps little).
// Stand-ins are memsave::stand_in_like(like, like's strides when traced, ...), `like` the
// incoming gradient: inductor's layout optimisation turns the convolutions it compiles
// channels-last after tracing, and with them stock's saved inputs and the gradients; a
// stand-in still contiguous made convolution_backward convert it, the gradient and its
// result (three activations more than stock in the backward's peak), and a batch-norm or
// pooling stand-in passed its layout on to the gradients below it. So when the gradient's
// strides are no longer those it had when traced (a compiler changed its layout; inductor
// reruns the operator's meta kernel on its own layouts), the stand-in takes the gradient's
// memory format; otherwise (aot_eager, eager-equivalent graphs) the recorded strides, as
// stock's input has them. On 2.6, following the weight's layout instead gave a convolution
// backward on other layouts than stock's (mobilenet_v2's gradients differed from stock
// inductor's by up to 1e-6 relative). 2.14's inductor gives a 2-d convolution's backward a
// channels-last gradient and weight whatever the gradient was (kConvStandInFollowsWeight in
// compat.h): there a convolution's stand-in follows the weight, since following the gradient
// fixed the gradient's layout at our operator (contiguous, as traced) and inductor then kept
// a channels-last copy of it as well (the frozen stack's peak 0.90 of stock's instead of 0.62).
// A grouped convolution's weight does not tell: inductor leaves a depthwise weight as it was
// and makes stock's saved input channels-last, so mobilenet_v2's gradients under inductor
// (mkldnn off) differed from stock's; there grouped convolutions fall back under compile
// tracing (conv.cpp's prepare()). A channels-last weight that is contiguous as well ([O, 1,
// k, k]) counts as channels-last (changed_format, standin.cpp).
at::Tensor untouched_strided(at::IntArrayRef sizes, at::IntArrayRef strides, const at::TensorOptions& options);

// Note [Poisoned stand-in]: everything above rests on one claim, that the backward kernels
// we call never read a stand-in's values. MEMSAVE_POISON checks it instead of assuming it:
// every stand-in is then filled with a pattern (NaN, or the dtype's largest finite value),
// the live input is never borrowed (its values are right, so a read would go unseen), and a
// gradient that reads one changes, which the equality tests compare bit for bit with stock.
// On the CPU a poisoned stand-in is always a private mapping, whatever its size, so that the
// counted tensor bytes stay those of a run without poison (never more); its pages are
// written, so RSS grows. A kernel that reads a stand-in and then ignores what it read is not
// caught: only values that reach a gradient are.
void set_poison(int pattern);  // MEMSAVE_POISON_* (shim/hooks_abi.h); init.cpp, and the tests
bool poisoning();
uint64_t* poisoned_count();    // stand-ins filled so far (the report's line)
// A stand-in for a tensor backward already has with the input's geometry (Note [Batch norm
// stand-in]: the gradient): `t` itself, or under poison a poisoned tensor with its geometry.
at::Tensor stand_in_for(const at::Tensor& t);
// A stand-in for a contiguous input whose suggested memory format is contiguous: one element
// expanded (Note [Pool stand-in] in ops/pool.cpp), poisoned under MEMSAVE_POISON.
at::Tensor expanded_stand_in(at::IntArrayRef sizes, const at::TensorOptions& options);

// Geometry of a tensor we do not keep: enough to build a stand-in with the same sizes,
// strides, dtype and device (Note [Stand-in] in ops/conv.cpp).
//
// Note [Live stand-in]: we also keep a weak reference to the tensor. A weak reference does
// not keep the storage alive (TensorImpl frees it when the last strong reference goes), so
// it costs nothing; but when the host still holds the tensor at backward time (a residual
// branch, a tensor the user kept), backward borrows it instead of allocating a stand-in
// of the same size. Its data is never read, only its geometry, which is checked again.
struct Geometry {
  std::vector<int64_t> sizes;
  std::vector<int64_t> strides;
  at::TensorOptions options;
  c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl> live;
  explicit Geometry(const at::Tensor& t)
      : sizes(t.sizes().vec()), strides(t.strides().vec()), options(t.options()), live(t.getIntrusivePtr()) {}
  // An uninitialised tensor with the recorded geometry (Note [Untouched stand-in]).
  at::Tensor empty_strided() const { return untouched_strided(sizes, strides, options); }
  // The tensor itself (detached) if it is still alive with the same geometry, otherwise an
  // uninitialised tensor with the recorded geometry.
  at::Tensor stand_in() const;
  // stand_in(), or traced, memsave::stand_in_like (Note [Traced stand-in]): `like` is a tensor
  // backward has whose layout a compiler changes with the input's (the incoming gradient),
  // whose strides now are the traced ones; with symbolic sizes, an empty_strided-like
  // stand-in (memsave::stand_in).
  at::Tensor stand_in_like(const at::Tensor& like) const;
};

}  // namespace memsave
