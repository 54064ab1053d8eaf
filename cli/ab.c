/* SPDX-License-Identifier: MIT */
/* ab.c: `memsave ab`: CMD as A (stock, MEMSAVE=0) and B (libmemsave, MEMSAVE=1), alternating,
 * each run measured the same way: peak tensor bytes from the report libmemsave writes at
 * exit (MEMSAVE_REPORT=<tmp>/<run>/r-%p.json; only processes that load LibTorch write one),
 * peak RSS from wait4's rusage, wall time around the child. Prints a table or one JSON
 * object. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"

struct run {
  char label[16]; /* "A1", "B2" */
  char dir[4200], out[4200], err[4200];
  struct cli_child child;
  struct cli_measure m;
};

static char *read_file(const char *path, size_t limit) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  char *buf = malloc(limit + 1);
  size_t n = buf ? fread(buf, 1, limit, f) : 0;
  fclose(f);
  if (buf) buf[n] = '\0';
  return buf;
}

/* Reads every report in the run's directory; details only when asked (run B1). */
static void read_reports(struct run *r, struct cli_details *d) {
  DIR *dir = opendir(r->dir);
  struct dirent *e;
  while (dir && (e = readdir(dir))) {
    if (strncmp(e->d_name, "r-", 2) != 0) continue;
    char path[4600];
    snprintf(path, sizeof path, "%s/%s", r->dir, e->d_name);
    char *json = read_file(path, 1 << 20);
    if (!json) continue;
    cli_read_report(json, &r->m, d);
    free(json);
  }
  if (dir) closedir(dir);
}

/* The last lines of a failed run's standard error. */
static void print_tail(const char *path, int lines) {
  FILE *f = fopen(path, "rb");
  if (!f) return;
  fseek(f, 0, SEEK_END);
  long size = ftell(f), from = size > 16384 ? size - 16384 : 0;
  fseek(f, from, SEEK_SET);
  char *buf = calloc(1, (size_t)(size - from) + 1);
  size_t n = buf ? fread(buf, 1, (size_t)(size - from), f) : 0;
  fclose(f);
  if (!buf) return;
  while (n && buf[n - 1] == '\n') buf[--n] = '\0';
  size_t start = n;
  for (int seen = 0; start > 0; start--)
    if (buf[start - 1] == '\n' && ++seen == lines) break;
  if (n == 0) fprintf(stderr, "memsave ab: (its standard error was empty)\n");
  else fprintf(stderr, "memsave ab: last lines of its standard error:\n");
  for (char *line = buf + start, *next; n && line; line = next) {
    next = strchr(line, '\n');
    if (next) *next++ = '\0';
    fprintf(stderr, "  | %s\n", line);
  }
  free(buf);
}

/* Our own warnings from the first runs' standard error, each once. */
static void relay_warnings(const char *path) {
  static char seen[16][256];
  static int nseen;
  FILE *f = fopen(path, "r");
  char line[256];
  while (f && fgets(line, sizeof line, f)) {
    if (strncmp(line, "memsave: warning", 16) != 0) continue;
    int dup = 0;
    for (int i = 0; i < nseen; i++) dup |= strcmp(seen[i], line) == 0;
    if (dup || nseen == 16) continue;
    snprintf(seen[nseen++], sizeof seen[0], "%s", line);
    fputs(line, stderr);
  }
  if (f) fclose(f);
}

