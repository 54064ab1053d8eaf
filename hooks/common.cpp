// SPDX-License-Identifier: MIT
// common.cpp: counters, fallback bookkeeping, registration, and memsave_hooks_init, the one
// extern "C" entry point the shim calls.
#include "common.h"

#include <ATen/core/grad_mode.h>
#include <c10/core/TensorImpl.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/version.h>

#include <cstdio>
#include <sys/mman.h>
#include <exception>

namespace memsave {

static struct memsave_shared* g_shared = nullptr;

struct memsave_shared* shared() { return g_shared; }

void install_counting_allocator();  // allocator.cpp
void cuda_install_snapshot(struct memsave_shared* shared);  // cuda.cpp
void trace_init(struct memsave_shared* shared);  // trace.cpp
void trace_substituted(memsave_family_t family, uint64_t bytes_not_kept);  // trace.cpp

bool family_on(memsave_family_t family) {
  return __atomic_load_n(&g_shared->enabled, __ATOMIC_RELAXED) && (g_shared->opts.ops_mask & (1u << family));
}

const char* unsupported_tensor(const at::Tensor& t) {
  if (!t.defined()) return nullptr;
  if (t.layout() != c10::kStrided) return "non-strided layout (sparse or other)";
  if (t.is_mkldnn()) return "mkldnn tensor";
  if (t.is_quantized()) return "quantized tensor";
  if (t.is_nested()) return "nested tensor";
  switch (t.scalar_type()) {
    case at::kFloat:
    case at::kDouble:
    case at::kBFloat16:
    case at::kHalf:
      break;
    default:
      return "dtype not handled (complex or other)";
  }
  if (t._fw_grad(/*level=*/0).defined()) return "forward-mode AD (dual tensor)";
  return nullptr;
}

const char* unsupported_keys(c10::DispatchKeySet ks) {
  using K = c10::DispatchKey;
  const c10::DispatchKeySet tls_included = c10::impl::tls_local_dispatch_key_set().included_;
  const c10::DispatchKeySet all = ks | tls_included;
  if (all.has(K::Python) || all.has(K::PythonTLSSnapshot)) return "Python dispatch (subclass, FakeTensor or compile)";
  if (all.has(K::FuncTorchDynamicLayerBackMode) || all.has(K::FuncTorchDynamicLayerFrontMode) ||
      all.has(K::FuncTorchGradWrapper) || all.has(K::FuncTorchBatched))
    return "functorch transform";
  return nullptr;
}

bool gradient_is_reusable(const at::Tensor& grad) {
  // Nothing records what we do: no create_graph, a plain dense tensor.
  if (at::GradMode::is_enabled() || !grad.defined() || grad.layout() != c10::kStrided || grad.requires_grad() ||
      grad.is_conj() || grad.is_neg() || grad._is_zerotensor() || !grad.is_non_overlapping_and_dense())
    return false;
  // Nobody else can see its memory: not a view, the only reference to it and to its storage,
  // and a storage from an allocator (from_blob/from_numpy storages are not resizable).
  return !grad.is_view() && grad.use_count() == 1 && grad.has_storage() && grad.storage().use_count() == 1 &&
         grad.storage().resizable();
}

void count_substituted(memsave_family_t family, uint64_t bytes_kept, uint64_t bytes_stock) {
  __atomic_fetch_add(&g_shared->substituted[family], 1, __ATOMIC_RELAXED);
  // ABI 4 keeps activations and parameters apart; until the kernels tell them apart, all
  // bytes are counted as activations.
  __atomic_fetch_add(&g_shared->kept.activations, bytes_kept, __ATOMIC_RELAXED);
  __atomic_fetch_add(&g_shared->stock.activations, bytes_stock, __ATOMIC_RELAXED);
  if (g_shared->trace_table) trace_substituted(family, bytes_stock > bytes_kept ? bytes_stock - bytes_kept : 0);
}

void count_passthrough(memsave_family_t family) {
  __atomic_fetch_add(&g_shared->passthrough[family], 1, __ATOMIC_RELAXED);
}

void count_fallback(memsave_family_t family, const char* reason) { g_shared->note_fallback(family, reason); }

uint64_t tensor_bytes(const at::Tensor& t) {
  return t.defined() ? static_cast<uint64_t>(t.numel()) * t.element_size() : 0;
}

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

}  // namespace

// Note [Untouched stand-in] in common.h.
at::Tensor untouched_strided(at::IntArrayRef sizes, at::IntArrayRef strides, const at::TensorOptions& options) {
  constexpr size_t kMinBytes = size_t{1} << 20;
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
  return at::empty_strided(sizes, strides, options);
}

Registrar::Registrar()
    : cpu_(new torch::Library(torch::Library::IMPL, "aten", c10::DispatchKey::AutogradCPU, __FILE__, __LINE__)),
      cuda_(new torch::Library(torch::Library::IMPL, "aten", c10::DispatchKey::AutogradCUDA, __FILE__, __LINE__)) {
  // The libraries are never destroyed: the registrations must outlive every tensor and
  // node of the host, and the dispatcher may run during static destruction.
}

namespace {
// Filled by the FamilyRegistration objects of the family files at load time.
void (*g_families[MEMSAVE_FAMILY_SLOTS])(Registrar&);
}

FamilyRegistration::FamilyRegistration(memsave_family_t family, void (*fn)(Registrar&)) { g_families[family] = fn; }

void Registrar::impl(const char* name, torch::CppFunction (*make)()) {
  cpu_->impl(name, make());
  cuda_->impl(name, make());
}

}  // namespace memsave

extern "C" __attribute__((visibility("default"))) int memsave_hooks_init(struct memsave_shared* shared) {
  using namespace memsave;
  if (!shared || shared->abi_version != MEMSAVE_HOOKS_ABI_VERSION) return MEMSAVE_EVERSION;
  try {
    g_shared = shared;
    std::snprintf(shared->torch_version, sizeof shared->torch_version, "%s", TORCH_VERSION);
    const unsigned asked = shared->opts.ops_mask;
    shared->families_unavailable = 0;
    for (int f = 0; f < MEMSAVE_FAMILY_COUNT; f++) {
      if (!(asked & (1u << f)) || g_families[f]) continue;
      shared->families_unavailable |= 1u << f;
      shared->log(MEMSAVE_LOG_INFO, "family %s is not available in this build; stock is used for it",
                  memsave_family_name(f));
    }
    install_counting_allocator();
    cuda_install_snapshot(shared);
    if (!shared->opts.enable) return 0;
    if (shared->opts.trace > 0) trace_init(shared);
    static Registrar registrar;  // constructed once; init is called once by the shim
    for (int f = 0; f < MEMSAVE_FAMILY_SLOTS; f++) {
      if (!g_families[f] || !(asked & (1u << f))) continue;
      g_families[f](registrar);
      shared->families_registered |= 1u << f;
    }
    return 0;
  } catch (const std::exception& e) {
    shared->log(0, "warning: the hooks failed to register: %s", e.what());
    return MEMSAVE_EINTERNAL;
  } catch (...) {
    return MEMSAVE_EINTERNAL;
  }
}
