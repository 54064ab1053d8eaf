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

void count_passthrough(memsave_family_t family) {
  __atomic_fetch_add(&g_shared->passthrough[family], 1, __ATOMIC_RELAXED);
}

void count_fallback(memsave_family_t family, const char* reason) { g_shared->note_fallback(family, reason); }

}  // namespace memsave
