/* SPDX-License-Identifier: MIT */
/* args.c: the command line of the memsave command, read into struct cli_options without
 * running anything (so a test or a fuzzer can call cli_parse alone): the usage text, the
 * mode and its options, refusals with one line each. */
#define _GNU_SOURCE
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
          "Run an unmodified LibTorch or PyTorch program with libmemsave preloaded, or compare\n"
          "it with stock.\n"
          "\n"
          "memsave run: run CMD once with libmemsave; exit with CMD's status.\n"
          "  --ops LIST        operator families to substitute (MEMSAVE_OPS), default\n"
          "                    %s; %s\n"
          "  --report stderr|PATH\n"
          "                    report at exit (MEMSAVE_REPORT); %%p in a path is the pid, a path\n"
          "                    ending in .json gets JSON\n"
          "  --trace N         list the N call sites whose tensors libmemsave did not keep\n"
          "                    (MEMSAVE_TRACE; shown in the report)\n"
          "  -v, --verbose     libmemsave's options and activation on stderr; twice: each new\n"
          "                    fallback reason too\n"
          "\n"
          "memsave ab: run CMD as A (stock, MEMSAVE=0, measured the same way) and B (libmemsave,\n"
          "MEMSAVE=1), alternating A B A B, and compare peak CPU tensor bytes (and CUDA where the\n"
          "host uses it), peak RSS and wall time.\n"
          "  -n, --runs RUNS   pairs of runs (default 1); the table shows medians\n"
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

/* Parses argv[2...] of `memsave MODE`; returns -1 to run the mode, or an exit status. */
static int parse_mode_options(int argc, char **argv, struct cli_options *o) {
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
  /* getopt sees argv[1...] with argv[1] replaced by prog (the caller puts it back), so that
   * its own messages read "memsave ab: unrecognized option ...". optind = 0 starts GNU
   * getopt over from scratch, also after a call that stopped inside "-vn": only then may
   * cli_parse be called again. */
  argv[1] = prog;
  optind = 0;
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
        return 0;
      default: /* getopt has printed the reason */
        fprintf(stderr, "Try 'memsave --help' for more information.\n");
        return CLI_EXIT_USAGE;
    }
  }
  if (optind + 1 >= argc) return usage_error(o, "missing command (usage: memsave %s [OPTIONS] [--] CMD [ARGS...])", o->mode);
  o->cmd = argv + 1 + optind;
  return -1;
}

int cli_parse(int argc, char **argv, struct cli_options *o) {
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
  o->mode = argv[1];
  char *mode = argv[1];
  int rc = parse_mode_options(argc, argv, o);
  argv[1] = mode; /* parse_mode_options lent argv[1] to getopt */
  return rc;
}

