// SPDX-License-Identifier: MIT
// standin.cpp: Note [Untouched stand-in], Note [Live stand-in] and Note [Poisoned stand-in]
// (standin.h).
#include "standin.h"

#include "internal.h"
#include "rules.h"
#include "shared.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_strided.h>
#include <ATen/ops/full_like.h>
#include <torch/library.h>

#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include <sys/mman.h>

#include <atomic>
#include <limits>

namespace memsave {
namespace {

struct Mapping {
  void* addr;
  size_t bytes;
};

void unmap(void* ctx) {
  auto* m = static_cast<Mapping*>(ctx);
  munmap(m->addr, m->bytes);
  delete m;
}

// The mapping of Note [Untouched stand-in], or an undefined tensor.
at::Tensor mapped_strided(at::IntArrayRef sizes, at::IntArrayRef strides, const at::TensorOptions& options);

// Note [Poisoned stand-in] (standin.h).
std::atomic<int> g_poison{MEMSAVE_POISON_OFF};
uint64_t g_poisoned;  // __atomic builtins: the shim reads it through memsave_shared::poisoned

// The dtype's largest finite value.
template <class T>
at::Scalar largest() {
  return at::Scalar(std::numeric_limits<T>::max());
}

at::Scalar poison_value(at::ScalarType t, int pattern) {
  if (t == at::kBool) return at::Scalar(true);
  if (at::isFloatingType(t) || at::isComplexType(t)) {
    if (pattern == MEMSAVE_POISON_NAN) return at::Scalar(std::numeric_limits<double>::quiet_NaN());
    switch (at::toRealValueType(t)) {
      case at::kHalf: return largest<c10::Half>();
      case at::kBFloat16: return largest<c10::BFloat16>();
      case at::kFloat: return largest<float>();
      case at::kDouble: return largest<double>();
      default: return at::Scalar(std::numeric_limits<double>::quiet_NaN());  // float8 and others
    }
  }
  switch (t) {
    case at::kByte: return largest<uint8_t>();
    case at::kChar: return largest<int8_t>();
    case at::kShort: return largest<int16_t>();
    case at::kInt: return largest<int32_t>();
    case at::kLong: return largest<int64_t>();
    default: return at::Scalar(1);
  }
}

// Fills a fresh stand-in with the pattern: in place on a plain tensor (no autograd, no view
// tracking); traced, out of place, because compiled autograd drops in-place writes into a
// tensor made while tracing (Note [Compiled autograd] in node.h).
at::Tensor poisoned(at::Tensor t) {
  const int pattern = g_poison.load(std::memory_order_relaxed);
  if (pattern == MEMSAVE_POISON_OFF || t.is_meta()) return t;
  const at::Scalar value = poison_value(t.scalar_type(), pattern);
  __atomic_add_fetch(&g_poisoned, 1, __ATOMIC_RELAXED);
  if (tracing()) return at::full_like(t, value);
  at::AutoDispatchBelowADInplaceOrView guard;
  if (t.numel() > 0) t.fill_(value);
  return t;
}

// A stand-in on a real device: the mapping of Note [Untouched stand-in] (under poison
// whatever its size), else an allocation; filled under poison (Note [Poisoned stand-in]).
at::Tensor real_stand_in(at::IntArrayRef sizes, at::IntArrayRef strides, const at::TensorOptions& options) {
  at::Tensor t = mapped_strided(sizes, strides, options);
  return poisoned(t.defined() ? t : at::empty_strided(sizes, strides, options));
}

#if MEMSAVE_COMPILE_TRACING
// memsave::stand_in's kernel, on BackendSelect (it has no tensor argument): meta tensors for
// tracing (FakeTensorMode and inductor call it with device=meta), the mapping otherwise.
at::Tensor stand_in_kernel(at::IntArrayRef sizes, at::IntArrayRef strides, at::ScalarType dtype, at::Device device) {
  const at::TensorOptions options = at::TensorOptions().dtype(dtype).device(device);
  return device.is_meta() ? at::empty_strided(sizes, strides, options) : real_stand_in(sizes, strides, options);
}

// memsave::stand_in_like's kernel (CompositeExplicitAutograd: CPU, CUDA, meta).
// The memory format a compiler gave `like`. A convolution weight of [C, 1, k, k] (depthwise)
// made channels-last is contiguous too, and suggest_memory_format says contiguous; where
// the stand-in follows the weight (kConvStandInFollowsWeight), channels-last wins such a tie,
// as inductor made it.
at::MemoryFormat changed_format(const at::Tensor& like) {
  if (kConvStandInFollowsWeight && like.dim() == 4 && like.is_contiguous(at::MemoryFormat::ChannelsLast))
    return at::MemoryFormat::ChannelsLast;
  return like.suggest_memory_format();
}

at::Tensor stand_in_like_kernel(const at::Tensor& like, at::IntArrayRef like_strides, at::IntArrayRef sizes,
                                at::IntArrayRef strides, at::ScalarType dtype) {
  const at::TensorOptions options = at::TensorOptions().dtype(dtype).device(like.device());
  std::vector<int64_t> st = strides.vec();
  if (like.strides() != like_strides && like.dim() == static_cast<int64_t>(sizes.size()))
    st = at::empty(sizes, options.device(at::kMeta), changed_format(like)).strides().vec();
  return like.is_meta() ? at::empty_strided(sizes, st, options) : real_stand_in(sizes, st, options);
}

using StandInFn = at::Tensor(at::IntArrayRef, at::IntArrayRef, at::ScalarType, at::Device);
using StandInLikeFn = at::Tensor(const at::Tensor&, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, at::ScalarType);
std::atomic<bool> g_stand_in_op{false};
#endif

}  // namespace

#if MEMSAVE_COMPILE_TRACING
void register_stand_in_op() {
  // Never destroyed, as the Registrar's libraries (init.cpp).
  auto* def = new torch::Library(torch::Library::DEF, "memsave", c10::nullopt, __FILE__, __LINE__);
  def->def("stand_in(int[] size, int[] stride, *, ScalarType dtype, Device device) -> Tensor");
  auto* impl = new torch::Library(torch::Library::IMPL, "memsave", c10::DispatchKey::BackendSelect, __FILE__, __LINE__);
  impl->impl("stand_in", TORCH_FN(stand_in_kernel));
  // flexible_layout: inductor passes the gradient as its layout optimisation left it (its
  // default for operators of ours is to restore the traced strides with a copy).
  def->def("stand_in_like(Tensor like, int[] like_stride, int[] size, int[] stride, ScalarType dtype) -> Tensor",
           {at::Tag::flexible_layout});
  def->impl("stand_in_like", c10::DispatchKey::CompositeExplicitAutograd, TORCH_FN(stand_in_like_kernel));
  // No gradient flows through a stand-in: autograd passes the call through, recording nothing.
  def->impl("stand_in_like", c10::DispatchKey::Autograd, torch::CppFunction::makeFallthrough());
  g_stand_in_op.store(true);
}
#else
void register_stand_in_op() {}
#endif

namespace {

at::Tensor mapped_strided(at::IntArrayRef sizes, at::IntArrayRef strides, const at::TensorOptions& options) {
  // Under poison, any size (Note [Poisoned stand-in]).
  const size_t kMinBytes = poisoning() ? 0 : size_t{1} << 20;
  if (options.device().is_cpu() && options.layout() == at::kStrided && sizes.size() == strides.size()) {
    const size_t item = options.dtype().itemsize();
    size_t bytes = item;  // the storage extent of the geometry
    bool usable = item > 0;
    for (size_t d = 0; d < sizes.size() && usable; d++) {
      if (sizes[d] <= 0 || strides[d] < 0) usable = false;
      else bytes += static_cast<size_t>(sizes[d] - 1) * static_cast<size_t>(strides[d]) * item;
    }
    if (usable && bytes >= kMinBytes) {
      void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (p != MAP_FAILED) {
        auto* m = new Mapping{p, bytes};
        c10::Storage storage(c10::Storage::use_byte_size_t(), bytes, c10::DataPtr(p, m, &unmap, c10::Device(c10::kCPU)),
                             /*allocator=*/nullptr, /*resizable=*/false);
        at::Tensor t = at::detail::make_tensor<c10::TensorImpl>(std::move(storage),
                                                                c10::DispatchKeySet(c10::DispatchKey::CPU), options.dtype());
        t.unsafeGetTensorImpl()->set_sizes_and_strides(sizes, strides);
        return t;
      }
    }
  }
  return {};
}

}  // namespace

at::Tensor untouched_strided(at::IntArrayRef sizes, at::IntArrayRef strides, const at::TensorOptions& options) {
  if (tracing()) {
#if MEMSAVE_COMPILE_TRACING
    // Note [Traced stand-in] (standin.h): one memsave::stand_in node in the traced graph.
    if (g_stand_in_op.load()) {
      static const auto op =
          c10::Dispatcher::singleton().findSchemaOrThrow("memsave::stand_in", "").typed<StandInFn>();
      return op.call(sizes, strides, options.dtype().toScalarType(), options.device());
    }
#endif
    return poisoned(at::empty_strided(sizes, strides, options));
  }
  return real_stand_in(sizes, strides, options);
}

void set_poison(int pattern) { g_poison.store(pattern); }
bool poisoning() { return g_poison.load(std::memory_order_relaxed) != MEMSAVE_POISON_OFF; }
uint64_t* poisoned_count() { return &g_poisoned; }

at::Tensor stand_in_for(const at::Tensor& t) {
  if (!poisoning()) return t;
  return untouched_strided(t.sizes(), t.strides(), t.options());
}

at::Tensor expanded_stand_in(at::IntArrayRef sizes, const at::TensorOptions& options) {
  return poisoned(at::empty({}, options)).expand(sizes);
}

at::Tensor Geometry::stand_in_like(const at::Tensor& like) const {
  if (!tracing()) return stand_in();
#if MEMSAVE_COMPILE_TRACING
  if (g_stand_in_op.load() && !like.unsafeGetTensorImpl()->has_symbolic_sizes_strides()) {
    static const auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow("memsave::stand_in_like", "").typed<StandInLikeFn>();
    return op.call(like, like.strides(), sizes, strides, options.dtype().toScalarType());
  }
#endif
  return empty_strided();
}

at::Tensor Geometry::stand_in() const {
  // Never the real input in a traced graph, nor under poison (Note [Poisoned stand-in]).
  if (tracing() || poisoning()) return empty_strided();
  at::Tensor t(live.lock());
  if (t.defined() && t.sizes().equals(sizes) && t.strides().equals(strides) && t.dtype() == options.dtype() &&
      t.device() == options.device() && t.layout() == c10::kStrided)
    return t.detach();
  return empty_strided();
}

}  // namespace memsave
