/* SPDX-License-Identifier: MIT */
/* format.c: what the report at exit and the memsave command print alike: the one human-unit
 * formatter for byte figures, the bytes-kept headline, the family table with its verdicts,
 * and the JSON of the counters, so that both show the same numbers the same way. */
#include <stdio.h>
#include <string.h>

#include "common.h"

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

const char *memsave__not_kept(uint64_t stock, uint64_t ours, char *buf, size_t cap) {
  char h[32];
  if (stock >= ours) snprintf(buf, cap, "not kept %s", memsave__human(stock - ours, h, sizeof h));
  else snprintf(buf, cap, "%s more", memsave__human(ours - stock, h, sizeof h));
  return buf;
}

const char *memsave__kept_line(const struct memsave_stats *st, char *buf, size_t cap) {
  char a[32], b[32], c[48], d[32], e[32], g[48], p[32], q[32], r[32], s[64] = "";
  /* What a user compares with the peak leads: the most kept at once (Note [Live activations]
   * in hooks/core/node.h). The sums over every node of the run follow, labelled as such;
   * the recomputed bytes are such a sum, so they go with them. */
  if (st->recomputed_bytes)
    snprintf(s, sizeof s, ", %s of it recomputed in backward", memsave__human(st->recomputed_bytes, r, sizeof r));
  int n = snprintf(buf, cap,
                   "activations at most %s at once (stock would keep at most %s, %s); summed over the run: "
                   "activations %s (stock %s, %s%s), parameters referenced %s",
                   memsave__human(st->activation_bytes_kept_peak, a, sizeof a),
                   memsave__human(st->activation_bytes_stock_peak, b, sizeof b),
                   memsave__not_kept(st->activation_bytes_stock_peak, st->activation_bytes_kept_peak, c, sizeof c),
                   memsave__human(st->activation_bytes_kept, d, sizeof d),
                   memsave__human(st->activation_bytes_stock, e, sizeof e),
                   memsave__not_kept(st->activation_bytes_stock, st->activation_bytes_kept, g, sizeof g), s,
                   memsave__human(st->parameter_bytes_kept, p, sizeof p));
  if (st->parameter_bytes_kept != st->parameter_bytes_stock && n > 0 && (size_t)n < cap)
    snprintf(buf + n, cap - (size_t)n, " (stock %s)", memsave__human(st->parameter_bytes_stock, q, sizeof q));
  return buf;
}

const char *memsave__family_verdict(const char *state, int active, const struct memsave_stats *st, int f) {
  if (strcmp(state, "off") == 0) return "stock (off)";
  if (strcmp(state, "on") != 0) return "stock (not in this build)";
  if (!active) return "stock (MEMSAVE=0)";
  if (st->fallbacks[f]) return "see fallbacks";
  if (st->substituted[f]) return "ok";
  return st->passthrough[f] ? "stock minimal" : "not used";
}

void memsave__family_rows(FILE *f, const char *prefix, const char *const states[], int active,
                          const struct memsave_stats *st) {
  fprintf(f, "%s%-10s %-12s %12s %12s %12s  %s\n", prefix, "family", "state", "substituted", "passthrough",
          "fallbacks", "verdict");
  for (int i = 0; i < MEMSAVE_FAMILY_COUNT; i++)
    fprintf(f, "%s%-10s %-12s %12llu %12llu %12llu  %s\n", prefix, memsave_family_name(i), states[i],
            (unsigned long long)st->substituted[i], (unsigned long long)st->passthrough[i],
            (unsigned long long)st->fallbacks[i], memsave__family_verdict(states[i], active, st, i));
}

void memsave__json_string(FILE *f, const char *s) {
  fputc('"', f);
  for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
    if (*c == '"' || *c == '\\') fprintf(f, "\\%c", *c);
    else if (*c < 0x20) fprintf(f, "\\u%04x", *c);
    else fputc(*c, f);
  }
  fputc('"', f);
}

void memsave__json_counts(FILE *f, const char *const states[], const struct memsave_stats *st) {
  fprintf(f, "\"families\":{");
  for (int i = 0; i < MEMSAVE_FAMILY_COUNT; i++)
    fprintf(f, "%s\"%s\":{\"state\":\"%s\",\"substituted\":%llu,\"passthrough\":%llu,\"fallbacks\":%llu}",
            i ? "," : "", memsave_family_name(i), states[i], (unsigned long long)st->substituted[i],
            (unsigned long long)st->passthrough[i], (unsigned long long)st->fallbacks[i]);
  fprintf(f, "},\"bytes_kept\":%llu,\"bytes_stock\":%llu,\"activation_bytes_kept\":%llu,"
          "\"activation_bytes_stock\":%llu,\"parameter_bytes_kept\":%llu,\"parameter_bytes_stock\":%llu,"
          "\"recomputed_bytes\":%llu,\"activation_bytes_kept_peak\":%llu,\"activation_bytes_stock_peak\":%llu",
          (unsigned long long)st->bytes_kept, (unsigned long long)st->bytes_stock,
          (unsigned long long)st->activation_bytes_kept, (unsigned long long)st->activation_bytes_stock,
          (unsigned long long)st->parameter_bytes_kept, (unsigned long long)st->parameter_bytes_stock,
          (unsigned long long)st->recomputed_bytes, (unsigned long long)st->activation_bytes_kept_peak,
          (unsigned long long)st->activation_bytes_stock_peak);
}
