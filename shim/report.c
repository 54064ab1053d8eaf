/* SPDX-License-Identifier: MIT */
/* report.c: the report written once at process exit (MEMSAVE_REPORT=stderr|PATH), as text
 * or, for a PATH ending in .json, as one JSON object. Shaped like mimalloc's statistics: a
 * header row, fixed-width columns, one human-unit formatter, a verdict per family and a
 * closing process line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "internal.h"

static int written;

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

static const char *family_state(int f) {
  unsigned bit = 1u << f;
  if (!(memsave__opts.ops_mask & bit)) return "off";
  return (memsave__shared.families_built & bit) ? "on" : "unavailable";
}

/* One word on each family, for the text report. */
static const char *family_verdict(int f, const struct memsave_stats *st) {
  const char *state = family_state(f);
  if (strcmp(state, "on") != 0) return strcmp(state, "off") == 0 ? "stock (off)" : "stock (not in this build)";
  if (!memsave_is_active()) return "stock (MEMSAVE=0)";
  if (st->fallbacks[f]) return "see fallbacks";
  return st->substituted[f] ? "ok" : "not used";
}

static void json_string(FILE *f, const char *s) {
  fputc('"', f);
  for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
    if (*c == '"' || *c == '\\') fprintf(f, "\\%c", *c);
    else if (*c < 0x20) fprintf(f, "\\u%04x", *c);
    else fputc(*c, f);
  }
  fputc('"', f);
}

static int by_bytes(const void *a, const void *b) {
  const struct memsave_site *x = *(const struct memsave_site *const *)a, *y = *(const struct memsave_site *const *)b;
  return x->bytes < y->bytes ? 1 : x->bytes > y->bytes ? -1 : strcmp(x->symbol, y->symbol);
}

/* The top memsave__opts.trace call sites by bytes, biggest first; returns how many. */
static int top_sites(const struct memsave_trace *t, const struct memsave_site **out) {
  int n = t->nsites < MEMSAVE_MAX_SITES ? t->nsites : MEMSAVE_MAX_SITES;
  for (int i = 0; i < n; i++) out[i] = &t->sites[i];
  qsort(out, (size_t)n, sizeof *out, by_bytes);
  return n < memsave__opts.trace ? n : memsave__opts.trace;
}

static const char *cuda_state_name(int state) {
  static const char *const names[] = {"absent", "unused", "present", "unavailable"};
  return state >= 0 && state <= 3 ? names[state] : "unknown";
}

static void write_json_trace(FILE *f, const struct memsave_trace *t) {
  const struct memsave_site *top[MEMSAVE_MAX_SITES];
  int n = top_sites(t, top);
  fprintf(f, ",\"trace\":{\"top\":%d,\"attribution\":\"%s\",\"nodes\":%llu,\"frames\":%llu,\"ns\":%llu,", memsave__opts.trace,
          t->operator_names ? "operator" : "call_site", (unsigned long long)t->nodes, (unsigned long long)t->frames,
          (unsigned long long)t->ns);
  fprintf(f, "\"unattributed_bytes\":%llu,\"unattributed_nodes\":%llu,\"sites_total\":%d,\"sites\":[",
          (unsigned long long)t->unattributed_bytes, (unsigned long long)t->unattributed_nodes, t->nsites);
  for (int i = 0; i < n; i++) {
    fprintf(f, "%s{\"symbol\":", i ? "," : "");
    json_string(f, top[i]->symbol);
    fprintf(f, ",\"module\":");
    json_string(f, top[i]->module);
    fprintf(f, ",\"module_offset\":%llu,\"bytes\":%llu,\"nodes\":%llu}", (unsigned long long)top[i]->module_offset,
            (unsigned long long)top[i]->bytes, (unsigned long long)top[i]->nodes);
  }
  fprintf(f, "]}");
}

