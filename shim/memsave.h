/* SPDX-License-Identifier: MIT */
/* memsave.h: the public C ABI of libmemsave, for C, C++ (extern "C") and Python ctypes. */
#ifndef MEMSAVE_H
#define MEMSAVE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define MEMSAVE_API __attribute__((visibility("default")))
#else
#define MEMSAVE_API
#endif

#define MEMSAVE_VERSION_MAJOR 0
#define MEMSAVE_VERSION_MINOR 1
#define MEMSAVE_VERSION_PATCH 0

/* Operator families: the one table. Columns: the enum suffix, the name (MEMSAVE_OPS, the
 * report, the memsave command), 1 when substituted by default, and one line on what the
 * family covers. The rows' order is the ABI: a row's index is its MEMSAVE_FAMILY_* value
 * and its slot in the per-family arrays of struct memsave_stats; new families go at the
 * end. Linear is off by default: stock's addmm/mm nodes already keep the minimum for the
 * usual requires_grad patterns (docs/substituted.md). */
#define MEMSAVE_FAMILY_MAP(XX)                                                                \
  XX(CONV, conv, 1, "aten::convolution (conv1d/2d/3d and transposed)")                         \
  XX(LINEAR, linear, 0, "aten::linear (stock's addmm/mm nodes are minimal in the usual cases)") \
  XX(BATCHNORM, batchnorm, 1, "native_batch_norm, cudnn_batch_norm")                          \
  XX(RELU, relu, 1, "relu, threshold, leaky_relu, hardtanh and their in-place forms")       \
  XX(POOL, pool, 1, "max, average and adaptive average pooling, mean.dim")                   \
  XX(DROPOUT, dropout, 1, "dropout, feature_dropout (in-place too), native_dropout")       \
  XX(RECIPE, recipe, 1, "SiLU/GELU outputs and dropouts a mul, bmm or linear keeps: recomputed")

/* The enum follows the table: CONV = 0, LINEAR = 1, ... MEMSAVE_FAMILY_COUNT = rows. The
 * per-family arrays have MEMSAVE_FAMILY_SLOTS entries so that later families fit without
 * changing the layout. */
typedef enum memsave_family_t {
#define XX(id, name, on, doc) MEMSAVE_FAMILY_##id,
  MEMSAVE_FAMILY_MAP(XX)
#undef XX
  MEMSAVE_FAMILY_COUNT
} memsave_family_t;

/* Families substituted when MEMSAVE_OPS is unset (column 3 of the table). */
#define MEMSAVE_FAMILY_DEFAULT_MASK (0u MEMSAVE_FAMILY_MAP(MEMSAVE_FAMILY_DEFAULT_BIT_))
#define MEMSAVE_FAMILY_DEFAULT_BIT_(id, name, on, doc) | ((on) ? 1u << MEMSAVE_FAMILY_##id : 0u)

#define MEMSAVE_FAMILY_SLOTS 8

/* Error codes: 0 is success, every error is negative. */
#define MEMSAVE_ERRNO_MAP(XX)                                          \
  XX(EINVAL, -1, "invalid argument")                                  \
  XX(ENOTORCH, -2, "LibTorch is not loaded in this process")           \
  XX(EVERSION, -3, "LibTorch in the process is not the one the hooks were built for") \
  XX(ENOHOOKS, -4, "the hooks library could not be loaded")            \
  XX(EDISABLED, -5, "disabled by MEMSAVE=0")                           \
  XX(EINTERNAL, -6, "internal error")

typedef enum memsave_errno_t {
#define XX(name, value, text) MEMSAVE_##name = value,
  MEMSAVE_ERRNO_MAP(XX)
#undef XX
  MEMSAVE_OK = 0
} memsave_errno_t;

/* Statistics of this process. Size-versioned: pass sizeof(struct memsave_stats) in
 * `size`; fields added later go at the end, and an older caller gets the prefix it
 * knows. All byte figures are tensor bytes (numel x element size), not RSS. */
