/* SPDX-License-Identifier: MIT */
/* report.c: the report written once at process exit (MEMSAVE_REPORT=stderr|PATH), as text
 * or, for a PATH ending in .json, as one JSON object. Shaped like mimalloc's statistics: a
 * header row, fixed-width columns, one human-unit formatter, a verdict per family and a
 * closing process line. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "internal.h"


int memsave__expand_path(const char *pattern, char *out, size_t cap) {
  size_t n = 0;
  if (cap == 0) return 0;
  out[0] = '\0';
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

/* "on", "off" or "unavailable" for each family (memsave__family_verdict): off when not asked
 * in MEMSAVE_OPS; unavailable when the hooks were not loaded, lack it, or (active) did not
 * register it. With MEMSAVE=0 nothing is registered and an asked family stays "on": its
 * verdict says why stock ran. */
static void family_states(const char *states[MEMSAVE_FAMILY_COUNT], int torch_state) {
  const struct memsave_shared *s = &memsave__shared;
  const unsigned missing = s->families_unavailable | (memsave_is_active() ? ~s->families_registered : 0u);
  for (int f = 0; f < MEMSAVE_FAMILY_COUNT; f++) {
    unsigned bit = 1u << f;
    states[f] = !(s->opts.ops_mask & bit) ? "off" : torch_state != 1 || (missing & bit) ? "unavailable" : "on";
  }
}

static int by_bytes(const void *a, const void *b) {
  const struct memsave_site *x = *(const struct memsave_site *const *)a, *y = *(const struct memsave_site *const *)b;
  return x->bytes < y->bytes ? 1 : x->bytes > y->bytes ? -1 : strcmp(x->symbol, y->symbol);
}

/* The top opts.trace call sites by bytes, biggest first; returns how many. */
static int top_sites(const struct memsave_trace *t, const struct memsave_site **out) {
  int n = t->nsites < MEMSAVE_MAX_SITES ? t->nsites : MEMSAVE_MAX_SITES;
  for (int i = 0; i < n; i++) out[i] = &t->sites[i];
  qsort(out, (size_t)n, sizeof *out, by_bytes);
  return n < memsave__shared.opts.trace ? n : memsave__shared.opts.trace;
}

static const char *cuda_state_name(int state) {
  static const char *const names[] = {"absent", "unused", "present", "unavailable"};
  return state >= 0 && state <= 3 ? names[state] : "unknown";
}

static void write_json_trace(FILE *f, const struct memsave_trace *t) {
  const struct memsave_site *top[MEMSAVE_MAX_SITES];
  int n = top_sites(t, top);
  fprintf(f, ",\"trace\":{\"top\":%d,\"attribution\":\"%s\",\"nodes\":%llu,\"frames\":%llu,\"ns\":%llu,", memsave__shared.opts.trace,
          t->operator_names ? "operator" : "call_site", (unsigned long long)t->nodes, (unsigned long long)t->frames,
          (unsigned long long)t->ns);
  fprintf(f, "\"unattributed_bytes\":%llu,\"unattributed_nodes\":%llu,\"sites_total\":%d,\"sites\":[",
          (unsigned long long)t->unattributed_bytes, (unsigned long long)t->unattributed_nodes, t->nsites);
  for (int i = 0; i < n; i++) {
    fprintf(f, "%s{\"symbol\":", i ? "," : "");
    memsave__json_string(f, top[i]->symbol);
    fprintf(f, ",\"module\":");
    memsave__json_string(f, top[i]->module);
    fprintf(f, ",\"module_offset\":%llu,\"bytes\":%llu,\"nodes\":%llu}", (unsigned long long)top[i]->module_offset,
            (unsigned long long)top[i]->bytes, (unsigned long long)top[i]->nodes);
  }
  fprintf(f, "]}");
}

/* Stand-ins filled under MEMSAVE_POISON (Note [Poisoned stand-in] in hooks/core/standin.h). */
static uint64_t poisoned(const struct memsave_shared *s) {
  return s->poisoned ? __atomic_load_n(s->poisoned, __ATOMIC_RELAXED) : 0;
}

