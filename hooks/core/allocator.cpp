// SPDX-License-Identifier: MIT
// allocator.cpp: a counting wrapper around c10's CPU allocator, for the current and peak
// CPU tensor bytes of memsave_get_stats. Installed also when MEMSAVE=0, so that stock runs
// are measured the same way. With MEMSAVE_TIMELINE it also samples (time, current bytes)
// into the fixed buffer of hooks_abi.h, for memory-over-time plots of stock and libmemsave.
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include <time.h>

#include <cstring>

#include "internal.h"
#include "shared.h"

namespace memsave {
namespace {

// Some LibTorch code allocates through Allocator::raw_allocate, which requires the data
// pointer to be the context and frees through raw_deleter(). So each block carries a
// header, one alignment unit wide, that holds its size; data = context = block + header.
constexpr size_t kHeader = 64;  // c10's CPU alignment (gAlignment)
c10::Allocator* g_inner = nullptr;
c10::DeleterFnPtr g_inner_raw_delete = nullptr;

// Note [Timeline cost]: one clock_gettime (vDSO) and an uncontended spin lock per allocation
// and free, into static storage; nothing is allocated. Merging a full buffer moves 1.5 MiB
// and happens once per doubling of the run's event count.
memsave_timeline g_timeline;
bool g_timeline_on = false;

void timeline_merge(memsave_timeline& t) {
  uint32_t half = t.nsamples / 2;
  for (uint32_t i = 0; i < half; i++) {
    const memsave_sample &a = t.samples[2 * i], &b = t.samples[2 * i + 1];
    memsave_sample m{b.ns, b.bytes, a.max_bytes > b.max_bytes ? a.max_bytes : b.max_bytes};
    t.samples[i] = m;
  }
  if (t.nsamples % 2) t.samples[half++] = t.samples[t.nsamples - 1];
  t.nsamples = half;
  t.stride *= 2;
}

void timeline_sample(int64_t now) {
  memsave_timeline& t = g_timeline;
  while (__atomic_exchange_n(&t.lock, 1, __ATOMIC_ACQUIRE)) {
  }
  t.events++;
  if (now > t.window_max) t.window_max = now;
  if (++t.skipped >= t.stride) {
    if (t.nsamples == MEMSAVE_TIMELINE_SAMPLES) timeline_merge(t);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t ns = static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
    t.samples[t.nsamples++] = memsave_sample{ns, now, t.window_max};
    t.skipped = 0;
    t.window_max = INT64_MIN;
  }
  __atomic_store_n(&t.lock, 0, __ATOMIC_RELEASE);
}

void add_bytes(int64_t delta) {
  struct memsave_shared* s = shared();
  int64_t now = __atomic_add_fetch(&s->cpu_current_bytes, delta, __ATOMIC_RELAXED);
  if (g_timeline_on) timeline_sample(now);
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
  // Note [Versions] (compat.h): const before 2.3.
  c10::DataPtr allocate(size_t n) MEMSAVE_ALLOCATE_CONST override {
    char* block = static_cast<char*>(g_inner->raw_allocate(n + kHeader));
    std::memcpy(block, &n, sizeof n);
    add_bytes(static_cast<int64_t>(n));
    void* data = block + kHeader;
    return c10::DataPtr(data, data, &counted_delete, c10::Device(c10::DeviceType::CPU));
  }

  c10::DeleterFnPtr raw_deleter() const override { return &counted_delete; }

  // Note [Versions] (compat.h): pure virtual from 2.3 on, absent before. Our blocks are plain
  // memory, so memcpy is what the default does.
#if MEMSAVE_ALLOCATOR_COPY_DATA
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
  if (shared()->opts.timeline[0]) {
    g_timeline.stride = 1;
    g_timeline.window_max = INT64_MIN;
    shared()->timeline_table = &g_timeline;
    g_timeline_on = true;
  }
  static CountingAllocator counting;
  // Priority above the default registration (0), so later default registrations lose.
  c10::SetCPUAllocator(&counting, /*priority=*/1);
}

}  // namespace memsave
