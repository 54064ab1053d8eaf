/* SPDX-License-Identifier: MIT */
/* options.c: the MEMSAVE_* table and its parser. The environment is read once, into fixed
 * buffers, with no heap and nothing that could re-enter the shim. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "internal.h"

struct memsave_options memsave__opts;

static const char *const family_names[MEMSAVE_FAMILY_COUNT] = {
    "conv", "linear", "batchnorm", "relu", "pool", "dropout"};

/* Families substituted when MEMSAVE_OPS is unset. Linear is off by default: stock's
 * addmm/mm nodes already keep the minimum (see README, "What is substituted"). */
#define DEFAULT_OPS                                                                   \
  ((1u << MEMSAVE_FAMILY_CONV) | (1u << MEMSAVE_FAMILY_BATCHNORM) |                  \
   (1u << MEMSAVE_FAMILY_RELU) | (1u << MEMSAVE_FAMILY_POOL) |                       \
   (1u << MEMSAVE_FAMILY_DROPOUT))
#define ALL_OPS ((1u << MEMSAVE_FAMILY_COUNT) - 1u)

const char *memsave_family_name(int family) {
  if (family < 0 || family >= MEMSAVE_FAMILY_COUNT) return NULL;
  return family_names[family];
}

int memsave__parse_bool(const char *v, int *out) {
  static const char *const on[] = {"1", "on", "yes", "true"};
  static const char *const off[] = {"0", "off", "no", "false"};
  for (size_t i = 0; i < 4; i++) {
    if (strcasecmp(v, on[i]) == 0) { *out = 1; return 1; }
    if (strcasecmp(v, off[i]) == 0) { *out = 0; return 1; }
  }
  return 0;
}

static int parse_int(const char *v, long lo, long hi, int *out) {
  char *end;
  errno = 0;
  long x = strtol(v, &end, 10);
  if (errno != 0 || end == v || *end != '\0' || x < lo || x > hi) return 0;
  *out = (int)x;
  return 1;
}

static int family_index(const char *name, size_t len) {
  for (int i = 0; i < MEMSAVE_FAMILY_COUNT; i++)
    if (strlen(family_names[i]) == len && strncasecmp(name, family_names[i], len) == 0) return i;
  return -1;
}

/* "conv,relu", "all", "all,-linear", "-dropout" (the default set minus dropout). A list
 * that starts with an exclusion starts from the default set. Sets *ok to 0 on any unknown
 * name; the returned mask is then meaningless. */
unsigned memsave__parse_ops(const char *v, int *ok) {
  unsigned mask = 0;
  int first = 1;
  *ok = 1;
  while (*v) {
    const char *end = strchr(v, ',');
    size_t len = end ? (size_t)(end - v) : strlen(v);
    while (len && isspace((unsigned char)*v)) { v++; len--; }
    while (len && isspace((unsigned char)v[len - 1])) len--;
    int exclude = len && *v == '-';
    if (exclude) { v++; len--; }
    if (first && exclude) mask = DEFAULT_OPS;
    first = 0;
    unsigned bits;
    if (len == 3 && strncasecmp(v, "all", 3) == 0) {
      bits = ALL_OPS;
    } else if (len == 4 && strncasecmp(v, "none", 4) == 0) {
      bits = 0;
    } else if (len == 0) {
      bits = 0; /* tolerate "conv,,relu" and a trailing comma */
    } else {
      int f = family_index(v, len);
      if (f < 0) { *ok = 0; return 0; }
      bits = 1u << f;
    }
    mask = exclude ? (mask & ~bits) : (mask | bits);
    if (!end) break;
    v = end + 1;
  }
  return mask;
}

/* Warnings found while reading the environment are held back until LibTorch shows up, so
 * that a process that never loads it (every child of a preloaded shell) prints nothing. */
#define MAX_PENDING 8
static char pending[MAX_PENDING][512];
static int npending;

static void bad_value(const char *name, const char *value, const char *accepted, const char *dflt) {
  if (npending == MAX_PENDING) return;
  snprintf(pending[npending++], sizeof pending[0],
           "warning: %s=\"%.200s\" is not valid (accepted: %s); using the default, %s", name, value, accepted, dflt);
}

static void copy_string(char *dst, size_t cap, const char *name, const char *value) {
  size_t n = strlen(value);
  if (n >= cap) {
    if (npending < MAX_PENDING)
      snprintf(pending[npending++], sizeof pending[0], "warning: %s is longer than %zu characters; ignored", name, cap - 1);
    dst[0] = '\0';
    return;
  }
  memcpy(dst, value, n + 1);
}

/* The option table: name, default, accepted values and meaning. The parser below reads
 * exactly these variables, the verbose listing prints them, docs/options.md repeats them. */
