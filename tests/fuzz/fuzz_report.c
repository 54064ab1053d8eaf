/* SPDX-License-Identifier: MIT */
/* fuzz_report.c: libFuzzer target for what `memsave ab` reads from a JSON report
 * (cli/report_read.c over cli/json.c) and for the shared printers over what it read (the
 * family table, the bytes line), as ab prints them. The input is the report's text. It is
 * read on a thread with a 256 KiB stack: `memsave ab` reads reports of up to 1 MiB, so a
 * reader whose stack grows with the input fails here on inputs the fuzzer can reach. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static FILE *sink;
static struct cli_details details;

static void read_one(const char *json) {
  struct cli_measure m;
  memset(&m, 0, sizeof m);
  void *sites = details.sites;
  memset(&details, 0, sizeof details);
  details.sites = sites;
  cli_read_report(json, &m, &details);
  cli_read_report(json, &m, NULL);
  /* The generic readers on paths the report does not have. */
  uint64_t v;
  char s[8];
  cli_json_u64(cli_json_at(cli_json_get(json, "a.b"), 3), &v);
  cli_json_str(cli_json_get(json, ""), s, sizeof s);
  for (int f = 0; f < MEMSAVE_FAMILY_COUNT; f++) details.states[f] = details.state[f];
  char line[512];
  memsave__family_rows(sink, "memsave: ", details.states, m.active, &details.st);
  fprintf(sink, "%s %s %s\n", memsave__kept_line(&details.st, line, sizeof line), m.torch_version, m.cuda);
  for (int i = 0; i < details.nreasons; i++) memsave__json_string(sink, details.reasons[i].text);
  for (int i = 0; i < details.nsites; i++) memsave__json_string(sink, details.sites[i].symbol);
}

/* One reader thread for the whole run (a thread per input costs more than the input):
 * inputs are handed over one at a time. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static const char *pending;

static void *reader(void *unused) {
  (void)unused;
  pthread_mutex_lock(&lock);
  for (;;) {
    while (!pending) pthread_cond_wait(&cond, &lock);
    read_one(pending);
    pending = NULL;
    pthread_cond_broadcast(&cond);
  }
  return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int started;
  if (!started) {
    sink = fopen("/dev/null", "w");
    details.sites = calloc(CLI_MAX_SITES, sizeof *details.sites);
    pthread_attr_t attr;
    pthread_t t;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 << 10);
    if (!sink || !details.sites || pthread_create(&t, &attr, reader, NULL) != 0) abort();
    pthread_attr_destroy(&attr);
    started = 1;
  }
  char *json = malloc(size + 1);
  if (!json) abort();
  memcpy(json, data, size);
  json[size] = '\0';
  pthread_mutex_lock(&lock);
  pending = json;
  pthread_cond_broadcast(&cond);
  while (pending) pthread_cond_wait(&cond, &lock);
  pthread_mutex_unlock(&lock);
  free(json);
  return 0;
}