static void write_json(FILE *f, const struct memsave_stats *st, int torch_state) {
  const struct memsave_shared *s = &memsave__shared;
  const char *states[MEMSAVE_FAMILY_COUNT];
  family_states(states, torch_state);
  fprintf(f, "{\"memsave_version\":\"%s\",\"pid\":%ld,\"torch_loaded\":%s,\"torch_version\":\"%s\",",
          memsave_version(), (long)getpid(), torch_state == 1 ? "true" : "false", s->torch_version);
  fprintf(f, "\"active\":%s,\"enabled\":%s,", memsave_is_active() ? "true" : "false",
          memsave_enabled() ? "true" : "false");
  memsave__json_counts(f, states, st);
  /* The peaks by the names and meanings of struct memsave_stats: cpu_peak_bytes since the
   * last memsave_reset_peak, cpu_peak_total_bytes the whole run's. */
  fprintf(f, ",\"cpu_current_bytes\":%llu,\"cpu_peak_bytes\":%llu,\"cpu_peak_total_bytes\":%llu,",
          (unsigned long long)st->cpu_current_bytes, (unsigned long long)st->cpu_peak_bytes,
          (unsigned long long)st->cpu_peak_total_bytes);
  fprintf(f, "\"cuda\":{\"state\":\"%s\"", cuda_state_name(s->cuda_state));
  if (s->cuda_state == MEMSAVE_CUDA_UNAVAILABLE && s->cuda_reason) {
    fprintf(f, ",\"reason\":");
    memsave__json_string(f, s->cuda_reason);
  }
  fprintf(f, ",\"peak_allocated_bytes\":[");
  for (int d = 0; s->cuda_state == MEMSAVE_CUDA_PRESENT && d < s->cuda_devices; d++)
    fprintf(f, "%s%lld", d ? "," : "", (long long)s->cuda_peak_bytes[d]);
  fprintf(f, "]},\"fallback_reasons\":[");
  for (int i = 0; i < memsave__nreasons; i++) {
    const struct memsave_reason *r = &memsave__reasons[i];
    fprintf(f, "%s{\"family\":\"%s\",\"reason\":", i ? "," : "", memsave_family_name(r->family));
    memsave__json_string(f, r->text);
    fprintf(f, ",\"count\":%llu}", (unsigned long long)r->count);
  }
  fprintf(f, "],\"poison\":{\"pattern\":\"%s\",\"stand_ins\":%llu}", memsave__poison_name(s->opts.poison),
          (unsigned long long)poisoned(s));
  if (s->trace_table)
    write_json_trace(f, s->trace_table);
  else if (s->opts.trace > 0 && memsave_is_active()) /* hooks without libunwind (trace.cpp) */
    fprintf(f, ",\"trace\":{\"top\":%d,\"attribution\":\"unavailable\",\"nodes\":0,\"ns\":0,\"sites\":[]}",
            s->opts.trace);
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

static void write_text(FILE *f, const struct memsave_stats *st, int torch_state) {
  const struct memsave_shared *s = &memsave__shared;
  const char *states[MEMSAVE_FAMILY_COUNT];
  char a[32], b[32], line[512];
  fprintf(f, "memsave: report (libmemsave %s, pid %ld)\n", memsave_version(), (long)getpid());
  if (torch_state != 1) {
    fprintf(f, "memsave:   LibTorch was found but the hooks were refused (see the warning above)\n");
    return;
  }
  fprintf(f, "memsave:   LibTorch %s, hooks %s\n", s->torch_version,
          memsave_is_active() ? "active" : "not registered (MEMSAVE=0)");
  family_states(states, torch_state);
  memsave__family_rows(f, "memsave:   ", states, memsave_is_active(), st);
  fprintf(f, "memsave:   kept for backward: %s\n", memsave__kept_line(st, line, sizeof line));
  if (s->opts.poison && memsave_is_active())
    fprintf(f, "memsave:   poison: %llu stand-ins filled with %s (MEMSAVE_POISON, a check: gradients must not "
            "change; memory figures are not a run's)\n", (unsigned long long)poisoned(s),
            s->opts.poison == MEMSAVE_POISON_NAN ? "NaN" : "the largest finite value");
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
  if (s->trace_table)
    write_text_trace(f, s->trace_table);
  else if (s->opts.trace > 0 && memsave_is_active()) /* Note [Without libunwind] in hooks/core/trace.cpp */
    fprintf(f, "memsave:   trace: unavailable (the hooks were built without libunwind)\n");
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  fprintf(f, "memsave:   process: peak RSS %s, user %.2f s, system %.2f s\n",
          memsave__human((uint64_t)ru.ru_maxrss * 1024u, a, sizeof a), ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
          ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
}

/* Says once that an output is lost and why; returns -1. A path longer than the printer's
 * line is shown by its two ends, so that the error still fits (issue 15: a %p-expanded
 * path of 3000 bytes cut the error off the line). */
static int lost(const char *what, const char *path, int err) {
  const int keep = 240;
  size_t n = strlen(path);
  int cut = n > 2u * keep + 3;
  memsave__log(MEMSAVE_LOG_WARN, "warning: could not write the %s to %.*s%s%s; the %s is lost: %s", what,
               cut ? keep : (int)n, path, cut ? "..." : "", cut ? path + n - keep : "", what, strerror(err));
  return -1;
}

/* Opens the file for `spec` (%p = pid) into path; NULL after saying why. */
static FILE *open_output(const char *what, const char *spec, char *path, size_t cap) {
  if (!memsave__expand_path(spec, path, cap)) {
    lost(what, spec, ENAMETOOLONG);
    return NULL;
  }
  FILE *f = fopen(path, "w");
  if (!f) lost(what, path, errno);
  return f;
}

/* Closes f; a write that failed on the way (a full disk, /dev/full) or at the close loses
 * the output: said once, never fatal. */
static int close_output(const char *what, const char *path, FILE *f) {
  int failed = ferror(f), err = errno;
  if (fclose(f) != 0 && !failed) {
    failed = 1;
    err = errno;
  }
  return failed ? lost(what, path, err ? err : EIO) : 0;
}

int memsave__report_write_to(const char *spec, int torch_state) {
  struct memsave_trace *trace = memsave__shared.trace_table;
  if (trace && trace->finish) trace->finish();
  struct memsave_stats st;
  memsave_get_stats(&st, sizeof st);
  if (strcmp(spec, "stderr") == 0) {
    write_text(stderr, &st, torch_state);
    fflush(stderr);
    return 0;
  }
  char path[4200];
  FILE *f = open_output("report", spec, path, sizeof path);
  if (!f) return -1;
  errno = 0;
  size_t len = strlen(path);
  if (len > 5 && strcmp(path + len - 5, ".json") == 0) write_json(f, &st, torch_state);
  else write_text(f, &st, torch_state);
  return close_output("report", path, f);
}

/* Note [Reports of forked children]: a child made by fork() inherits the atexit handlers,
 * the counters and the options. It writes its own report or timeline only when the path has
 * %p (one file per process; its counts start from the parent's at the fork); otherwise only
 * the process that was started with the preload writes, and a child (a DataLoader worker, a
 * C++ host's fork()) that exits through exit() leaves the parent's file alone. "stderr"
 * counts as a path without %p. The owner is the pid at the constructor: exec starts over. */
static long owner_pid;

static int ours_to_write(const char *spec) {
  return (long)getpid() == owner_pid || strstr(spec, "%p") != NULL;
}

/* A process that never loaded LibTorch writes nothing: children of the host inherit
 * MEMSAVE_REPORT and must not overwrite the host's report. */
static void report_at_exit(void) {
  static int written;
  int state = memsave__torch_state();
  if (written || state == 0 || !ours_to_write(memsave__shared.opts.report)) return;
  written = 1;
  memsave__report_write_to(memsave__shared.opts.report, state);
}

static void timeline_at_exit(void) {
  static int written;
  if (written || !memsave__shared.timeline_table || !ours_to_write(memsave__shared.opts.timeline)) return;
  written = 1;
  memsave__timeline_write_to(memsave__shared.opts.timeline, memsave__shared.timeline_table);
}

/* Registered from the constructor, before LibTorch's own exit handlers exist, so they run
 * after them: the counters live in the shim and stay readable. Python hosts reach them too:
 * the interpreter finalises and then calls exit(), also for sys.exit(). A host that leaves
 * through _exit (os._exit, a killed process, Python's forked multiprocessing workers) writes
 * no report. The timeline is written by processes that loaded LibTorch (the hooks set its
 * table). */
void memsave__report_install(void) {
  owner_pid = (long)getpid();
  if (memsave__shared.opts.report[0]) atexit(report_at_exit);
  if (memsave__shared.opts.timeline[0]) atexit(timeline_at_exit);
}

/* MEMSAVE_TIMELINE: the hooks' samples as CSV, one line per sample. */
int memsave__timeline_write_to(const char *spec, struct memsave_timeline *t) {
  char path[4200];
  FILE *f = open_output("timeline", spec, path, sizeof path);
  if (!f) return -1;
  errno = 0;
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
  return close_output("timeline", path, f);
}
