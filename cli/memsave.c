/* SPDX-License-Identifier: MIT */
/* memsave.c: the memsave command. `memsave run` runs a program with libmemsave preloaded;
 * `memsave ab` runs it as stock (A) and with libmemsave (B) and compares (ab.c). Like
 * heaptrack's wrapper, it only turns flags into MEMSAVE_* variables, finds the library
 * relative to its own location, says where the report went and passes the status through. */
#define _GNU_SOURCE
#include <getopt.h>
#include <glob.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#ifndef MEMSAVE_CLI_LIBDIR
#define MEMSAVE_CLI_LIBDIR "../lib" /* the installed library, relative to the installed command */
#endif

static void usage(FILE *f) {
  char dflt[128];
  fprintf(f,
          "Usage: memsave run [OPTIONS] [--] CMD [ARGS...]\n"
          "       memsave ab [OPTIONS] [--] CMD [ARGS...]\n"
          "       memsave --help | --version\n"
          "\n"
          "Run an unmodified LibTorch or PyTorch program with libmemsave preloaded.\n"
          "\n"
          "memsave run: run CMD once with libmemsave; exit with CMD's status.\n"
          "  --ops LIST        operator families to substitute (MEMSAVE_OPS), default\n"
          "                    %s; %s\n"
          "  --report DEST     report at exit (MEMSAVE_REPORT): 'stderr' or a path; %%p in the\n"
          "                    path is the pid, a path ending in .json gets JSON\n"
          "  --trace N         list the N call sites whose tensors libmemsave did not keep\n"
          "                    (MEMSAVE_TRACE; shown in the report)\n"
          "  -v, --verbose     libmemsave's options and activation on stderr; twice: fallbacks too\n"
          "\n"
          "memsave ab: run CMD as A (stock, MEMSAVE=0, still measured) and B (libmemsave,\n"
          "MEMSAVE=1), alternating A B A B, and compare peak tensor bytes, peak RSS and wall time.\n"
          "  -n, --runs N      pairs of runs (default 1); the table shows medians\n"
          "  --check-output    fail if the standard outputs of A and B differ in any byte\n"
          "  --json            print the comparison as one JSON object\n"
          "  --ops LIST, --trace N, -v   as for run (--trace lists the call sites of run B1)\n"
          "CMD's standard output is captured (compared with --check-output); its standard error\n"
          "is shown, last lines only, when a run fails.\n"
          "\n"
          "Exit status:\n"
          "  run: CMD's status (128+N when killed by signal N; 126 or 127 when it cannot be run)\n"
          "  ab:  0 when every run succeeded and, with --check-output, the outputs are identical;\n"
          "       1 when they differ or CMD never loaded LibTorch; a failed run's status otherwise\n"
          "  2: bad options; 125: memsave itself failed (library not found, no temporary directory)\n"
          "\n"
          "The library is found next to this program (build tree) or in " MEMSAVE_CLI_LIBDIR
          " relative to it\n(installed tree). Other MEMSAVE_* variables pass through; see docs/options.md.\n"
          "\n"
          "Operator families:\n",
          memsave__ops_string(MEMSAVE_FAMILY_DEFAULT_MASK, dflt, sizeof dflt), "all, none, -name, or the families below");
#define XX(id, name, on, doc) fprintf(f, "  %-10s %s%s\n", #name, doc, on ? "" : " [off by default]");
  MEMSAVE_FAMILY_MAP(XX)
#undef XX
}

void cli_error(const struct cli_options *o, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "memsave%s%s: ", o && o->mode ? " " : "", o && o->mode ? o->mode : "");
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

static int usage_error(const struct cli_options *o, const char *fmt, const char *arg) {
  char msg[512];
  snprintf(msg, sizeof msg, fmt, arg);
  cli_error(o, "%s", msg);
  fprintf(stderr, "Try 'memsave --help' for more information.\n");
  return CLI_EXIT_USAGE;
}

