// SPDX-License-Identifier: MIT
// common.h: what every hooks file shares: the state the shim owns, the fallback rules,
// the counters, the way to call stock, and kernel registration.
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_strided.h>
#include <c10/core/DispatchKeySet.h>
#include <torch/library.h>
#include <torch/version.h>

#include "../shim/hooks_abi.h"

// Note [Versions]: one source serves LibTorch 1.13 and 2.x. Where the C++ API really differs,
// code is conditional on MEMSAVE_TORCH_AT_LEAST, and each use says which versions need which
// branch. Both branches are compiled and tested: 1.13 (Debian 12), 2.6 (Debian 13,
// scripts/trixie.sh).
#define MEMSAVE_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace memsave {

// Note [Bitwise contract]: every node we build calls the same backward kernel, with the
// same arguments, that stock's node calls, so forward outputs and gradients are bitwise
// identical to stock for every requires_grad pattern. We only change what is kept between
// forward and backward. Where we cannot keep that promise, we call stock (Note [Fallback]).
//
// Note [Fallback]: a call goes to stock, unchanged, when
//   - the family is off (MEMSAVE_OPS, memsave_set_enabled(0)) or grad mode is off,
//     or no differentiable argument requires grad  (not counted: stock builds nothing);
//   - stock already keeps the minimum for this requires_grad pattern (counted as passthrough);
//   - the call is one we do not handle: forward-mode AD, functorch or Python-dispatch keys
//     (torch.func, torch.compile, __torch_dispatch__ subclasses), non-strided layouts,
//     mkldnn, quantized, nested, complex or unknown dtypes (counted as a fallback, with
//     the reason kept for the report).

struct memsave_shared* shared();

// True when the family is enabled now (MEMSAVE_OPS and memsave_set_enabled).
bool family_on(memsave_family_t family);

// Why `t` cannot take our path, or nullptr. Undefined tensors are fine.
const char* unsupported_tensor(const at::Tensor& t);
// Why the current dispatch state cannot take our path, or nullptr.
const char* unsupported_keys(c10::DispatchKeySet ks);

void count_substituted(memsave_family_t family, uint64_t bytes_kept, uint64_t bytes_stock);
void count_passthrough(memsave_family_t family);
void count_fallback(memsave_family_t family, const char* reason);

// Tensor bytes of a tensor's elements (numel x element size); 0 for undefined.
uint64_t tensor_bytes(const at::Tensor& t);

// Note [Reusing the incoming gradient]: a backward that maps each element of its incoming
// gradient to one element of its result, with the same sizes and strides (ReLU family, batch
// norm in eval with only the input's gradient), may write its result into the incoming
// gradient's memory instead of a new tensor, when nothing else can see that memory: grad
// mode is off (no create_graph: the engine records nothing), the tensor is not a view, this
// node holds the only reference to it and to its storage (hooks, retain_grad, captured
// gradients of autograd.grad, the other branch of an addition and detached aliases all hold
// references), and the storage came from an allocator (not from_blob/from_numpy). The
// engine's InputBuffer relies on the same use-count rule to accumulate in place. The values
// are those of stock's kernel, run on the same elements (its out= form with the result
// aliasing the gradient, or in pieces copied back); only the result's address differs, so
// the peak of that backward step loses one activation.
bool gradient_is_reusable(const at::Tensor& grad);

// Calls stock's kernel for `op` with the arguments on `stack`: the Autograd alias for ops
// that have their own autograd kernel, CompositeImplicitAutograd for composite ones.
inline void call_stock(const c10::OperatorHandle& op, torch::jit::Stack* stack, c10::DispatchKey key) {
  op.callBoxedForDispatchKey(key, *stack);
}

// Note [Untouched stand-in]: the kernels that take a stand-in never use its values (Note
// [Stand-in] in conv.cpp, Note [Batch norm stand-in], Note [Pool stand-in]), and most never
// read it. So a large CPU stand-in is a private anonymous mapping (mmap, MAP_NORESERVE)
// instead of an allocation: pages that are never touched cost no memory, pages that are
// only read map the kernel's shared zero page, and a page written (no kernel writes to an
// input) becomes ordinary private memory. Its bytes do not pass through the CPU allocator,
// so they are not in the tensor-byte counts, as they are not in RSS. Small stand-ins (under
// 1 MiB), other devices and a failed mmap take at::empty_strided.
at::Tensor untouched_strided(at::IntArrayRef sizes, at::IntArrayRef strides, const at::TensorOptions& options);

// Geometry of a tensor we do not keep: enough to build a stand-in with the same sizes,
// strides, dtype and device (Note [Stand-in] in conv.cpp).
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
  at::Tensor stand_in() const {
    at::Tensor t(live.lock());
    if (t.defined() && t.sizes().equals(sizes) && t.strides().equals(strides) && t.dtype() == options.dtype() &&
        t.device() == options.device() && t.layout() == c10::kStrided)
      return t.detach();
    return empty_strided();
  }
};

// Registration: each family file ends with
//   static const FamilyRegistration registration(MEMSAVE_FAMILY_X, &register_x);
// memsave_hooks_init then calls register_x for the families enabled in MEMSAVE_OPS, and
// reports the registered families as built.
class Registrar {
 public:
  Registrar();
  // Registers `fn` for aten::`name` on AutogradCPU and AutogradCUDA.
  void impl(const char* name, torch::CppFunction (*make)());

 private:
  torch::Library* cpu_;
  torch::Library* cuda_;
};

struct FamilyRegistration {
  FamilyRegistration(memsave_family_t family, void (*fn)(Registrar&));
};

}  // namespace memsave
