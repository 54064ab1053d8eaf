/* SPDX-License-Identifier: MIT */
/* internal.h: the one header shared by the shim's C files. */
#ifndef MEMSAVE_INTERNAL_H
#define MEMSAVE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "hooks_abi.h"

/* Log levels: warnings are always printed; info and debug follow MEMSAVE_VERBOSE. */
enum { MEMSAVE_LOG_WARN = 0, MEMSAVE_LOG_INFO = 1, MEMSAVE_LOG_DEBUG = 2 };

/* Options, read once from the environment by memsave__options_read (options.c). */
struct memsave_options {
  int enable;              /* MEMSAVE */
  unsigned ops_mask;       /* MEMSAVE_OPS */
  unsigned ops_unavailable; /* families asked for that this build lacks (filled by the loader) */
  int verbose;             /* MEMSAVE_VERBOSE */
  char hooks[4096];        /* MEMSAVE_HOOKS, "" = next to libmemsave.so */
  char report[4096];       /* MEMSAVE_REPORT, "" = no report */
  int trace;               /* MEMSAVE_TRACE: top N call sites, 0 = off */
  char timeline[4096];     /* MEMSAVE_TIMELINE, "" = no samples */
};

extern struct memsave_options memsave__opts;
extern struct memsave_shared memsave__shared;

void memsave__options_read(void);
void memsave__options_list(void);
/* Prints held-back warnings and, when verbose, the options; once, when LibTorch appears. */
void memsave__options_flush(void);
unsigned memsave__parse_ops(const char *value, int *ok);
int memsave__parse_bool(const char *value, int *out);

void memsave__log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void memsave__note_fallback(int family, const char *reason);

/* loader.c: called from the constructor and after every dlopen. */
void *memsave__real_dlopen(const char *file, int mode);
void memsave__try_activate(void);
int memsave__torch_state(void); /* 1 hooks loaded, 0 not yet, <0 refused */

/* format.c: "1.5 MiB"; returns buf. */
const char *memsave__human(uint64_t bytes, char *buf, size_t cap);

/* report.c */
void memsave__report_install(void);
void memsave__report_write(void);
/* Writes the MEMSAVE_TIMELINE samples as CSV; once, at exit. */
void memsave__timeline_write(void);

/* The reasons table (stats.c). */
extern struct memsave_reason memsave__reasons[MEMSAVE_MAX_REASONS];
extern int memsave__nreasons;

#endif /* MEMSAVE_INTERNAL_H */
