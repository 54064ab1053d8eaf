/* SPDX-License-Identifier: MIT */
/* memsave.c: the memsave command. `memsave run` runs a program with libmemsave preloaded;
 * `memsave ab` runs it as stock (A) and with libmemsave (B) and compares (ab.c). Like
 * heaptrack's wrapper, it only turns flags into MEMSAVE_* variables, finds the library
 * relative to its own location, says where the report went and passes the status through. */
#define _GNU_SOURCE
#include <glob.h>
#include <limits.h>
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
  int rc = cli_parse(argc, argv, &o);
  if (rc >= 0) return rc;
  rc = find_library(&o);
  if (rc != 0) return rc;
  return strcmp(o.mode, "run") == 0 ? run(&o) : cli_ab(&o);
}
