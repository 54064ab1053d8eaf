/* SPDX-License-Identifier: MIT */
/* format.c: the one human-unit formatter for byte figures, shared by the report at exit and
 * the memsave command, so that both print the same numbers the same way. */
#include <stdio.h>

#include "internal.h"

const char *memsave__human(uint64_t bytes, char *buf, size_t cap) {
  static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = (double)bytes;
  int u = 0;
  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    u++;
  }
  if (u == 0) snprintf(buf, cap, "%llu B", (unsigned long long)bytes);
  else snprintf(buf, cap, "%.1f %s", v, units[u]);
  return buf;
}
