/* SPDX-License-Identifier: MIT */
/* fuzz_args.c: libFuzzer target for the memsave command's command line (cli/args.c,
 * cli_parse, which runs nothing). The input is the arguments after "memsave", separated by
 * NUL bytes. A command line that parses must name a mode and a command, with every value in
 * its range. Messages go to stdout and stderr (closed by fuzz.sh). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define MAX_ARGS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *buf = malloc(size + 1);
  if (!buf) return 0;
  memcpy(buf, data, size);
  buf[size] = '\0';
  char *argv[MAX_ARGS + 2];
  int argc = 0;
  argv[argc++] = "memsave";
  for (char *p = buf; p < buf + size && argc < MAX_ARGS; p += strlen(p) + 1) argv[argc++] = p;
  argv[argc] = NULL;
  char *copy[MAX_ARGS + 2];
  memcpy(copy, argv, sizeof copy);
  struct cli_options o;
  memset(&o, 0, sizeof o);
  o.runs = 1;
  int rc = cli_parse(argc, argv, &o);
  if (memcmp(copy, argv, sizeof(char *) * (size_t)(argc + 1)) != 0) abort(); /* argv is given back as it came */
  if (rc == -1) {
    unsigned mask;
    if (strcmp(o.mode, "run") != 0 && strcmp(o.mode, "ab") != 0) abort();
    if (!o.cmd || o.cmd < argv + 2 || o.cmd >= argv + argc || !o.cmd[0]) abort();
    if (o.runs < 1 || o.runs > 1000 || o.trace < 0 || o.trace > 1000 || o.verbose < 0 || o.verbose > 2) abort();
    if (o.ops && !memsave__parse_ops(o.ops, &mask)) abort();
  } else if (rc != 0 && rc != CLI_EXIT_USAGE) {
    abort();
  }
  free(buf);
  return 0;
}