static const struct {
  const char *name, *dflt, *accepted, *doc;
} option_table[] = {
    {"MEMSAVE", "1", "1/0, on/off, yes/no, true/false", "0 registers no kernels; tensor bytes are still counted"},
    {"MEMSAVE_OPS", "conv,batchnorm,relu,pool,dropout",
     "a comma list of conv, linear, batchnorm, relu, pool, dropout, all, none, -name", "families to substitute"},
    {"MEMSAVE_VERBOSE", "0", "0, 1, 2", "1 lists options and activation, 2 also every fallback"},
    {"MEMSAVE_HOOKS", "", "a path", "hooks library; default libmemsave_hooks.so next to libmemsave.so"},
    {"MEMSAVE_REPORT", "", "stderr or a path (%p = pid, .json = JSON)", "report written at exit"},
    {"MEMSAVE_TRACE", "0", "an integer from 0 to 1000", "attribute saved bytes to the top N call sites"},
    {"MEMSAVE_TIMELINE", "", "a path in a writable directory (%p = pid)",
     "CSV of CPU tensor bytes over time, written at exit"},
};
enum { OPT_MEMSAVE, OPT_OPS, OPT_VERBOSE, OPT_HOOKS, OPT_REPORT, OPT_TRACE, OPT_TIMELINE };

/* MEMSAVE_TIMELINE is written at exit; a path whose directory cannot be written is
 * refused now, while a warning can still say so. */
static int writable_dir_of(const char *path) {
  size_t n = strlen(path);
  if (path[n - 1] == '/') return 0;
  const char *slash = strrchr(path, '/');
  if (!slash) return access(".", W_OK) == 0;
  if (slash == path) return access("/", W_OK) == 0;
  char dir[4096];
  memcpy(dir, path, (size_t)(slash - path));
  dir[slash - path] = '\0';
  return access(dir, W_OK) == 0;
}

static void bad(int id, const char *value) {
  bad_value(option_table[id].name, value, option_table[id].accepted,
            option_table[id].dflt[0] ? option_table[id].dflt : "(none)");
}

void memsave__options_read(void) {
  struct memsave_options *o = &memsave__opts;
  const char *v;
  npending = 0;
  o->enable = 1;
  o->ops_mask = DEFAULT_OPS;
  o->verbose = 0;
  o->hooks[0] = o->report[0] = '\0';
  o->trace = 0;
  o->timeline[0] = '\0';

  /* Verbose first, so that the other options can log at the right level. */
  if ((v = getenv("MEMSAVE_VERBOSE")) && *v && !parse_int(v, 0, 2, &o->verbose)) {
    o->verbose = 0;
    bad(OPT_VERBOSE, v);
  }
  if ((v = getenv("MEMSAVE")) && *v && !memsave__parse_bool(v, &o->enable)) {
    o->enable = 1;
    bad(OPT_MEMSAVE, v);
  }
  if ((v = getenv("MEMSAVE_OPS")) && *v) {
    int ok;
    unsigned mask = memsave__parse_ops(v, &ok);
    if (ok) o->ops_mask = mask;
    else bad(OPT_OPS, v);
  }
  if ((v = getenv("MEMSAVE_HOOKS")) && *v) copy_string(o->hooks, sizeof o->hooks, "MEMSAVE_HOOKS", v);
  if ((v = getenv("MEMSAVE_REPORT")) && *v) copy_string(o->report, sizeof o->report, "MEMSAVE_REPORT", v);
  if ((v = getenv("MEMSAVE_TRACE")) && *v && !parse_int(v, 0, 1000, &o->trace)) {
    o->trace = 0;
    bad(OPT_TRACE, v);
  }
  if ((v = getenv("MEMSAVE_TIMELINE")) && *v) {
    copy_string(o->timeline, sizeof o->timeline, "MEMSAVE_TIMELINE", v);
    if (o->timeline[0] && !writable_dir_of(o->timeline)) {
      o->timeline[0] = '\0';
      bad(OPT_TIMELINE, v);
    }
  }
}

static void ops_string(unsigned mask, char *buf, size_t cap) {
  size_t n = 0;
  buf[0] = '\0';
  for (int i = 0; i < MEMSAVE_FAMILY_COUNT; i++) {
    if (!(mask & (1u << i))) continue;
    int w = snprintf(buf + n, cap - n, "%s%s", n ? "," : "", family_names[i]);
    if (w < 0 || (size_t)w >= cap - n) break;
    n += (size_t)w;
  }
  if (n == 0) snprintf(buf, cap, "none");
}

void memsave__options_list(void) {
  const struct memsave_options *o = &memsave__opts;
  char value[4200];
  for (size_t i = 0; i < sizeof option_table / sizeof option_table[0]; i++) {
    switch (i) {
      case OPT_MEMSAVE: snprintf(value, sizeof value, "%d", o->enable); break;
      case OPT_OPS: ops_string(o->ops_mask, value, sizeof value); break;
      case OPT_VERBOSE: snprintf(value, sizeof value, "%d", o->verbose); break;
      case OPT_HOOKS: snprintf(value, sizeof value, "%.4000s", o->hooks[0] ? o->hooks : "(next to libmemsave.so)"); break;
      case OPT_REPORT: snprintf(value, sizeof value, "%.4000s", o->report[0] ? o->report : "(none)"); break;
      case OPT_TRACE: snprintf(value, sizeof value, "%d", o->trace); break;
      default: snprintf(value, sizeof value, "%.4000s", o->timeline[0] ? o->timeline : "(none)"); break;
    }
    memsave__log(MEMSAVE_LOG_INFO, "option %s=%s  (%s)", option_table[i].name, value, option_table[i].doc);
  }
}

void memsave__options_flush(void) {
  static int listed;
  for (int i = 0; i < npending; i++) memsave__log(MEMSAVE_LOG_WARN, "%s", pending[i]);
  npending = 0;
  if (!listed) memsave__options_list();
  listed = 1;
}