static void write_json(FILE *f, const struct memsave_stats *st) {
  const struct memsave_shared *s = &memsave__shared;
  fprintf(f, "{\"memsave_version\":\"%s\",\"pid\":%ld,\"torch_loaded\":%s,\"torch_version\":\"%s\",",
          memsave_version(), (long)getpid(), memsave__torch_state() == 1 ? "true" : "false", s->torch_version);
  fprintf(f, "\"active\":%s,\"enabled\":%s,\"families\":{", memsave_is_active() ? "true" : "false",
          memsave_enabled() ? "true" : "false");
  for (int i = 0; i < MEMSAVE_FAMILY_COUNT; i++)
    fprintf(f, "%s\"%s\":{\"state\":\"%s\",\"substituted\":%llu,\"passthrough\":%llu,\"fallbacks\":%llu}",
            i ? "," : "", memsave_family_name(i), family_state(i), (unsigned long long)st->substituted[i],
            (unsigned long long)st->passthrough[i], (unsigned long long)st->fallbacks[i]);
  fprintf(f, "},\"bytes_kept\":%llu,\"bytes_stock\":%llu,\"cpu_current_bytes\":%llu,\"cpu_peak_bytes\":%llu,",
          (unsigned long long)st->bytes_kept, (unsigned long long)st->bytes_stock,
          (unsigned long long)st->cpu_current_bytes, (unsigned long long)st->cpu_peak_total_bytes);
  fprintf(f, "\"cuda\":{\"state\":\"%s\"", cuda_state_name(s->cuda_state));
  if (s->cuda_state == MEMSAVE_CUDA_UNAVAILABLE && s->cuda_reason) {
    fprintf(f, ",\"reason\":");
    json_string(f, s->cuda_reason);
  }
  fprintf(f, ",\"peak_allocated_bytes\":[");
  for (int d = 0; s->cuda_state == MEMSAVE_CUDA_PRESENT && d < s->cuda_devices; d++)
    fprintf(f, "%s%lld", d ? "," : "", (long long)s->cuda_peak_bytes[d]);
  fprintf(f, "]},\"fallback_reasons\":[");
  for (int i = 0; i < memsave__nreasons; i++) {
    const struct memsave_reason *r = &memsave__reasons[i];
    fprintf(f, "%s{\"family\":\"%s\",\"reason\":", i ? "," : "", memsave_family_name(r->family));
    json_string(f, r->text);
    fprintf(f, ",\"count\":%llu}", (unsigned long long)r->count);
  }
  fprintf(f, "]");
  if (s->trace_table) write_json_trace(f, s->trace_table);
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  fprintf(f, ",\"process\":{\"rss_peak_bytes\":%llu,\"user_s\":%.3f,\"system_s\":%.3f}}\n",
          (unsigned long long)ru.ru_maxrss * 1024ull, ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
          ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
}

static void write_text_trace(FILE *f, const struct memsave_trace *t) {
  const struct memsave_site *top[MEMSAVE_MAX_SITES];
  char a[32];
  int n = top_sites(t, top);
  fprintf(f, "memsave:   top %d of %d %s by bytes stock would have kept and libmemsave did not%s\n", n, t->nsites,
          t->operator_names ? "operators" : "call sites",
          t->operator_names ? " (Python host: attributed to the operator, not to a Python line)" : "");
  fprintf(f, "memsave:   (%llu nodes traced, %.1f us of CPU each)\n", (unsigned long long)t->nodes,
          t->nodes ? (double)t->ns / (double)t->nodes / 1e3 : 0.0);
  fprintf(f, "memsave:   %4s %12s %8s  %s\n", "rank", "not kept", "nodes", "site");
  for (int i = 0; i < n; i++) {
    fprintf(f, "memsave:   %4d %12s %8llu  %s", i + 1, memsave__human(top[i]->bytes, a, sizeof a),
            (unsigned long long)top[i]->nodes, top[i]->symbol);
    if (top[i]->module[0]) fprintf(f, "  in %s+0x%llx", top[i]->module, (unsigned long long)top[i]->module_offset);
    fputc('\n', f);
  }
  if (t->unattributed_nodes)
    fprintf(f, "memsave:   %4s %12s %8llu  (no frame outside LibTorch: autograd engine or worker threads)\n", "-",
            memsave__human(t->unattributed_bytes, a, sizeof a), (unsigned long long)t->unattributed_nodes);
  if (n > 0 && !t->operator_names)
    fprintf(f, "memsave:   file and line of a site: addr2line -i -f -C -e <module path> 0x<offset>\n");
}

static void write_text(FILE *f, const struct memsave_stats *st) {
  const struct memsave_shared *s = &memsave__shared;
  char a[32], b[32], c[32];
  fprintf(f, "memsave: report (libmemsave %s, pid %ld)\n", memsave_version(), (long)getpid());
  if (memsave__torch_state() != 1) {
    fprintf(f, "memsave:   LibTorch was found but the hooks were refused (see the warning above)\n");
    return;
  }
  fprintf(f, "memsave:   LibTorch %s, hooks %s\n", s->torch_version,
          memsave_is_active() ? "active" : "not registered (MEMSAVE=0)");
  fprintf(f, "memsave:   %-10s %-12s %12s %12s %12s  %s\n", "family", "state", "substituted", "passthrough",
          "fallbacks", "verdict");
  for (int i = 0; i < MEMSAVE_FAMILY_COUNT; i++)
    fprintf(f, "memsave:   %-10s %-12s %12llu %12llu %12llu  %s\n", memsave_family_name(i), family_state(i),
            (unsigned long long)st->substituted[i], (unsigned long long)st->passthrough[i],
            (unsigned long long)st->fallbacks[i], family_verdict(i, st));
  fprintf(f, "memsave:   kept for backward: %s (stock would keep %s, not kept %s)\n",
          memsave__human(st->bytes_kept, a, sizeof a), memsave__human(st->bytes_stock, b, sizeof b),
          memsave__human(st->bytes_stock - st->bytes_kept, c, sizeof c));
  fprintf(f, "memsave:   CPU tensor bytes: peak %s, at exit %s\n", memsave__human(st->cpu_peak_total_bytes, a, sizeof a),
          memsave__human(st->cpu_current_bytes, b, sizeof b));
  if (s->cuda_state == MEMSAVE_CUDA_PRESENT) {
    for (int d = 0; d < s->cuda_devices; d++)
      fprintf(f, "memsave:   CUDA device %d: peak allocated %s (caching allocator)\n", d,
              memsave__human((uint64_t)s->cuda_peak_bytes[d], a, sizeof a));
  } else {
    fprintf(f, "memsave:   CUDA: %s\n", s->cuda_state == MEMSAVE_CUDA_ABSENT   ? "absent (CPU-only LibTorch)"
                                        : s->cuda_state == MEMSAVE_CUDA_UNUSED ? "not used by this process"
                                        : s->cuda_reason                       ? s->cuda_reason
                                                                               : "statistics unavailable");
  }
  for (int i = 0; i < memsave__nreasons; i++)
    fprintf(f, "memsave:   fallback %s: %s (%llu)\n", memsave_family_name(memsave__reasons[i].family),
            memsave__reasons[i].text, (unsigned long long)memsave__reasons[i].count);
  if (s->trace_table) write_text_trace(f, s->trace_table);
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  fprintf(f, "memsave:   process: peak RSS %s, user %.2f s, system %.2f s\n",
          memsave__human((uint64_t)ru.ru_maxrss * 1024u, a, sizeof a), ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
          ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
}

void memsave__report_write(void) {
  /* A process that never loaded LibTorch writes nothing: children of the host inherit
   * MEMSAVE_REPORT and must not overwrite the host's report. */
  if (written || !memsave__opts.report[0] || memsave__torch_state() == 0) return;
  written = 1;
  struct memsave_trace *trace = memsave__shared.trace_table;
  if (trace && trace->finish) trace->finish();
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
 * after them: the counters live in the shim and stay readable. Python hosts reach it too:
 * the interpreter finalises and then calls exit(), also for sys.exit(). A host that leaves
 * through _exit (os._exit, a killed process) writes no report. */
void memsave__report_install(void) {
  if (memsave__opts.report[0]) atexit(memsave__report_write);
}

/* MEMSAVE_TIMELINE: the hooks' samples as CSV, one line per sample. Installed from the
 * constructor like the report; a process that never loaded LibTorch writes nothing. */
void memsave__timeline_write(void) {
  static int done;
  struct memsave_timeline *t = memsave__shared.timeline_table;
  if (done || !t) return;
  done = 1;
  char path[4200];
  if (!expand_path(memsave__opts.timeline, path, sizeof path)) {
    memsave__log(MEMSAVE_LOG_WARN, "warning: MEMSAVE_TIMELINE path is too long; no timeline written");
    return;
  }
  FILE *f = fopen(path, "w");
  if (!f) {
    memsave__log(MEMSAVE_LOG_WARN, "warning: cannot write the timeline to %s", path);
    return;
  }
  /* Threads may still allocate: they wait on the hooks' lock while the file is written
   * (stdio does not allocate tensors, so this cannot wait on itself). */
  while (__atomic_exchange_n(&t->lock, 1, __ATOMIC_ACQUIRE)) {
  }
  uint32_t n = t->nsamples;
  uint64_t stride = t->stride, events = t->events;
  fprintf(f, "# memsave timeline: libmemsave %s, pid %ld, %s, %u samples, %llu allocator events, 1 sample per %llu events\n",
          memsave_version(), (long)getpid(), memsave_is_active() ? "active" : "stock (MEMSAVE=0)", n,
          (unsigned long long)events, (unsigned long long)stride);
  fprintf(f, "# columns: monotonic ns, seconds since the first sample, CPU tensor bytes, most bytes since the previous sample\n");
  fprintf(f, "ns,t_s,bytes,max_bytes\n");
  uint64_t t0 = n ? t->samples[0].ns : 0;
  for (uint32_t i = 0; i < n; i++) {
    const struct memsave_sample *s = &t->samples[i];
    fprintf(f, "%llu,%.6f,%lld,%lld\n", (unsigned long long)s->ns, (double)(s->ns - t0) / 1e9, (long long)s->bytes,
            (long long)s->max_bytes);
  }
  __atomic_store_n(&t->lock, 0, __ATOMIC_RELEASE);
  fclose(f);
}
