/* SPDX-License-Identifier: MIT */
/* start_main_host: Note [No next __libc_start_main] (shim/preload.c), tested (issue 11). The
 * program is linked with the shim's preload front (start_main_preload.c), so it starts through
 * our __libc_start_main, whose lookups go through fake_dlsym: it fails for RTLD_NEXT's
 * __libc_start_main, as a loader that cannot answer would, and with START_MAIN_NO_LIBC for
 * libc's own too. main prints its arguments and exits with the status given in argv[1]. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *fake_dlsym(void *handle, const char *name) {
  if (strcmp(name, "__libc_start_main") == 0 && (handle == RTLD_NEXT || getenv("START_MAIN_NO_LIBC"))) return NULL;
  return dlsym(handle, name); /* RTLD_NEXT is relative to this program, as for preload.c */
}

int main(int argc, char **argv) {
  printf("main ran with %d argument(s), last '%s'\n", argc - 1, argv[argc - 1]);
  return argc > 1 ? atoi(argv[1]) : 0;
}
