/* SPDX-License-Identifier: MIT */
/* hooks_abi.h: the private contract between libmemsave.so (C) and libmemsave_hooks.so (C++).
 *
 * The shim owns one `struct memsave_shared` and passes its address to memsave_hooks_init.
 * The hooks update the counters with GCC's __atomic builtins, which C and C++ share, and
 * read the flags. Nothing else crosses between the two libraries, so the shim never links
 * LibTorch and the hooks never call back into the shim's symbols by name. */
#ifndef MEMSAVE_HOOKS_ABI_H
#define MEMSAVE_HOOKS_ABI_H

#include <stdint.h>

#include "memsave.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MEMSAVE_HOOKS_ABI_VERSION 1
#define MEMSAVE_HOOKS_INIT_SYMBOL "memsave_hooks_init"

/* A counted fallback reason: (family, static text). The hooks pass string literals. */
#define MEMSAVE_MAX_REASONS 64

struct memsave_reason {
  int family;
  const char *text;
  uint64_t count;
};

struct memsave_shared {
  int abi_version;
  int register_kernels;   /* MEMSAVE: 0 = count memory only, register nothing */
  unsigned ops_mask;      /* bit i set = family i is substituted */
  int verbose;            /* MEMSAVE_VERBOSE */
  int enabled;            /* memsave_set_enabled; read with __atomic_load_n */
  int active;             /* set by the shim when init registered the kernels */
  uint64_t substituted[MEMSAVE_FAMILY_SLOTS];
  uint64_t fallbacks[MEMSAVE_FAMILY_SLOTS];
  uint64_t passthrough[MEMSAVE_FAMILY_SLOTS];
  uint64_t bytes_kept;
  uint64_t bytes_stock;
  int64_t cpu_current_bytes;
  int64_t cpu_peak_bytes;
  /* Filled in by the hooks for the report. */
  char torch_version[32];
  unsigned families_built; /* bit i set = this build of the hooks implements family i */
  /* Services of the shim. */
  void (*log)(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
  void (*note_fallback)(int family, const char *reason);
};

/* Returns 0 or a negative MEMSAVE_* code. Never throws. */
typedef int (*memsave_hooks_init_fn)(struct memsave_shared *shared);

#ifdef __cplusplus
}
#endif

#endif /* MEMSAVE_HOOKS_ABI_H */