struct memsave_stats {
  uint64_t size;                                 /* bytes filled in by memsave_get_stats */
  uint64_t substituted[MEMSAVE_FAMILY_SLOTS];    /* our autograd nodes built, per family */
  uint64_t fallbacks[MEMSAVE_FAMILY_SLOTS];      /* calls sent to stock because unsupported */
  uint64_t passthrough[MEMSAVE_FAMILY_SLOTS];    /* calls sent to stock because stock is already minimal */
  uint64_t bytes_kept;                           /* tensor bytes our nodes keep for backward (cumulative):
                                                    activation_bytes_kept + parameter_bytes_kept */
  uint64_t bytes_stock;                          /* tensor bytes stock's nodes would keep for the same calls:
                                                    activation_bytes_stock + parameter_bytes_stock */
  uint64_t cpu_current_bytes;                    /* CPU tensor bytes allocated now (counting allocator) */
  uint64_t cpu_peak_bytes;                       /* peak of the above since start or memsave_reset_peak */
  uint64_t cpu_peak_total_bytes;                 /* peak of the above since start, whatever the resets */
  /* Added in 0.1 (issue 11): bytes_kept and bytes_stock apart. Activations are tensors the
   * forward computed (inputs, outputs, masks, batch statistics): what libmemsave saves.
   * Parameters are leaves that live in the model anyway (weights, biases, running
   * statistics): referencing them costs nothing. */
  uint64_t activation_bytes_kept;                /* activations our nodes keep */
  uint64_t activation_bytes_stock;               /* activations stock's nodes would keep */
  uint64_t parameter_bytes_kept;                 /* parameters our nodes reference */
  uint64_t parameter_bytes_stock;                /* parameters stock's nodes would reference */
  /* Added in 0.1 (issue 24): of the activations not kept, those a recipe recomputes in
   * backward (the recipe family), apart from those backward never needs. */
  uint64_t recomputed_bytes;
  /* Added in 0.1 (issue 25): the activations kept at once. The fields above are sums over
   * every node of the run, which grow with each training step; these count a node from its
   * forward until backward releases what it keeps (without retain_graph) or the node is
   * destroyed, so they compare with the peak tensor bytes. Over the whole run:
   * memsave_reset_peak does not touch them. */
  uint64_t activation_bytes_kept_peak;           /* the most activations our nodes kept at once */
  uint64_t activation_bytes_stock_peak;          /* the most stock's nodes would have kept at once
                                                    (its own moment: not always kept_peak's) */
  uint64_t activation_bytes_kept_live;           /* activations our nodes alive now keep */
  uint64_t activation_bytes_stock_live;          /* activations stock's nodes would keep now */
};

/* The library's version, "MAJOR.MINOR.PATCH". */
MEMSAVE_API const char *memsave_version(void);

/* 1 when the hooks are installed in this process (LibTorch loaded, MEMSAVE not 0). */
MEMSAVE_API int memsave_is_active(void);

/* 1 when substitution is on for operators recorded from now on. */
MEMSAVE_API int memsave_enabled(void);

/* Turns substitution on or off for ops recorded after the call; returns the previous value.
 * Has no effect on nodes already built. When MEMSAVE=0 the hooks are not registered and
 * this only changes the flag. */
MEMSAVE_API int memsave_set_enabled(int on);

/* Copies min(size, sizeof(struct memsave_stats)) bytes of statistics into *out.
 * Returns 0, or MEMSAVE_EINVAL for a NULL pointer or a size smaller than 8. */
MEMSAVE_API int memsave_get_stats(struct memsave_stats *out, size_t size);

/* Sets the peak tensor bytes (cpu_peak_bytes) to the current tensor bytes, so that a host can
 * measure the peak of one phase. cpu_peak_total_bytes and the report at exit keep the
 * whole run's peak. */
MEMSAVE_API void memsave_reset_peak(void);

/* Family name ("conv", "linear", ...) or NULL for an unknown index. */
MEMSAVE_API const char *memsave_family_name(int family);

/* The name ("MEMSAVE_EINVAL") and the text of an error code. */
MEMSAVE_API const char *memsave_err_name(int err);
MEMSAVE_API const char *memsave_strerror(int err);

#ifdef __cplusplus
}
#endif

#endif /* MEMSAVE_H */
