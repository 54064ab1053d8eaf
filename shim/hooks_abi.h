/* SPDX-License-Identifier: MIT */
/* hooks_abi.h: the private contract between libmemsave.so (C) and libmemsave_hooks.so (C++).
 *
 * The shim owns one `struct memsave_shared` and passes its address to memsave_hooks_init,
 * the hooks' one entry point. What crosses, each value with one owner (the comment on each
 * field names it), written once and only read by the other side:
 *   - shim -> hooks: the options as read from the environment (`opts`), the enabled flag of
 *     memsave_set_enabled, and two services (`log`, `note_fallback`), called through the
 *     pointers so that the hooks never call the shim's symbols by name;
 *   - hooks -> shim: which families they registered, the LibTorch version, the counters
 *     (updated with GCC's __atomic builtins, which C and C++ share), the CUDA snapshot, and
 *     pointers to their call-site and timeline tables, plain data with static storage that
 *     the report reads at exit.
 * So the shim never links LibTorch, and nothing goes shim -> hooks -> shim. */
#ifndef MEMSAVE_HOOKS_ABI_H
#define MEMSAVE_HOOKS_ABI_H

#include <stdint.h>

#include "memsave.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 2: MEMSAVE_TRACE and the call-site table, the CUDA snapshot.
 * 3: MEMSAVE_TIMELINE and the timeline buffer.
 * 4: the options in one struct (no copies), families_registered/_unavailable, the bytes
 *    kept apart as activations and parameters (issue 11).
 * 5: MEMSAVE_POISON and the count of poisoned stand-ins (issue 23).
 * 6: the activation bytes a recipe recomputes (`recomputed`, issue 24).
 * 7: the activation bytes kept by the nodes alive now and their largest figures (`kept_live`,
 *    `stock_live`, `kept_live_peak`, `stock_live_peak`, issue 25). */
#define MEMSAVE_HOOKS_ABI_VERSION 7
#define MEMSAVE_HOOKS_INIT_SYMBOL "memsave_hooks_init"

/* Levels of the `log` service: warnings are always printed; info and debug follow
 * MEMSAVE_VERBOSE. */
enum { MEMSAVE_LOG_WARN = 0, MEMSAVE_LOG_INFO = 1, MEMSAVE_LOG_DEBUG = 2 };

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
 * destructors run (Note [CUDA peak] in hooks/core/cuda.cpp). */
#define MEMSAVE_MAX_CUDA_DEVICES 16
enum {
  MEMSAVE_CUDA_ABSENT = 0,      /* no CUDA LibTorch in the process */
  MEMSAVE_CUDA_UNUSED = 1,      /* CUDA LibTorch loaded, its allocator never initialised */
  MEMSAVE_CUDA_PRESENT = 2,     /* peaks below are valid */
  MEMSAVE_CUDA_UNAVAILABLE = 3  /* CUDA LibTorch loaded, its statistics cannot be read (cuda_reason) */
};

/* The MEMSAVE_* options, read once from the environment by the shim (shim/options.c, one
 * table) straight into memsave_shared.opts; nobody else writes them. docs/options.md
 * describes each. */
struct memsave_options {
  int enable;          /* MEMSAVE: 0 = register no kernels, only count tensor bytes */
  unsigned ops_mask;   /* MEMSAVE_OPS: bit i set = family i is asked for */
  int verbose;         /* MEMSAVE_VERBOSE: 0, 1 (options, activation), 2 (every fallback) */
  int trace;           /* MEMSAVE_TRACE: call sites to list; 0 = off */
  char hooks[4096];    /* MEMSAVE_HOOKS: "" = libmemsave_hooks.so next to libmemsave.so */
  char report[4096];   /* MEMSAVE_REPORT: "" = no report, "stderr", or a path (%p = pid) */
  char timeline[4096]; /* MEMSAVE_TIMELINE: "" = no samples, or a path (%p = pid) */
  int poison;          /* MEMSAVE_POISON: MEMSAVE_POISON_* below */
};

/* MEMSAVE_POISON: what every stand-in is filled with (Note [Poisoned stand-in] in
 * hooks/core/standin.h). OFF leaves it untouched, as it is made for speed. */
enum { MEMSAVE_POISON_OFF = 0, MEMSAVE_POISON_NAN = 1, MEMSAVE_POISON_MAX = 2 };

/* Tensor bytes kept for backward, split by what they are. Activations: tensors computed by
 * the forward (inputs, outputs, masks, batch statistics). Parameters: leaves that live in
 * the model anyway (weights, biases, running statistics). */
struct memsave_bytes {
  uint64_t activations;
  uint64_t parameters;
};

struct memsave_shared {
  int abi_version;                 /* shim: MEMSAVE_HOOKS_ABI_VERSION; the hooks refuse another */
  struct memsave_options opts;     /* shim (options.c), before the hooks are loaded */
  int enabled;                     /* C ABI (memsave_set_enabled), set from opts.enable by the loader
                                      before init; read with __atomic_load_n */
  int active;                      /* loader: 1 when init succeeded with opts.enable */
  unsigned families_registered;    /* hooks: bit i = family i asked in opts.ops_mask and registered */
  unsigned families_unavailable;   /* hooks: bit i = family i asked in opts.ops_mask, not in this build
                                      (the hooks also log it, through `log`) */
  char torch_version[32];          /* hooks */
  /* Counters, hooks (note_fallback: the shim, called by the hooks). */
  uint64_t substituted[MEMSAVE_FAMILY_SLOTS];
  uint64_t fallbacks[MEMSAVE_FAMILY_SLOTS];
  uint64_t passthrough[MEMSAVE_FAMILY_SLOTS];
  struct memsave_bytes kept;       /* hooks: tensor bytes our nodes keep (cumulative) */
  struct memsave_bytes stock;      /* hooks: tensor bytes stock's nodes would keep for the same calls */
  uint64_t recomputed;             /* hooks: activation bytes not kept because a recipe recomputes them
                                      in backward (Note [Recipe] in hooks/core/recipe.h); part of
                                      stock.activations - kept.activations */
  /* Live activations (Note [Live activations] in hooks/core/node.h): kept.activations and
   * stock.activations of the nodes that still keep them, from their forward until backward
   * releases them or the node is destroyed, and the largest value of each over the run. */
  uint64_t kept_live;              /* hooks */
  uint64_t stock_live;             /* hooks */
  uint64_t kept_live_peak;         /* hooks: the largest kept_live so far */
  uint64_t stock_live_peak;        /* hooks: the largest stock_live so far (apart from kept_live's) */
  int64_t cpu_current_bytes;       /* hooks (counting allocator) */
  int64_t cpu_peak_bytes;          /* hooks; memsave_reset_peak sets it to cpu_current_bytes */
  struct memsave_trace *trace_table; /* hooks: set when opts.trace > 0 and unwinding works */
  int cuda_state;                  /* hooks: MEMSAVE_CUDA_* */
  int cuda_devices;                /* hooks: entries of cuda_peak_bytes filled in */
  int64_t cuda_peak_bytes[MEMSAVE_MAX_CUDA_DEVICES]; /* hooks: peak allocated bytes per device */
  const char *cuda_reason;         /* hooks: static text, for MEMSAVE_CUDA_UNAVAILABLE */
  struct memsave_timeline *timeline_table; /* hooks: set when opts.timeline is set */
  const uint64_t *poisoned;        /* hooks: stand-ins filled under MEMSAVE_POISON so far (read with
                                      __atomic_load_n); set when opts.poison is on */
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
