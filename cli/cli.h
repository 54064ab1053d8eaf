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

/* report_read.c: the measures of a run and the details of run B1, read from the reports. */
#define CLI_MAX_REASONS 64
#define CLI_MAX_SITES 1000

/* What the reports of one run say; a run whose CMD starts several LibTorch processes has
 * several reports: counters are summed and peaks take the largest. */
struct cli_measure {
  int reports, loaded, active;
  uint64_t cpu_peak, cuda_peak;
  char cuda[16];       /* state of the first report: absent, unused, present, unavailable */
  char torch_version[32];
};

/* The details shown for run B1: families, bytes, reasons, call sites. The counters and bytes
 * are those of struct memsave_stats, summed over the run's reports. */
struct cli_details {
  char state[MEMSAVE_FAMILY_COUNT][16];
  const char *states[MEMSAVE_FAMILY_COUNT]; /* state[f], for the shared printers */
  struct memsave_stats st;
  int nreasons;
  struct { char family[16], text[160]; uint64_t count; } reasons[CLI_MAX_REASONS];
  int nsites, operator_names;
  uint64_t trace_nodes, trace_ns;
  struct { char symbol[160], module[96]; uint64_t offset, bytes, nodes; } *sites;
};

/* Adds what the report `json` says to m and, when d is not NULL, to d (d->sites may be NULL:
 * no call sites). */
void cli_read_report(const char *json, struct cli_measure *m, struct cli_details *d);

/* ab.c */
int cli_ab(struct cli_options *o);

/* args.c: reads the command line into o (o->runs = 1 beforehand) and runs nothing. Returns
 * -1 when o->mode is to be run, or memsave's exit status: 0 after --help or --version,
 * CLI_EXIT_USAGE for bad options (the reason printed). May be called again. */
int cli_parse(int argc, char **argv, struct cli_options *o);
/* args.c: "memsave ab: " or "memsave run: " prefixed messages on stderr. */
void cli_error(const struct cli_options *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif /* MEMSAVE_CLI_H */
