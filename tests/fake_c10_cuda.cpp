// SPDX-License-Identifier: MIT
// fake_c10_cuda: a stand-in for CUDA LibTorch's libc10_cuda in CPU-only test runs. It
// exports c10::cuda::CUDACachingAllocator::getDeviceStats(int) with LibTorch 1.13's
// DeviceStats layout (copied from c10/cuda/CUDACachingAllocator.h), so that the report's
// dlsym path (hooks/core/cuda.cpp, Note [CUDA peak]) is exercised without a GPU. Devices below
// FAKE_CUDA_DEVICES (default 1) report allocated_bytes peak 1000000 * (device + 1); above
// them it throws, as the real allocator does for a device it has not initialised.
#include <array>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>

namespace c10 {
namespace cuda {
namespace CUDACachingAllocator {

struct Stat {
  int64_t current = 0, peak = 0, allocated = 0, freed = 0;
};
using StatArray = std::array<Stat, 3>;
struct DeviceStats {
  StatArray allocation, segment, active, inactive_split;
  StatArray allocated_bytes, reserved_bytes, active_bytes, inactive_split_bytes;
  int64_t num_alloc_retries = 0, num_ooms = 0;
  Stat oversize_allocations, oversize_segments;
  int64_t max_split_size = 0;
};

__attribute__((visibility("default"))) DeviceStats getDeviceStats(int device) {
  const char* n = std::getenv("FAKE_CUDA_DEVICES");
  if (device < 0 || device >= (n ? std::atoi(n) : 1)) throw std::runtime_error("Invalid device argument.");
  DeviceStats stats;
  stats.allocated_bytes[0].peak = 1000000 * (device + 1);
  stats.allocated_bytes[1].peak = 7;  // other pools and fields must not be read
  stats.reserved_bytes[0].peak = 9;
  return stats;
}

}  // namespace CUDACachingAllocator
}  // namespace cuda
}  // namespace c10
