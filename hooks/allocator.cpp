// SPDX-License-Identifier: MIT
// allocator.cpp: a counting wrapper around c10's CPU allocator, for the current and peak
// CPU tensor bytes of memsave_get_stats. Installed also when MEMSAVE=0, so that stock runs
// are measured the same way.
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include <cstring>

#include "common.h"

namespace memsave {
namespace {

// Some LibTorch code allocates through Allocator::raw_allocate, which requires the data
// pointer to be the context and frees through raw_deleter(). So each block carries a
// header, one alignment unit wide, that holds its size; data = context = block + header.
constexpr size_t kHeader = 64;  // c10's CPU alignment (gAlignment)
c10::Allocator* g_inner = nullptr;
c10::DeleterFnPtr g_inner_raw_delete = nullptr;

void add_bytes(int64_t delta) {
  struct memsave_shared* s = shared();
  int64_t now = __atomic_add_fetch(&s->cpu_current_bytes, delta, __ATOMIC_RELAXED);
  if (delta <= 0) return;
  int64_t peak = __atomic_load_n(&s->cpu_peak_bytes, __ATOMIC_RELAXED);
  while (now > peak &&
         !__atomic_compare_exchange_n(&s->cpu_peak_bytes, &peak, now, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
}

void counted_delete(void* data) {
  if (!data) return;
  char* block = static_cast<char*>(data) - kHeader;
  size_t bytes;
  std::memcpy(&bytes, block, sizeof bytes);
  add_bytes(-static_cast<int64_t>(bytes));
  g_inner_raw_delete(block);
}

class CountingAllocator final : public c10::Allocator {
 public:
  // Note [Versions]: allocate is const in 1.13 and not const in 2.6 (changed in 2.3).
#if MEMSAVE_TORCH_AT_LEAST(2, 3)
  c10::DataPtr allocate(size_t n) override {
#else
  c10::DataPtr allocate(size_t n) const override {
#endif
    char* block = static_cast<char*>(g_inner->raw_allocate(n + kHeader));
    std::memcpy(block, &n, sizeof n);
    add_bytes(static_cast<int64_t>(n));
    void* data = block + kHeader;
    return c10::DataPtr(data, data, &counted_delete, c10::Device(c10::DeviceType::CPU));
  }

  c10::DeleterFnPtr raw_deleter() const override { return &counted_delete; }

  // Note [Versions]: pure virtual in 2.6 (from 2.3 on, with clone()); absent in 1.13. Our
  // blocks are plain memory, so memcpy is what the default does.
#if MEMSAVE_TORCH_AT_LEAST(2, 3)
  void copy_data(void* dest, const void* src, std::size_t count) const override { std::memcpy(dest, src, count); }
#endif
};

}  // namespace

void install_counting_allocator() {
  static bool installed = false;
  if (installed) return;
  installed = true;
  g_inner = c10::GetCPUAllocator();
  g_inner_raw_delete = g_inner->raw_deleter();
  if (!g_inner_raw_delete) {
    shared()->log(0, "warning: the CPU allocator has no raw deleter; tensor bytes are not counted");
    return;
  }
  static CountingAllocator counting;
  // Priority above the default registration (0), so later default registrations lose.
  c10::SetCPUAllocator(&counting, /*priority=*/1);
}

}  // namespace memsave
