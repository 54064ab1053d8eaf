/* SPDX-License-Identifier: MIT */
/* grammar.c: the option grammar and the family names, generated from the family table in
 * memsave.h; shared by the shim's option reader and the memsave command. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common.h"
#include "hooks_abi.h"

/* The table's row order is the ABI (memsave.h): these values may never change. */
_Static_assert(MEMSAVE_FAMILY_CONV == 0 && MEMSAVE_FAMILY_LINEAR == 1 && MEMSAVE_FAMILY_BATCHNORM == 2 &&
                   MEMSAVE_FAMILY_RELU == 3 && MEMSAVE_FAMILY_POOL == 4 && MEMSAVE_FAMILY_DROPOUT == 5,
               "family values are ABI");
_Static_assert(MEMSAVE_FAMILY_COUNT <= MEMSAVE_FAMILY_SLOTS, "a new family needs a free slot");

static const char *const family_names[] = {
#define XX(id, name, on, doc) #name,
    MEMSAVE_FAMILY_MAP(XX)
#undef XX
};

const char *memsave_family_name(int family) {
  if (family < 0 || family >= MEMSAVE_FAMILY_COUNT) return NULL;
  return family_names[family];
}

const char *memsave_version(void) {
#define STR2(x) #x
#define STR(x) STR2(x)
  return STR(MEMSAVE_VERSION_MAJOR) "." STR(MEMSAVE_VERSION_MINOR) "." STR(MEMSAVE_VERSION_PATCH);
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

int memsave__parse_poison(const char *v, int *out) {
  int on;
  if (memsave__parse_bool(v, &on)) { *out = on ? MEMSAVE_POISON_NAN : MEMSAVE_POISON_OFF; return 1; }
  if (strcasecmp(v, "nan") == 0) { *out = MEMSAVE_POISON_NAN; return 1; }
  if (strcasecmp(v, "max") == 0) { *out = MEMSAVE_POISON_MAX; return 1; }
  return 0;
}

const char *memsave__poison_name(int poison) {
  return poison == MEMSAVE_POISON_NAN ? "nan" : poison == MEMSAVE_POISON_MAX ? "max" : "off";
}

int memsave__parse_int(const char *v, long lo, long hi, int *out) {
  char *end;
  errno = 0;
  long x = strtol(v, &end, 10);
  if (errno != 0 || end == v || *end != '\0' || x < lo || x > hi) return 0;
  *out = (int)x;
  return 1;
}

int memsave__family_index(const char *name, size_t len) {
  for (int i = 0; i < MEMSAVE_FAMILY_COUNT; i++)
    if (strlen(family_names[i]) == len && strncasecmp(name, family_names[i], len) == 0) return i;
  return -1;
}

/* The bits one list item names: a family, "all", "none", or nothing ("conv,,relu" and a
 * trailing comma are tolerated). Returns 0 for an unknown name. */
static int item_bits(const char *v, size_t len, unsigned *bits) {
  int f;
  if (len == 3 && strncasecmp(v, "all", 3) == 0) *bits = MEMSAVE_ALL_FAMILIES;
  else if ((len == 4 && strncasecmp(v, "none", 4) == 0) || len == 0) *bits = 0;
  else if ((f = memsave__family_index(v, len)) >= 0) *bits = 1u << f;
  else return 0;
  return 1;
}

int memsave__parse_ops(const char *v, unsigned *out) {
  unsigned mask = 0;
  for (int first = 1; *v; first = 0) {
    const char *end = strchr(v, ',');
    size_t len = end ? (size_t)(end - v) : strlen(v);
    while (len && isspace((unsigned char)*v)) { v++; len--; }
    while (len && isspace((unsigned char)v[len - 1])) len--;
    int exclude = len && *v == '-';
    if (exclude) { v++; len--; }
    if (first && exclude) mask = MEMSAVE_FAMILY_DEFAULT_MASK;
    unsigned bits;
    if (!item_bits(v, len, &bits)) return 0;
    mask = exclude ? (mask & ~bits) : (mask | bits);
    if (!end) break;
    v = end + 1;
  }
  *out = mask;
  return 1;
}

const char *memsave__ops_string(unsigned mask, char *buf, size_t cap) {
  size_t n = 0;
  buf[0] = '\0';
  for (int i = 0; i < MEMSAVE_FAMILY_COUNT; i++) {
    if (!(mask & (1u << i))) continue;
    int w = snprintf(buf + n, cap - n, "%s%s", n ? "," : "", family_names[i]);
    if (w < 0 || (size_t)w >= cap - n) break;
    n += (size_t)w;
  }
  if (n == 0) snprintf(buf, cap, "none");
  return buf;
}
