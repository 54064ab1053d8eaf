/* SPDX-License-Identifier: MIT */
/* options.c: the MEMSAVE_* table and its reader. The environment is read once, into fixed
 * buffers inside memsave__shared.opts (the hooks read them there), with no heap and nothing
 * that could re-enter the shim. Reading, the verbose listing and docs/options.md's table are
 * loops over the one table below. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

/* What a row's value is; each kind has a parser and a printer below. */
enum kind {
  KIND_BOOL,   /* int: the boolean grammar */
  KIND_INT,    /* int: a plain integer from lo to hi */
  KIND_OPS,    /* unsigned: a family list (the family table's names) */
  KIND_PATH,   /* char[]: any string that fits */
  KIND_OUTPUT, /* char[]: a path whose directory can be written now (the file comes at exit) */
  KIND_POISON  /* int: MEMSAVE_POISON_* (the poison grammar) */
};

struct option {
  const char *name;     /* the variable */
  enum kind kind;
  size_t offset, size;  /* the field in struct memsave_options */
  long dflt, lo, hi;    /* numeric kinds: the default and, for KIND_INT, the range */
  const char *unset;    /* string kinds: what "" (the default) means, for the listing */
  const char *accepted; /* the values, for the warning and the docs */
  const char *doc;      /* one line, for the verbose listing and the docs */
};

#define FIELD(f) offsetof(struct memsave_options, f), sizeof(((struct memsave_options *)0)->f)

/* The options, in the order of the verbose listing and of docs/options.md. */
static const struct option table[] = {
    /* MEMSAVE (default 1): 0 loads the hooks only to count tensor bytes: exactly stock. */
    {"MEMSAVE", KIND_BOOL, FIELD(enable), 1, 0, 1, NULL, "1/0, on/off, yes/no, true/false",
     "0: load the hooks only to count tensor bytes; register no kernels (exactly stock behaviour)"},
    /* MEMSAVE_OPS (default: the families marked on in MEMSAVE_FAMILY_MAP). */
    {"MEMSAVE_OPS", KIND_OPS, FIELD(ops_mask), MEMSAVE_FAMILY_DEFAULT_MASK, 0, 0, NULL, MEMSAVE_OPS_ACCEPTED,
     "families substituted; a list that starts with -name starts from the default set"},
    /* MEMSAVE_VERBOSE (default 0). */
    {"MEMSAVE_VERBOSE", KIND_INT, FIELD(verbose), 0, 0, 2, NULL, "0, 1, 2",
     "1: options and activation on stderr; 2: also every new fallback reason"},
    /* MEMSAVE_HOOKS (default: libmemsave_hooks.so next to libmemsave.so). */
    {"MEMSAVE_HOOKS", KIND_PATH, FIELD(hooks), 0, 0, 0, "(next to libmemsave.so)", "a path",
     "the hooks library to load"},
    /* MEMSAVE_REPORT (default: none). */
    {"MEMSAVE_REPORT", KIND_PATH, FIELD(report), 0, 0, 0, "(none)", "stderr or a path (%p = pid, .json = JSON)",
     "report written at exit by processes that loaded LibTorch"},
    /* MEMSAVE_TRACE (default 0: off). */
    {"MEMSAVE_TRACE", KIND_INT, FIELD(trace), 0, 0, 1000, NULL, "an integer from 0 to 1000",
     "attribute the bytes not kept to the top N call sites, in the report"},
    /* MEMSAVE_TIMELINE (default: none). */
    {"MEMSAVE_TIMELINE", KIND_OUTPUT, FIELD(timeline), 0, 0, 0, "(none)", "a path in a writable directory (%p = pid)",
     "CSV of CPU tensor bytes over time, written at exit"},
    /* MEMSAVE_POISON (default off). */
    {"MEMSAVE_POISON", KIND_POISON, FIELD(poison), MEMSAVE_POISON_OFF, 0, 0, NULL, "0/off, 1/on/nan, max",
     "a check: fill every stand-in with NaN (1) or the largest finite value (max); gradients must not change"},
};
#define NOPTIONS (sizeof table / sizeof table[0])

/* MEMSAVE_TIMELINE is written at exit; a path whose directory cannot be written is
 * refused now, while a warning can still say so, and why. Returns 0 or that errno. */
static int output_dir_error(const char *path) {
  size_t n = strlen(path);
  if (path[n - 1] == '/') return EISDIR;
  const char *slash = strrchr(path, '/');
  char dir[4096] = ".";
  if (slash == path) {
    dir[0] = '/';
  } else if (slash) {
    if ((size_t)(slash - path) >= sizeof dir) return ENAMETOOLONG;
    memcpy(dir, path, (size_t)(slash - path));
    dir[slash - path] = '\0';
  }
  return access(dir, W_OK) == 0 ? 0 : errno;
}

