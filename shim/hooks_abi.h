/* SPDX-License-Identifier: MIT */
/* hooks_abi.h: the private contract between libmemsave.so (C) and libmemsave_hooks.so (C++).
 *
 * The shim owns one `struct memsave_shared` and passes its address to memsave_hooks_init.
 * The hooks update the counters with GCC's __atomic builtins, which C and C++ share, and
 * read the flags; for the report they fill in the CUDA snapshot and point to their call-site
 * table. Nothing else crosses between the two libraries, so the shim never links LibTorch
 * and the hooks never call back into the shim's symbols by name. */
#ifndef MEMSAVE_HOOKS_ABI_H
#define MEMSAVE_HOOKS_ABI_H

#include <stdint.h>

#include "memsave.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 2: MEMSAVE_TRACE and the call-site table, the CUDA snapshot.
 * 3: MEMSAVE_TIMELINE and the timeline buffer. */
#define MEMSAVE_HOOKS_ABI_VERSION 3
#define MEMSAVE_HOOKS_INIT_SYMBOL "memsave_hooks_init"

/* A counted fallback reason: (family, static text). The hooks pass string literals. */
#define MEMSAVE_MAX_REASONS 64

struct memsave_reason {
  int family;
  const char *text;
  uint64_t count;
};

/* Call-site attribution (MEMSAVE_TRACE). The hooks own one table, plain data with static
 * storage, so that the report can read it at exit after every C++ destructor has run. */
#define MEMSAVE_MAX_SITES 512

struct memsave_site {
  uint64_t bytes;     /* tensor bytes stock would have kept and our nodes did not */
  uint64_t nodes;     /* substituted nodes built from this call site */
  char symbol[160];   /* "function+0x1f", or the operator name (Python hosts) */
  char module[96];    /* file name of the object, or "" */
  uint64_t module_offset; /* address of the call in the module, for addr2line */
};

struct memsave_trace {
  int operator_names; /* 1: the host is Python, sites are operator names, not frames */
  int nsites;
  uint64_t unattributed_bytes; /* no frame outside LibTorch (engine threads) or table full */
  uint64_t unattributed_nodes;
  uint64_t nodes;     /* nodes traced */
  uint64_t frames;    /* frames stepped, for the cost line */
  uint64_t ns;        /* CPU time spent unwinding and attributing */
  void (*finish)(void); /* called once by the report, before it reads the sites */
  struct memsave_site sites[MEMSAVE_MAX_SITES];
};

/* Memory over time (MEMSAVE_TIMELINE). The hooks own one buffer, plain data with static
 * storage, filled by the counting allocator; the shim writes it as CSV at exit. It never
 * grows: when it is full, pairs of samples are merged (the later time and bytes, the larger
 * max_bytes) and from then on one sample is kept per `stride` events, doubled at each merge,
 * so the samples stay spread over the whole run and no peak is lost from max_bytes. */
#define MEMSAVE_TIMELINE_SAMPLES 65536

struct memsave_sample {
  uint64_t ns;       /* CLOCK_MONOTONIC, nanoseconds */
  int64_t bytes;     /* CPU tensor bytes after the event */
  int64_t max_bytes; /* the most CPU tensor bytes since the previous sample */
};

struct memsave_timeline {
  int lock;          /* spin lock, taken with __atomic builtins */
  uint32_t nsamples;
  uint64_t stride;   /* allocator events per sample: 1, doubled at each merge */
  uint64_t events;   /* allocations and frees seen */
  uint64_t skipped;  /* events since the last sample */
  int64_t window_max;
  struct memsave_sample samples[MEMSAVE_TIMELINE_SAMPLES];
};

/* The CUDA caching allocator's peak, taken by the hooks at exit before LibTorch's
 * destructors run (Note [CUDA peak] in hooks/cuda.cpp). */
#define MEMSAVE_MAX_CUDA_DEVICES 16
enum {
  MEMSAVE_CUDA_ABSENT = 0,      /* no CUDA LibTorch in the process */
  MEMSAVE_CUDA_UNUSED = 1,      /* CUDA LibTorch loaded, its allocator never initialised */
  MEMSAVE_CUDA_PRESENT = 2,     /* peaks below are valid */
  MEMSAVE_CUDA_UNAVAILABLE = 3  /* CUDA LibTorch loaded, its statistics cannot be read (cuda_reason) */
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
  int trace;               /* MEMSAVE_TRACE: call sites to list; 0 = off (set by the shim) */
  struct memsave_trace *trace_table; /* set by the hooks when trace > 0 and unwinding works */
  int cuda_state;          /* MEMSAVE_CUDA_* */
  int cuda_devices;        /* entries of cuda_peak_bytes filled in */
  int64_t cuda_peak_bytes[MEMSAVE_MAX_CUDA_DEVICES]; /* peak allocated bytes per device */
  const char *cuda_reason; /* static text, for MEMSAVE_CUDA_UNAVAILABLE */
  int timeline;            /* MEMSAVE_TIMELINE is set (by the shim) */
  struct memsave_timeline *timeline_table; /* set by the hooks when timeline is set */
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
