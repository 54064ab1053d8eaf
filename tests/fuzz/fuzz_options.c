/* SPDX-License-Identifier: MIT */
/* fuzz_options.c: libFuzzer target for the MEMSAVE_* reader (shim/options.c), the grammar
 * (shim/grammar.c) and %p expansion (shim/report.c). The input is NUL-separated items; the
 * first byte of each picks the variable, the rest is its value. Checks what the contract
 * says: every field in range or at its default, paths NUL-terminated inside their buffers,
 * an ops list that reads back to the same mask. Warnings go to stderr (closed by fuzz.sh). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static const char *const names[] = {"MEMSAVE",       "MEMSAVE_OPS",   "MEMSAVE_VERBOSE", "MEMSAVE_HOOKS",
                                    "MEMSAVE_REPORT", "MEMSAVE_TRACE", "MEMSAVE_TIMELINE"};
#define NNAMES (sizeof names / sizeof names[0])

#define CHECK(cond) \
  do {              \
    if (!(cond)) abort(); \
  } while (0)

/* The grammar alone, on one value. */
static void grammar(const char *v) {
  int b = -7, i = -7;
  if (memsave__parse_bool(v, &b)) CHECK(b == 0 || b == 1);
  else CHECK(b == -7);
  if (memsave__parse_int(v, -3, 1000, &i)) CHECK(i >= -3 && i <= 1000);
  else CHECK(i == -7);
  unsigned mask = 0, again = 0;
  if (memsave__parse_ops(v, &mask)) {
    char s[256];
    CHECK((mask & ~MEMSAVE_ALL_FAMILIES) == 0);
    CHECK(memsave__parse_ops(memsave__ops_string(mask, s, sizeof s), &again) && again == mask);
  }
}

/* %p expansion into every small size: always a string inside the buffer. */
static void expand(const char *spec) {
  char out[4200];
  for (size_t cap = 0; cap < 24; cap++) {
    memset(out, 'x', sizeof out);
    int ok = memsave__expand_path(spec, out, cap);
    if (cap) CHECK(memchr(out, '\0', cap) != NULL);
    if (ok) CHECK(strstr(spec, "%p") || strcmp(out, spec) == 0);
  }
  if (memsave__expand_path(spec, out, sizeof out)) CHECK(strlen(out) < sizeof out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *buf = malloc(size + 1);
  if (!buf) return 0;
  memcpy(buf, data, size);
  buf[size] = '\0';
  for (size_t i = 0; i < NNAMES; i++) unsetenv(names[i]);
  for (char *p = buf; p < buf + size; p += strlen(p) + 1) {
    if (!*p) continue;
    grammar(p + 1);
    setenv(names[(unsigned char)p[0] % NNAMES], p + 1, 1);
  }
  memsave__options_read();
  memsave__options_flush();
  const struct memsave_options *o = &memsave__shared.opts;
  CHECK(o->enable == 0 || o->enable == 1);
  CHECK(o->verbose >= 0 && o->verbose <= 2);
  CHECK(o->trace >= 0 && o->trace <= 1000);
  CHECK((o->ops_mask & ~MEMSAVE_ALL_FAMILIES) == 0);
  CHECK(memchr(o->hooks, '\0', sizeof o->hooks) && memchr(o->report, '\0', sizeof o->report) &&
        memchr(o->timeline, '\0', sizeof o->timeline));
  expand(o->report);
  expand(o->timeline);
  expand(buf);
  free(buf);
  return 0;
}
