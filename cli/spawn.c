/* SPDX-License-Identifier: MIT */
/* spawn.c: running CMD once, with libmemsave preloaded and the options turned into MEMSAVE_*
 * variables, and collecting its status, wall time and peak RSS (wait4's rusage). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

static void set_env(const char *name, const char *value) {
  if (value) setenv(name, value, 1);
}

static void set_env_int(const char *name, int value) {
  char buf[16];
  snprintf(buf, sizeof buf, "%d", value);
  setenv(name, buf, 1);
}

/* Ours goes first and an existing LD_PRELOAD is kept after it, never overwritten (heaptrack's
 * wrapper does the same). */
static void prepend_preload(const char *library) {
  const char *old = getenv("LD_PRELOAD");
  if (!old || !*old) {
    setenv("LD_PRELOAD", library, 1);
    return;
  }
  size_t n = strlen(library) + strlen(old) + 2;
  char *value = malloc(n);
  if (!value) return;
  snprintf(value, n, "%s:%s", library, old);
  setenv("LD_PRELOAD", value, 1);
  free(value);
}

#if defined(__SANITIZE_ADDRESS__)
#include <dlfcn.h>
#include <limits.h>
void __asan_init(void);
/* A sanitized build (MEMSAVE_SANITIZE): libmemsave.so needs the ASan runtime, which must
 * come first in the initial library list of an uninstrumented CMD. It is the runtime this
 * program runs with, by its real path. */
static void prepend_sanitizer_runtime(void) {
  Dl_info info;
  char path[PATH_MAX];
  if (dladdr((void *)__asan_init, &info) && info.dli_fname && realpath(info.dli_fname, path)) prepend_preload(path);
}
#else
static void prepend_sanitizer_runtime(void) {}
#endif

static void redirect(const char *path, int fd) {
  if (!path) return;
  int f = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (f >= 0) {
    dup2(f, fd);
    close(f);
  }
}

/* In the child, between fork and exec: the CLI is single-threaded, so setenv is safe. */
static void child_main(const struct cli_options *o, const struct cli_child *c) {
  prepend_preload(o->library);
  prepend_sanitizer_runtime();
  set_env("MEMSAVE", c->memsave);
  set_env("MEMSAVE_REPORT", c->report);
  set_env("MEMSAVE_OPS", o->ops);
  if (o->trace) set_env_int("MEMSAVE_TRACE", o->trace);
  if (o->verbose) set_env_int("MEMSAVE_VERBOSE", o->verbose);
  redirect(c->out_path, STDOUT_FILENO);
  redirect(c->err_path, STDERR_FILENO);
  signal(SIGINT, SIG_DFL);
  signal(SIGQUIT, SIG_DFL);
  execvp(o->cmd[0], o->cmd);
  int e = errno;
  fprintf(stderr, "memsave %s: cannot run %s: %s\n", o->mode, o->cmd[0], strerror(e));
  _exit(e == ENOENT ? 127 : 126);
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int cli_spawn(const struct cli_options *o, struct cli_child *c) {
  /* Like system(3): while CMD runs, Ctrl-C and Ctrl-\ are CMD's to handle; we report after. */
  struct sigaction ignore = {.sa_handler = SIG_IGN}, old_int, old_quit;
  sigaction(SIGINT, &ignore, &old_int);
  sigaction(SIGQUIT, &ignore, &old_quit);
  fflush(NULL);
  double start = now_s();
  pid_t pid = fork();
  if (pid < 0) {
    cli_error(o, "cannot start %s: fork failed: %s", o->cmd[0], strerror(errno));
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGQUIT, &old_quit, NULL);
    return -1;
  }
  if (pid == 0) child_main(o, c);
  struct rusage ru;
  memset(&ru, 0, sizeof ru);
  while (wait4(pid, &c->status, 0, &ru) < 0 && errno == EINTR) {
  }
  c->wall_s = now_s() - start;
  c->rss_peak_bytes = (uint64_t)ru.ru_maxrss * 1024u; /* KiB on Linux */
  sigaction(SIGINT, &old_int, NULL);
  sigaction(SIGQUIT, &old_quit, NULL);
  return 0;
}

int cli_exit_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return CLI_EXIT_INTERNAL;
}

void cli_describe_status(int status, char *buf, size_t cap) {
  if (WIFEXITED(status)) snprintf(buf, cap, "exit status %d", WEXITSTATUS(status));
  else if (WIFSIGNALED(status))
    snprintf(buf, cap, "killed by signal %d (%s)%s", WTERMSIG(status), strsignal(WTERMSIG(status)),
             WCOREDUMP(status) ? ", core dumped" : "");
  else snprintf(buf, cap, "wait status 0x%x", status);
}