/* Parses argv[2...] of `memsave MODE`; returns 0 or an exit status. */
static int parse_options(int argc, char **argv, struct cli_options *o) {
  enum { OPT_OPS = 256, OPT_REPORT, OPT_TRACE, OPT_CHECK, OPT_JSON };
  static const struct option longopts[] = {
      {"ops", required_argument, NULL, OPT_OPS},       {"report", required_argument, NULL, OPT_REPORT},
      {"trace", required_argument, NULL, OPT_TRACE},   {"verbose", no_argument, NULL, 'v'},
      {"runs", required_argument, NULL, 'n'},          {"check-output", no_argument, NULL, OPT_CHECK},
      {"json", no_argument, NULL, OPT_JSON},           {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  const int ab = strcmp(o->mode, "ab") == 0;
  char prog[16];
  snprintf(prog, sizeof prog, "memsave %s", o->mode);
  char *saved = argv[1];
  argv[1] = prog; /* getopt's own messages then read "memsave ab: unrecognized option ..." */
  optind = 1;
  int c;
  unsigned mask;
  while ((c = getopt_long(argc - 1, argv + 1, "+n:vh", longopts, NULL)) != -1) {
    switch (c) {
      case OPT_OPS:
        if (!memsave__parse_ops(optarg, &mask))
          return usage_error(o, "invalid --ops list '%s' (accepted: " MEMSAVE_OPS_ACCEPTED ")", optarg);
        o->ops = optarg;
        break;
      case OPT_REPORT:
        if (ab) return usage_error(o, "%s is an option of memsave run (ab reads the reports itself)", "--report");
        if (!*optarg) return usage_error(o, "%s needs 'stderr' or a path", "--report");
        o->report = optarg;
        break;
      case OPT_TRACE:
        if (!memsave__parse_int(optarg, 0, 1000, &o->trace))
          return usage_error(o, "invalid --trace count '%s' (expected 0 to 1000)", optarg);
        break;
      case 'v':
        if (o->verbose < 2) o->verbose++;
        break;
      case 'n':
        if (!ab) return usage_error(o, "%s is an option of memsave ab", "-n/--runs");
        if (!memsave__parse_int(optarg, 1, 1000, &o->runs))
          return usage_error(o, "invalid number of runs '%s' (expected 1 to 1000)", optarg);
        break;
      case OPT_CHECK:
      case OPT_JSON:
        if (!ab) return usage_error(o, "%s is an option of memsave ab", c == OPT_CHECK ? "--check-output" : "--json");
        *(c == OPT_CHECK ? &o->check_output : &o->json) = 1;
        break;
      case 'h':
        usage(stdout);
        exit(0);
      default: /* getopt has printed the reason */
        fprintf(stderr, "Try 'memsave --help' for more information.\n");
        return CLI_EXIT_USAGE;
    }
  }
  argv[1] = saved;
  if (optind + 1 >= argc) return usage_error(o, "missing command (usage: memsave %s [OPTIONS] [--] CMD [ARGS...])", o->mode);
  o->cmd = argv + 1 + optind;
  return 0;
}

/* libmemsave.so next to this program (build tree), or in MEMSAVE_CLI_LIBDIR relative to it
 * (installed tree). The path is made absolute, so that CMD may change directory. */
static int find_library(struct cli_options *o) {
  char self[PATH_MAX], candidate[PATH_MAX + 64];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) {
    cli_error(o, "cannot find this program's own path (/proc/self/exe)");
    return CLI_EXIT_INTERNAL;
  }
  self[n] = '\0';
  char *slash = strrchr(self, '/');
  if (slash) *slash = '\0';
  const char *dirs[] = {".", MEMSAVE_CLI_LIBDIR};
  for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
    snprintf(candidate, sizeof candidate, "%s/%s/libmemsave.so", self, dirs[i]);
    if (realpath(candidate, o->library) && access(o->library, R_OK) == 0) return 0;
  }
  cli_error(o, "cannot find libmemsave.so in %s or %s/%s", self, self, MEMSAVE_CLI_LIBDIR);
  return CLI_EXIT_INTERNAL;
}

/* After `memsave run --report PATH`: where the report went, or why there is none. */
static void say_where_report_went(const struct cli_options *o, const struct timespec *start) {
  char pattern[4200];
  size_t n = 0;
  for (const char *p = o->report; *p && n + 2 < sizeof pattern; p++) {
    if (p[0] == '%' && p[1] == 'p') {
      pattern[n++] = '*';
      p++;
    } else {
      pattern[n++] = *p;
    }
  }
  pattern[n] = '\0';
  glob_t g;
  int found = 0;
  if (glob(pattern, 0, NULL, &g) == 0) {
    for (size_t i = 0; i < g.gl_pathc; i++) {
      struct stat st;
      if (stat(g.gl_pathv[i], &st) != 0 || st.st_mtim.tv_sec < start->tv_sec) continue;
      cli_error(o, "report written to %s", g.gl_pathv[i]);
      found = 1;
    }
    globfree(&g);
  }
  if (!found) cli_error(o, "no report written: %s never loaded LibTorch, so libmemsave had nothing to do", o->cmd[0]);
}

static int run(struct cli_options *o) {
  struct cli_child child = {.report = o->report};
  struct timespec start;
  clock_gettime(CLOCK_REALTIME, &start);
  if (cli_spawn(o, &child) < 0) return CLI_EXIT_INTERNAL;
  char how[128];
  cli_describe_status(child.status, how, sizeof how);
  if (!WIFEXITED(child.status)) cli_error(o, "%s %s", o->cmd[0], how);
  if (o->report && strcmp(o->report, "stderr") != 0) say_where_report_went(o, &start);
  return cli_exit_code(child.status);
}

int main(int argc, char **argv) {
  struct cli_options o = {.runs = 1};
  if (argc < 2) {
    usage(stderr);
    return CLI_EXIT_USAGE;
  }
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
    usage(stdout);
    return 0;
  }
  if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
    printf("memsave %s\n", memsave_version());
    return 0;
  }
  if (strcmp(argv[1], "run") != 0 && strcmp(argv[1], "ab") != 0) {
    return usage_error(NULL, argv[1][0] == '-' ? "unrecognized option '%s' before the mode (run or ab)"
                                               : "unknown mode '%s' (expected run or ab)", argv[1]);
  }
  o.mode = argv[1];
  int rc = parse_options(argc, argv, &o);
  if (rc == 0) rc = find_library(&o);
  if (rc != 0) return rc;
  return strcmp(o.mode, "run") == 0 ? run(&o) : cli_ab(&o);
}
