/* SPDX-License-Identifier: MIT */
/* internal.h: the one header shared by the shim's C files. */
#ifndef MEMSAVE_INTERNAL_H
#define MEMSAVE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common.h"
#include "hooks_abi.h"

/* state.c: the one struct shared with the hooks; its `opts` are the options. */
extern struct memsave_shared memsave__shared;

/* options.c: reads the MEMSAVE_* variables into memsave__shared.opts, once, from the
 * constructor. Warnings are held back until memsave__options_flush. */
void memsave__options_read(void);
/* Prints held-back warnings and, when verbose, the options; once, when LibTorch appears. */
void memsave__options_flush(void);
/* The option table as the rows of docs/options.md's table (variable, default, accepted,
 * meaning), so that a test can hold the page to the table. */
void memsave__options_markdown(FILE *f);
/* Holds back one more warning (printf format) for memsave__options_flush. */
void memsave__options_hold(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* environ.c: from the constructor, after the options: Note [AOTAutograd's cache]. */
void memsave__environ_adjust(void);

void memsave__log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void memsave__note_fallback(int family, const char *reason);

/* loader.c: called from the constructor and after every dlopen. */
void *memsave__real_dlopen(const char *file, int mode);
void memsave__try_activate(void);
int memsave__torch_state(void); /* 1 hooks loaded, 0 not yet, <0 refused */

/* report.c */
/* Expands each %p of pattern to the pid into out; returns 1, or 0 (out truncated, still a
 * string when cap > 0) when the result does not fit in cap bytes. */
int memsave__expand_path(const char *pattern, char *out, size_t cap);
/* From the constructor: the report and the timeline at exit, when their options ask. */
void memsave__report_install(void);
/* Writes the report to `spec` ("stderr" or a path, %p = pid; .json = JSON) as a process in
 * `torch_state` (memsave__torch_state) would. Returns 0, or -1 when it was lost (said once
 * on stderr). */
int memsave__report_write_to(const char *spec, int torch_state);
/* Writes the MEMSAVE_TIMELINE samples as CSV to `spec` (%p = pid); same return. */
int memsave__timeline_write_to(const char *spec, struct memsave_timeline *t);

/* The reasons table (state.c). */
extern struct memsave_reason memsave__reasons[MEMSAVE_MAX_REASONS];
extern int memsave__nreasons;

#endif /* MEMSAVE_INTERNAL_H */