/* 0 when identical; else 1 and the first differing line, 1-based, in *line. */
static int compare_outputs(const char *a, const char *b, long *line, char *la, char *lb, size_t cap) {
  FILE *fa = fopen(a, "r"), *fb = fopen(b, "r");
  int differ = 0;
  *line = 0;
  char *x = NULL, *y = NULL;
  size_t nx = 0, ny = 0;
  while (fa && fb && !differ) {
    ssize_t rx = getline(&x, &nx, fa), ry = getline(&y, &ny, fb);
    if (rx < 0 && ry < 0) break;
    ++*line;
    if (rx != ry || memcmp(x, y, (size_t)rx) != 0) {
      differ = 1;
      snprintf(la, cap, "%.*s", rx < 0 ? 0 : (int)strcspn(x, "\n"), rx < 0 ? "" : x);
      snprintf(lb, cap, "%.*s", ry < 0 ? 0 : (int)strcspn(y, "\n"), ry < 0 ? "" : y);
      if (rx < 0) snprintf(la, cap, "(end of output)");
      if (ry < 0) snprintf(lb, cap, "(end of output)");
    }
  }
  free(x);
  free(y);
  if (fa) fclose(fa);
  if (fb) fclose(fb);
  return differ;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

enum { M_CPU, M_CUDA, M_RSS, M_WALL, M_COUNT };

/* Median of one quantity over the A runs (side 0) or the B runs (side 1). */
static double median_of(const struct run *runs, int n, int side, int q) {
  double v[1000];
  int k = 0;
  for (int i = side; i < 2 * n; i += 2) {
    const struct run *r = &runs[i];
    v[k++] = q == M_CPU ? (double)r->m.cpu_peak : q == M_CUDA ? (double)r->m.cuda_peak
             : q == M_RSS ? (double)r->child.rss_peak_bytes : r->child.wall_s;
  }
  return median(v, k);
}

static void print_json(const struct cli_options *o, const struct run *runs, const struct cli_details *d, const char *output) {
  /* cpu_peak_total_bytes: the whole run's peak, as the report's field of that name. */
  static const char *const names[M_COUNT] = {"cpu_peak_total_bytes", "cuda_peak_bytes", "rss_peak_bytes", "wall_s"};
  printf("{\"memsave_version\":\"%s\",\"command\":[", memsave_version());
  for (int i = 0; o->cmd[i]; i++) {
    if (i) putchar(',');
    memsave__json_string(stdout, o->cmd[i]);
  }
  printf("],\"runs\":%d,\"torch_version\":", o->runs);
  memsave__json_string(stdout, runs[1].m.torch_version);
  printf(",\"cuda\":");
  memsave__json_string(stdout, runs[1].m.cuda);
  for (int side = 0; side < 2; side++) {
    printf(",\"%c\":{\"runs\":[", side ? 'b' : 'a');
    for (int i = side; i < 2 * o->runs; i += 2) {
      const struct run *r = &runs[i];
      printf("%s{\"label\":\"%s\",\"reports\":%d,\"cpu_peak_total_bytes\":%llu,\"cuda_peak_bytes\":%llu,\"rss_peak_bytes\":%llu,"
             "\"wall_s\":%.3f}", i > 1 ? "," : "", r->label, r->m.reports, (unsigned long long)r->m.cpu_peak,
             (unsigned long long)r->m.cuda_peak, (unsigned long long)r->child.rss_peak_bytes, r->child.wall_s);
    }
    printf("],\"median\":{");
    for (int q = 0; q < M_COUNT; q++)
      printf(q == M_WALL ? "%s\"%s\":%.3f" : "%s\"%s\":%.0f", q ? "," : "", names[q], median_of(runs, o->runs, side, q));
    printf("}}");
  }
  printf(",\"ratio\":{");
  for (int q = 0; q < M_COUNT; q++) {
    double a = median_of(runs, o->runs, 0, q), b = median_of(runs, o->runs, 1, q);
    if (a > 0) printf("%s\"%s\":%.4f", q ? "," : "", names[q], b / a);
    else printf("%s\"%s\":null", q ? "," : "", names[q]);
  }
  printf("},");
  memsave__json_counts(stdout, d->states, &d->st);
  printf(",\"fallback_reasons\":[");
  for (int i = 0; i < d->nreasons; i++) {
    printf("%s{\"family\":\"%s\",\"reason\":", i ? "," : "", d->reasons[i].family);
    memsave__json_string(stdout, d->reasons[i].text);
    printf(",\"count\":%llu}", (unsigned long long)d->reasons[i].count);
  }
  printf("]");
  if (o->trace) {
    printf(",\"trace\":{\"attribution\":\"%s\",\"nodes\":%llu,\"ns\":%llu,\"sites\":[",
           d->operator_names ? "operator" : "call_site", (unsigned long long)d->trace_nodes,
           (unsigned long long)d->trace_ns);
    for (int i = 0; i < d->nsites; i++) {
      printf("%s{\"symbol\":", i ? "," : "");
      memsave__json_string(stdout, d->sites[i].symbol);
      printf(",\"module\":");
      memsave__json_string(stdout, d->sites[i].module);
      printf(",\"module_offset\":%llu,\"bytes\":%llu,\"nodes\":%llu}", (unsigned long long)d->sites[i].offset,
             (unsigned long long)d->sites[i].bytes, (unsigned long long)d->sites[i].nodes);
    }
    printf("]}");
  }
  printf(",\"output\":\"%s\"}\n", o->check_output ? output : "not_checked");
}

static void print_row(const char *name, double a, double b, int bytes) {
  char x[32], y[32];
  if (bytes) {
    memsave__human((uint64_t)a, x, sizeof x);
    memsave__human((uint64_t)b, y, sizeof y);
  } else {
    snprintf(x, sizeof x, "%.2f s", a);
    snprintf(y, sizeof y, "%.2f s", b);
  }
  if (a > 0) printf("%-24s %14s %16s %8.3f\n", name, x, y, b / a);
  else printf("%-24s %14s %16s %8s\n", name, x, y, "-");
}

static void print_table(const struct cli_options *o, const struct run *runs, const struct cli_details *d, const char *output) {
  char a[32], line[512];
  int n = o->runs;
  printf("memsave ab: %s, LibTorch %s, %d pair%s of runs\n", o->cmd[0], runs[1].m.torch_version, n, n > 1 ? "s" : "");
  printf("A: stock (MEMSAVE=0, measured the same way), B: libmemsave (MEMSAVE=1)\n\n");
  printf("%-24s %14s %16s %8s\n", n > 1 ? "(medians)" : "", "A (stock)", "B (libmemsave)", "B/A");
  print_row("peak CPU tensor bytes", median_of(runs, n, 0, M_CPU), median_of(runs, n, 1, M_CPU), 1);
  if (strcmp(runs[1].m.cuda, "present") == 0)
    print_row("peak CUDA tensor bytes", median_of(runs, n, 0, M_CUDA), median_of(runs, n, 1, M_CUDA), 1);
  else
    printf("%-24s %s\n", "peak CUDA tensor bytes", strcmp(runs[1].m.cuda, "absent") == 0 ? "absent (CPU-only LibTorch)"
                                                   : strcmp(runs[1].m.cuda, "unused") == 0 ? "CUDA not used"
                                                                                           : "unavailable (see the report)");
  print_row("peak RSS", median_of(runs, n, 0, M_RSS), median_of(runs, n, 1, M_RSS), 1);
  print_row("wall time", median_of(runs, n, 0, M_WALL), median_of(runs, n, 1, M_WALL), 0);
  printf("\nrun B1:\n");
  memsave__family_rows(stdout, "", d->states, runs[1].m.active, &d->st);
  printf("\nkept for backward (run B1): %s\n", memsave__kept_line(&d->st, line, sizeof line));
  for (int i = 0; i < d->nreasons; i++)
    printf("fallback %s: %s (%llu)\n", d->reasons[i].family, d->reasons[i].text, (unsigned long long)d->reasons[i].count);
  if (o->trace) {
    printf("\n%s of run B1 by bytes stock would have kept and libmemsave did not%s\n",
           d->operator_names ? "operators" : "call sites",
           d->operator_names ? " (Python host: attributed to the operator, not to a Python line)" : "");
    printf("(%llu nodes traced, %.1f us of CPU each)\n", (unsigned long long)d->trace_nodes,
           d->trace_nodes ? (double)d->trace_ns / (double)d->trace_nodes / 1e3 : 0.0);
    for (int i = 0; i < d->nsites; i++)
      printf("%4d %12s %8llu  %s%s%s\n", i + 1, memsave__human(d->sites[i].bytes, a, sizeof a),
             (unsigned long long)d->sites[i].nodes, d->sites[i].symbol, d->sites[i].module[0] ? "  in " : "",
             d->sites[i].module);
  }
  printf("output of A and B: %s\n", output);
}

static void remove_run_files(const struct run *r) {
  DIR *dir = opendir(r->dir);
  struct dirent *e;
  char path[4600];
  while (dir && (e = readdir(dir))) {
    if (e->d_name[0] == '.') continue;
    snprintf(path, sizeof path, "%s/%s", r->dir, e->d_name);
    unlink(path);
  }
  if (dir) closedir(dir);
  rmdir(r->dir);
  unlink(r->out);
  unlink(r->err);
}

/* Runs A1 B1 A2 B2 ...; returns 0, or the status to exit with after a failed run. */
static int run_all(struct cli_options *o, const char *tmp, struct run *runs, struct cli_details *d) {
  for (int i = 0; i < 2 * o->runs; i++) {
    struct run *r = &runs[i];
    const int b = i % 2;
    snprintf(r->label, sizeof r->label, "%c%d", b ? 'B' : 'A', i / 2 + 1);
    snprintf(r->dir, sizeof r->dir, "%s/%s", tmp, r->label);
    snprintf(r->out, sizeof r->out, "%s/%s.out", tmp, r->label);
    snprintf(r->err, sizeof r->err, "%s/%s.err", tmp, r->label);
    char report[4300];
    snprintf(report, sizeof report, "%s/r-%%p.json", r->dir);
    mkdir(r->dir, 0700);
    r->child = (struct cli_child){.memsave = b ? "1" : "0", .report = report, .out_path = r->out, .err_path = r->err};
    if (isatty(STDERR_FILENO)) fprintf(stderr, "memsave ab: run %s (%s)...\n", r->label, b ? "libmemsave" : "stock");
    if (cli_spawn(o, &r->child) < 0) return CLI_EXIT_INTERNAL;
    read_reports(r, i == 1 ? d : NULL);
    if (i < 2) relay_warnings(r->err);
    if (r->child.status != 0) {
      char how[128];
      cli_describe_status(r->child.status, how, sizeof how);
      cli_error(o, "run %s (%s) failed: %s %s", r->label, b ? "libmemsave, MEMSAVE=1" : "stock, MEMSAVE=0",
                o->cmd[0], how);
      if (b) cli_error(o, "the stock run before it, A%d, succeeded: the failure comes with libmemsave", i / 2 + 1);
      print_tail(r->err, 20);
      int code = cli_exit_code(r->child.status);
      return code ? code : CLI_EXIT_INTERNAL;
    }
    if (i == 0 && r->m.reports == 0) {
      cli_error(o, "%s never loaded LibTorch (run A1 wrote no report), so libmemsave had nothing to do; nothing to "
                   "compare", o->cmd[0]);
      return CLI_EXIT_DIFFERENT;
    }
    if (r->m.reports && !r->m.loaded) {
      cli_error(o, "libmemsave refused the LibTorch in %s (see its warning above); nothing to compare", o->cmd[0]);
      return CLI_EXIT_DIFFERENT;
    }
  }
  return 0;
}

int cli_ab(struct cli_options *o) {
  const char *base = getenv("TMPDIR");
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s/memsave-ab-XXXXXX", base && *base ? base : "/tmp");
  if (!mkdtemp(tmp)) {
    cli_error(o, "cannot create a temporary directory %s: %s", tmp, strerror(errno));
    return CLI_EXIT_INTERNAL;
  }
  struct run *runs = calloc((size_t)(2 * o->runs), sizeof *runs);
  struct cli_details *d = calloc(1, sizeof *d);
  if (d) d->sites = calloc(CLI_MAX_SITES, sizeof *d->sites);
  for (int f = 0; d && f < MEMSAVE_FAMILY_COUNT; f++) d->states[f] = d->state[f];
  if (!runs || !d || !d->sites) {
    cli_error(o, "out of memory");
    return CLI_EXIT_INTERNAL;
  }
  int rc = run_all(o, tmp, runs, d);
  const char *output = "not checked (use --check-output)";
  if (rc == 0 && o->check_output) {
    output = "identical";
    for (int i = 0; i < o->runs; i++) {
      long line;
      char la[200], lb[200];
      if (!compare_outputs(runs[2 * i].out, runs[2 * i + 1].out, &line, la, lb, sizeof la)) continue;
      output = "different";
      cli_error(o, "the standard outputs of A%d and B%d differ, first at line %ld:", i + 1, i + 1, line);
      fprintf(stderr, "  A%d: %s\n  B%d: %s\n", i + 1, la, i + 1, lb);
      if (i > 0 && compare_outputs(runs[0].out, runs[2 * i].out, &line, la, lb, sizeof la))
        cli_error(o, "the stock runs A1 and A%d differ too: CMD's output is not deterministic", i + 1);
      rc = CLI_EXIT_DIFFERENT;
      break;
    }
  }
  if (rc == 0 || strcmp(output, "different") == 0) {
    if (o->json) print_json(o, runs, d, output);
    else print_table(o, runs, d, output);
  }
  for (int i = 0; i < 2 * o->runs; i++)
    if (runs[i].label[0]) remove_run_files(&runs[i]);
  rmdir(tmp);
  free(d->sites);
  free(d);
  free(runs);
  return rc;
}
