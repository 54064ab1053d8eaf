// SPDX-License-Identifier: MIT
// counters.cpp: the shim's state as the hooks see it (shared.h): the family switch and the
// counters, updated with __atomic builtins that the shim's C code shares.
#include "shared.h"

#include "internal.h"

namespace memsave {

namespace {
struct memsave_shared* g_shared = nullptr;
}

struct memsave_shared* shared() { return g_shared; }

void set_shared(struct memsave_shared* s) { g_shared = s; }

bool family_on(memsave_family_t family) {
  return __atomic_load_n(&g_shared->enabled, __ATOMIC_RELAXED) && (g_shared->opts.ops_mask & (1u << family));
}

void count_substituted(memsave_family_t family, const c10::OperatorName& op, Bytes kept, Bytes stock,
                       uint64_t recomputed) {
  __atomic_fetch_add(&g_shared->recomputed, recomputed, __ATOMIC_RELAXED);
  __atomic_fetch_add(&g_shared->substituted[family], 1, __ATOMIC_RELAXED);
  __atomic_fetch_add(&g_shared->kept.activations, kept.activations, __ATOMIC_RELAXED);
  __atomic_fetch_add(&g_shared->kept.parameters, kept.parameters, __ATOMIC_RELAXED);
  __atomic_fetch_add(&g_shared->stock.activations, stock.activations, __ATOMIC_RELAXED);
  __atomic_fetch_add(&g_shared->stock.parameters, stock.parameters, __ATOMIC_RELAXED);
  // A call site is ranked by the activations it did not keep (parameters are alive anyway).
  if (g_shared->trace_table)
    trace_substituted(op, stock.activations > kept.activations ? stock.activations - kept.activations : 0);
}

namespace {
// Atomic max: raises *peak to v unless it is already higher.
void raise_to(uint64_t* peak, uint64_t v) {
  uint64_t old = __atomic_load_n(peak, __ATOMIC_RELAXED);
  while (old < v && !__atomic_compare_exchange_n(peak, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
}
}  // namespace

void live_add(uint64_t kept, uint64_t stock) {
  raise_to(&g_shared->kept_live_peak, __atomic_add_fetch(&g_shared->kept_live, kept, __ATOMIC_RELAXED));
  raise_to(&g_shared->stock_live_peak, __atomic_add_fetch(&g_shared->stock_live, stock, __ATOMIC_RELAXED));
}

void live_sub(uint64_t kept, uint64_t stock) {
  __atomic_fetch_sub(&g_shared->kept_live, kept, __ATOMIC_RELAXED);
  __atomic_fetch_sub(&g_shared->stock_live, stock, __ATOMIC_RELAXED);
}

void count_passthrough(memsave_family_t family) {
  __atomic_fetch_add(&g_shared->passthrough[family], 1, __ATOMIC_RELAXED);
}

void count_fallback(memsave_family_t family, const char* reason) { g_shared->note_fallback(family, reason); }

}  // namespace memsave
