// SPDX-License-Identifier: MIT
// standin.cpp: Note [Untouched stand-in] and Note [Live stand-in] (standin.h).
#include "standin.h"

#include "rules.h"

#include <ATen/ops/empty_strided.h>

#include <sys/mman.h>

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

}  // namespace

at::Tensor untouched_strided(at::IntArrayRef sizes, at::IntArrayRef strides, const at::TensorOptions& options) {
  constexpr size_t kMinBytes = size_t{1} << 20;
  // Note [Compiled autograd] (node.h): traced, the stand-in is an empty_strided node.
  if (!tracing_backward() && options.device().is_cpu() && options.layout() == at::kStrided && sizes.size() == strides.size()) {
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

at::Tensor Geometry::stand_in() const {
  if (tracing_backward()) return empty_strided();  // never the real input in a traced graph
  at::Tensor t(live.lock());
  if (t.defined() && t.sizes().equals(sizes) && t.strides().equals(strides) && t.dtype() == options.dtype() &&
      t.device() == options.device() && t.layout() == c10::kStrided)
    return t.detach();
  return empty_strided();
}

}  // namespace memsave
