/* SPDX-License-Identifier: MIT */
/* cli.h: the one header shared by the files of the memsave command. */
#ifndef MEMSAVE_CLI_H
#define MEMSAVE_CLI_H

#include <stddef.h>
#include <stdint.h>

#include "common.h" /* shim/common.h (memsave_common): the option grammar, family names, formatter */

/* Exit statuses of memsave itself (CMD's own status is passed through). */
enum {
  CLI_EXIT_DIFFERENT = 1, /* ab: outputs differ, or nothing was measured */
  CLI_EXIT_USAGE = 2,     /* bad options */
  CLI_EXIT_INTERNAL = 125 /* memsave could not do its job (library missing, no temp dir) */
};

/* Everything a mode needs: the options, turned into MEMSAVE_* variables for the child. */
struct cli_options {
  const char *mode;    /* "run" or "ab" */
  const char *ops;     /* --ops, or NULL */
  const char *report;  /* --report (run), or NULL */
  int trace;           /* --trace N, 0 = off */
  int verbose;         /* -v, -vv */
  int runs;            /* ab -n */
  int check_output;    /* ab --check-output */
  int json;            /* ab --json */
  char library[4096];  /* libmemsave.so, found next to the executable */
  char **cmd;          /* CMD ARGS..., NULL-terminated */
};

/* One child process: what it was given and what came back. */
struct cli_child {
  /* in */
  const char *memsave;     /* MEMSAVE value, or NULL to leave it */
  const char *report;      /* MEMSAVE_REPORT value, or NULL to leave it */
  const char *out_path;    /* stdout to this file, or NULL to inherit */
  const char *err_path;    /* stderr to this file, or NULL to inherit */
  /* out */
  int status;              /* wait status */
  double wall_s;
  uint64_t rss_peak_bytes; /* ru_maxrss from wait4 */
};

/* spawn.c: runs CMD with libmemsave preloaded and the options' variables set. Returns 0, or
 * -1 when CMD could not be started at all (fork failed; the reason is printed). */
int cli_spawn(const struct cli_options *o, struct cli_child *child);
/* CMD's status as a shell reports it: the exit status, or 128 + the signal. */
int cli_exit_code(int status);
/* "exit status 3" or "killed by signal 9 (Killed)". */
void cli_describe_status(int status, char *buf, size_t cap);

/* json.c: a reader for the reports libmemsave writes (one JSON object). */
const char *cli_json_get(const char *json, const char *path); /* "families.conv.state" */
const char *cli_json_at(const char *array, int index);         /* element of an array value */
int cli_json_u64(const char *value, uint64_t *out);
int cli_json_str(const char *value, char *out, size_t cap);

/* ab.c */
int cli_ab(struct cli_options *o);

/* memsave.c: "memsave ab: " or "memsave run: " prefixed messages on stderr. */
void cli_error(const struct cli_options *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif /* MEMSAVE_CLI_H */