/* Parses `v` into the field; returns 1, or 0 (field untouched) for a bad value, with *err
 * the errno that refused a path (0 for a value outside the grammar). */
static int parse(const struct option *o, const char *v, void *field, int *err) {
  *err = 0;
  switch (o->kind) {
    case KIND_BOOL: return memsave__parse_bool(v, field);
    case KIND_INT: return memsave__parse_int(v, o->lo, o->hi, field);
    case KIND_OPS: return memsave__parse_ops(v, field);
    case KIND_POISON: return memsave__parse_poison(v, field);
    case KIND_PATH:
    case KIND_OUTPUT:
      if (strlen(v) >= o->size) *err = ENAMETOOLONG;
      else if (o->kind == KIND_OUTPUT) *err = output_dir_error(v);
      if (*err) return 0;
      memcpy(field, v, strlen(v) + 1);
      return 1;
  }
  return 0;
}

static void set_default(const struct option *o, void *field) {
  if (o->kind == KIND_OPS) *(unsigned *)field = (unsigned)o->dflt;
  else if (o->kind == KIND_BOOL || o->kind == KIND_INT || o->kind == KIND_POISON) *(int *)field = (int)o->dflt;
  else *(char *)field = '\0';
}

/* The field's value as the listing shows it. */
static const char *show(const struct option *o, const void *field, char *buf, size_t cap) {
  if (o->kind == KIND_OPS) return memsave__ops_string(*(const unsigned *)field, buf, cap);
  if (o->kind == KIND_POISON) snprintf(buf, cap, "%s", memsave__poison_name(*(const int *)field));
  else if (o->kind == KIND_BOOL || o->kind == KIND_INT) snprintf(buf, cap, "%d", *(const int *)field);
  else snprintf(buf, cap, "%s", *(const char *)field ? (const char *)field : o->unset);
  return buf;
}

static const char *show_default(const struct option *o, char *buf, size_t cap) {
  struct memsave_options defaults;
  void *field = (char *)&defaults + o->offset;
  set_default(o, field);
  return show(o, field, buf, cap);
}

/* Warnings found while reading the environment are held back until LibTorch shows up, so
 * that a process that never loads it (every child of a preloaded shell) prints nothing. */
#define MAX_PENDING 8
static char pending[MAX_PENDING][512];
static int npending;

void memsave__options_hold(const char *fmt, ...) {
  if (npending == MAX_PENDING) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(pending[npending++], sizeof pending[0], fmt, ap);
  va_end(ap);
}

static void bad_value(const struct option *o, const char *value, int err) {
  char dflt[64];
  if (npending == MAX_PENDING) return;
  snprintf(pending[npending++], sizeof pending[0],
           "warning: %s=\"%.200s%s\" is not valid%s%s (accepted: %s); using the default, %s", o->name, value,
           strlen(value) > 200 ? "..." : "", err ? ": " : "", err ? strerror(err) : "", o->accepted,
           show_default(o, dflt, sizeof dflt));
}

void memsave__options_read(void) {
  npending = 0;
  for (size_t i = 0; i < NOPTIONS; i++) {
    const struct option *o = &table[i];
    void *field = (char *)&memsave__shared.opts + o->offset;
    const char *v = getenv(o->name);
    set_default(o, field);
    int err;
    if (v && *v && !parse(o, v, field, &err)) bad_value(o, v, err);
  }
}

void memsave__options_flush(void) {
  static int listed;
  for (int i = 0; i < npending; i++) memsave__log(MEMSAVE_LOG_WARN, "%s", pending[i]);
  npending = 0;
  if (listed) return;
  listed = 1;
  char value[4200];
  for (size_t i = 0; i < NOPTIONS; i++)
    memsave__log(MEMSAVE_LOG_INFO, "option %s=%s  (%s)", table[i].name,
                 show(&table[i], (const char *)&memsave__shared.opts + table[i].offset, value, sizeof value),
                 table[i].doc);
}

void memsave__options_markdown(FILE *f) {
  char dflt[64];
  fprintf(f, "| variable | default | accepted | meaning |\n|---|---|---|---|\n");
  for (size_t i = 0; i < NOPTIONS; i++)
    fprintf(f, "| `%s` | %s | %s | %s |\n", table[i].name, show_default(&table[i], dflt, sizeof dflt),
            table[i].accepted, table[i].doc);
}
