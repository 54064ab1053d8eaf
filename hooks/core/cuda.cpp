// SPDX-License-Identifier: MIT
// cuda.cpp: the CUDA caching allocator's peak allocated bytes for the report at exit, found
// at run time so that one build of the hooks serves CPU-only and CUDA LibTorch.
//
// Note [CUDA peak]: the hooks never link libc10_cuda. At exit we look for it among the mapped
// objects; absent, the report says "absent". Present, we look up
// c10::cuda::CUDACachingAllocator::getDeviceStats(int) by its mangled name and read
// allocated_bytes[AGGREGATE].peak of each device, the figure torch.cuda.max_memory_allocated
// returns. The snapshot is taken by an exit handler the hooks register when they start: it
// runs before LibTorch's static destructors (registered earlier, run later), while the
// allocator is still alive; the shim's report runs after them and only reads the copy.
// LibTorch versions that do not export getDeviceStats (later versions make it an inline
// call through the allocator object) get "unavailable" with the reason, never a guess.
#include <dlfcn.h>
#include <link.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "internal.h"
#include "shared.h"

namespace memsave {
namespace {

// The prefix of c10::cuda::CUDACachingAllocator::DeviceStats we read. Its layout has been
// the same from LibTorch 1.9 to 2.x: StatArrays of three Stats each (aggregate, small pool,
// large pool) for allocation, segment, active, inactive_split, then allocated_bytes.
struct Stat {
  int64_t current, peak, allocated, freed;
};
struct DeviceStatsPrefix {
  Stat allocation[3], segment[3], active[3], inactive_split[3], allocated_bytes[3];
};
// The callee writes the whole struct through the hidden return pointer (it is returned in
// memory), and the struct has grown between versions: leave it ample room.
struct DeviceStatsBuffer {
  DeviceStatsPrefix prefix;
  char rest[8192];
};
using GetDeviceStats = DeviceStatsBuffer (*)(int device);
constexpr const char* kGetDeviceStats = "_ZN3c104cuda20CUDACachingAllocator14getDeviceStatsEi";

int find_c10_cuda(struct dl_phdr_info* info, size_t, void* data) {
  const char* name = info->dlpi_name;
  if (!name || !*name) return 0;
  const char* slash = std::strrchr(name, '/');
  if (std::strncmp(slash ? slash + 1 : name, "libc10_cuda", 11) != 0) return 0;
  *static_cast<const char**>(data) = name;
  return 1;
}

void snapshot() {
  struct memsave_shared* s = shared();
  const char* path = nullptr;
  dl_iterate_phdr(find_c10_cuda, &path);
  if (!path) {
    s->cuda_state = MEMSAVE_CUDA_ABSENT;
    return;
  }
  void* lib = dlopen(path, RTLD_LAZY | RTLD_NOLOAD);
  auto get = lib ? reinterpret_cast<GetDeviceStats>(dlsym(lib, kGetDeviceStats)) : nullptr;
  if (!get) {
    s->cuda_state = MEMSAVE_CUDA_UNAVAILABLE;
    s->cuda_reason = "CUDA LibTorch present, but it exports no getDeviceStats; peak not read";
    return;
  }
  // getDeviceStats throws for a device the allocator has not initialised: the first throw
  // ends the list (none at all: CUDA was never used).
  int n = 0;
  try {
    for (; n < MEMSAVE_MAX_CUDA_DEVICES; n++) {
      static DeviceStatsBuffer stats;  // large: not on the stack
      stats = get(n);
      s->cuda_peak_bytes[n] = stats.prefix.allocated_bytes[0].peak;
    }
  } catch (...) {
  }
  s->cuda_devices = n;
  s->cuda_state = n > 0 ? MEMSAVE_CUDA_PRESENT : MEMSAVE_CUDA_UNUSED;
}

}  // namespace

void cuda_install_snapshot() {
  shared()->cuda_state = MEMSAVE_CUDA_ABSENT;
  std::atexit(snapshot);
}

}  // namespace memsave
