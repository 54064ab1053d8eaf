/* SPDX-License-Identifier: MIT */
/* report.c: the report written once at process exit (MEMSAVE_REPORT=stderr|PATH), as text
 * or, for a PATH ending in .json, as one JSON object. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

static int written;

/* One human-unit formatter for every byte figure (the CLI prints the same way). */
static const char *human(uint64_t bytes, char *buf, size_t cap) {
  static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = (double)bytes;
  int u = 0;
  while (v >= 1024.0 && u < 4) { v /= 1024.0; u++; }
  if (u == 0) snprintf(buf, cap, "%llu B", (unsigned long long)bytes);
  else snprintf(buf, cap, "%.1f %s", v, units[u]);
  return buf;
}

/* Expands %p to the pid; returns 0 if the result does not fit. */
static int expand_path(const char *pattern, char *out, size_t cap) {
  size_t n = 0;
  for (const char *p = pattern; *p; p++) {
    int w;
    if (p[0] == '%' && p[1] == 'p') {
      w = snprintf(out + n, cap - n, "%ld", (long)getpid());
      p++;
    } else {
      w = snprintf(out + n, cap - n, "%c", *p);
    }
    if (w < 0 || (size_t)w >= cap - n) return 0;
    n += (size_t)w;
  }
  return 1;
}

static void write_json(FILE *f, const struct memsave_stats *st) {
  const struct memsave_shared *s = &memsave__shared;
  fprintf(f, "{\"memsave_version\":\"%s\",\"pid\":%ld,\"torch_loaded\":%s,\"torch_version\":\"%s\",",
          memsave_version(), (long)getpid(), memsave__torch_state() == 1 ? "true" : "false", s->torch_version);
  fprintf(f, "\"active\":%s,\"enabled\":%s,\"families\":{", memsave_is_active() ? "true" : "false",
          memsave_enabled() ? "true" : "false");
  for (int i = 0; i < MEMSAVE_FAMILY_COUNT; i++) {
    unsigned bit = 1u << i;
    const char *state = !(memsave__opts.ops_mask & bit) ? "off" : !(s->families_built & bit) ? "unavailable" : "on";
    fprintf(f, "%s\"%s\":{\"state\":\"%s\",\"substituted\":%llu,\"passthrough\":%llu,\"fallbacks\":%llu}",
            i ? "," : "", memsave_family_name(i), state, (unsigned long long)st->substituted[i],
            (unsigned long long)st->passthrough[i], (unsigned long long)st->fallbacks[i]);
  }
  fprintf(f, "},\"bytes_kept\":%llu,\"bytes_stock\":%llu,\"cpu_current_bytes\":%llu,\"cpu_peak_bytes\":%llu,",
          (unsigned long long)st->bytes_kept, (unsigned long long)st->bytes_stock,
          (unsigned long long)st->cpu_current_bytes, (unsigned long long)st->cpu_peak_bytes);
  fprintf(f, "\"fallback_reasons\":[");
  for (int i = 0; i < memsave__nreasons; i++) {
    const struct memsave_reason *r = &memsave__reasons[i];
    fprintf(f, "%s{\"family\":\"%s\",\"reason\":\"", i ? "," : "", memsave_family_name(r->family));
    for (const char *c = r->text; *c; c++) {
      if (*c == '"' || *c == '\\') fputc('\\', f);
      fputc(*c, f);
    }
    fprintf(f, "\",\"count\":%llu}", (unsigned long long)r->count);
  }
  fprintf(f, "]}\n");
}

static void write_text(FILE *f, const struct memsave_stats *st) {
  const struct memsave_shared *s = &memsave__shared;
  char a[32], b[32];
  fprintf(f, "memsave: report (libmemsave %s, pid %ld)\n", memsave_version(), (long)getpid());
  if (memsave__torch_state() != 1) {
    fprintf(f, "memsave:   LibTorch was found but the hooks were refused (see the warning above)\n");
    return;
  }
  fprintf(f, "memsave:   LibTorch %s, hooks %s\n", s->torch_version,
          memsave_is_active() ? "active" : "not registered (MEMSAVE=0)");
  fprintf(f, "memsave:   %-10s %-12s %12s %12s %12s\n", "family", "state", "substituted", "passthrough", "fallbacks");
  for (int i = 0; i < MEMSAVE_FAMILY_COUNT; i++) {
    unsigned bit = 1u << i;
    const char *state = !(memsave__opts.ops_mask & bit) ? "off" : !(s->families_built & bit) ? "unavailable" : "on";
    fprintf(f, "memsave:   %-10s %-12s %12llu %12llu %12llu\n", memsave_family_name(i), state,
            (unsigned long long)st->substituted[i], (unsigned long long)st->passthrough[i],
            (unsigned long long)st->fallbacks[i]);
  }
  fprintf(f, "memsave:   kept for backward: %s (stock would keep %s)\n", human(st->bytes_kept, a, sizeof a),
          human(st->bytes_stock, b, sizeof b));
  fprintf(f, "memsave:   CPU tensor bytes: peak %s, at exit %s\n", human(st->cpu_peak_bytes, a, sizeof a),
          human(st->cpu_current_bytes, b, sizeof b));
  for (int i = 0; i < memsave__nreasons; i++)
    fprintf(f, "memsave:   fallback %s: %s (%llu)\n", memsave_family_name(memsave__reasons[i].family),
            memsave__reasons[i].text, (unsigned long long)memsave__reasons[i].count);
}

void memsave__report_write(void) {
  /* A process that never loaded LibTorch writes nothing: children of the host inherit
   * MEMSAVE_REPORT and must not overwrite the host's report. */
  if (written || !memsave__opts.report[0] || memsave__torch_state() == 0) return;
  written = 1;
  struct memsave_stats st;
  memsave_get_stats(&st, sizeof st);
  const char *spec = memsave__opts.report;
  if (strcmp(spec, "stderr") == 0) {
    write_text(stderr, &st);
    fflush(stderr);
    return;
  }
  char path[4200];
  if (!expand_path(spec, path, sizeof path)) {
    memsave__log(MEMSAVE_LOG_WARN, "warning: MEMSAVE_REPORT path is too long; no report written");
    return;
  }
  FILE *f = fopen(path, "w");
  if (!f) {
    memsave__log(MEMSAVE_LOG_WARN, "warning: cannot write the report to %s", path);
    return;
  }
  size_t len = strlen(path);
  if (len > 5 && strcmp(path + len - 5, ".json") == 0) write_json(f, &st);
  else write_text(f, &st);
  fclose(f);
}

/* Registered from the constructor, before LibTorch's own exit handlers exist, so it runs
 * after them: the counters live in the shim and stay readable. */
void memsave__report_install(void) {
  if (memsave__opts.report[0]) atexit(memsave__report_write);
}
