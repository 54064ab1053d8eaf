/* SPDX-License-Identifier: MIT */
/* json.c: just enough JSON to read the reports libmemsave writes (shim/report.c): find a
 * member by a dotted path, an array element by index, and read numbers and strings. Values
 * are returned as pointers into the text; nothing is allocated. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *skip_ws(const char *p) {
  while (p && isspace((unsigned char)*p)) p++;
  return p;
}

/* Past the closing quote of the string starting at p, or NULL. */
static const char *skip_string(const char *p) {
  if (*p != '"') return NULL;
  for (p++; *p; p++) {
    if (*p == '\\' && p[1]) p++;
    else if (*p == '"') return p + 1;
  }
  return NULL;
}

/* Reports nest four deep; text nested deeper than this is malformed (issue 15: a report of
 * 1 MiB of '[' overflowed the stack of `memsave ab` in this recursion). */
#define MAX_DEPTH 64

/* Past the value starting at p (ws skipped), or NULL on malformed text. */
static const char *skip_value(const char *p, int depth) {
  p = skip_ws(p);
  if (!p || !*p) return NULL;
  if (*p == '"') return skip_string(p);
  if (*p == '{' || *p == '[') {
    if (depth >= MAX_DEPTH) return NULL;
    char close = *p == '{' ? '}' : ']';
    p = skip_ws(p + 1);
    if (*p == close) return p + 1;
    for (;;) {
      if (close == '}') {
        p = skip_string(skip_ws(p));
        p = p ? skip_ws(p) : NULL;
        if (!p || *p != ':') return NULL;
        p++;
      }
      p = skip_ws(skip_value(p, depth + 1));
      if (!p) return NULL;
      if (*p == close) return p + 1;
      if (*p != ',') return NULL;
      p++;
    }
  }
  while (*p && (isalnum((unsigned char)*p) || *p == '-' || *p == '+' || *p == '.')) p++; /* number, literal */
  return p;
}

/* The value of member `key` (len bytes) of the object at p, or NULL. */
static const char *member(const char *p, const char *key, size_t len) {
  p = skip_ws(p);
  if (!p || *p != '{') return NULL;
  p = skip_ws(p + 1);
  while (p && *p == '"') {
    const char *name = p + 1, *end = skip_string(p);
    if (!end) return NULL;
    p = skip_ws(end);
    if (*p != ':') return NULL;
    p = skip_ws(p + 1);
    if ((size_t)(end - 1 - name) == len && strncmp(name, key, len) == 0) return p;
    p = skip_ws(skip_value(p, 0));
    if (!p || *p != ',') return NULL;
    p = skip_ws(p + 1);
  }
  return NULL;
}

const char *cli_json_get(const char *json, const char *path) {
  const char *p = json;
  while (p && *path) {
    const char *dot = strchr(path, '.');
    size_t len = dot ? (size_t)(dot - path) : strlen(path);
    p = member(p, path, len);
    path += len + (dot ? 1 : 0);
  }
  return p;
}

const char *cli_json_at(const char *array, int index) {
  const char *p = skip_ws(array);
  if (!p || *p != '[') return NULL;
  p = skip_ws(p + 1);
  if (*p == ']') return NULL;
  for (int i = 0; p; i++) {
    if (i == index) return p;
    p = skip_ws(skip_value(p, 0));
    if (!p || *p != ',') return NULL;
    p = skip_ws(p + 1);
  }
  return NULL;
}

int cli_json_u64(const char *value, uint64_t *out) {
  value = skip_ws(value);
  if (!value || !isdigit((unsigned char)*value)) return 0;
  errno = 0;
  unsigned long long v = strtoull(value, NULL, 10);
  if (errno) return 0;
  *out = v;
  return 1;
}

/* Copies a string value, undoing \" and \\ (the only escapes of names and reasons). */
int cli_json_str(const char *value, char *out, size_t cap) {
  value = skip_ws(value);
  if (!value || *value != '"' || cap == 0) return 0;
  size_t n = 0;
  for (const char *p = value + 1; *p && *p != '"'; p++) {
    if (*p == '\\' && p[1]) p++;
    if (n + 1 < cap) out[n++] = *p;
  }
  out[n] = '\0';
  return 1;
}
