/* SPDX-License-Identifier: MIT */
/* report_read.c: what `memsave ab` takes from one JSON report libmemsave wrote
 * (shim/report.c): the measures of the run and, for run B1, the details. Reads text only,
 * so a fuzzer can drive it (tests/fuzz/fuzz_report.c); a malformed report gives zeros and
 * empty names, never a crash. */
#include <string.h>

#include "cli.h"

static uint64_t u64(const char *json, const char *path) {
  uint64_t v = 0;
  cli_json_u64(cli_json_get(json, path), &v);
  return v;
}

static void read_details(const char *json, struct cli_details *d) {
  /* The report's names of the figures summed into d->st. */
  const struct { const char *name; uint64_t *per_family; } counters[] = {
      {"substituted", d->st.substituted}, {"passthrough", d->st.passthrough}, {"fallbacks", d->st.fallbacks}};
  const struct { const char *name; uint64_t *bytes; } bytes[] = {
      {"activation_bytes_kept", &d->st.activation_bytes_kept},
      {"activation_bytes_stock", &d->st.activation_bytes_stock},
      {"parameter_bytes_kept", &d->st.parameter_bytes_kept},
      {"parameter_bytes_stock", &d->st.parameter_bytes_stock},
      {"recomputed_bytes", &d->st.recomputed_bytes},
      {"activation_bytes_kept_peak", &d->st.activation_bytes_kept_peak},
      {"activation_bytes_stock_peak", &d->st.activation_bytes_stock_peak}};
  const char *family = cli_json_get(json, "families");
  for (int f = 0; f < MEMSAVE_FAMILY_COUNT; f++) {
    const char *row = cli_json_get(family, memsave_family_name(f));
    cli_json_str(cli_json_get(row, "state"), d->state[f], sizeof d->state[f]);
    for (size_t c = 0; c < sizeof counters / sizeof counters[0]; c++)
      counters[c].per_family[f] += u64(row, counters[c].name);
  }
  for (size_t b = 0; b < sizeof bytes / sizeof bytes[0]; b++) *bytes[b].bytes += u64(json, bytes[b].name);
  d->st.bytes_kept = d->st.activation_bytes_kept + d->st.parameter_bytes_kept;
  d->st.bytes_stock = d->st.activation_bytes_stock + d->st.parameter_bytes_stock;
  const char *reasons = cli_json_get(json, "fallback_reasons"), *r;
  for (int i = 0; d->nreasons < CLI_MAX_REASONS && (r = cli_json_at(reasons, i)); i++) {
    cli_json_str(cli_json_get(r, "family"), d->reasons[d->nreasons].family, sizeof d->reasons[0].family);
    cli_json_str(cli_json_get(r, "reason"), d->reasons[d->nreasons].text, sizeof d->reasons[0].text);
    d->reasons[d->nreasons++].count = u64(r, "count");
  }
  const char *trace = cli_json_get(json, "trace"), *s;
  if (!trace) return;
  char attribution[16] = "";
  cli_json_str(cli_json_get(trace, "attribution"), attribution, sizeof attribution);
  d->operator_names = strcmp(attribution, "operator") == 0;
  d->trace_nodes += u64(trace, "nodes");
  d->trace_ns += u64(trace, "ns");
  const char *sites = cli_json_get(trace, "sites");
  for (int i = 0; d->sites && d->nsites < CLI_MAX_SITES && (s = cli_json_at(sites, i)); i++) {
    cli_json_str(cli_json_get(s, "symbol"), d->sites[d->nsites].symbol, sizeof d->sites[0].symbol);
    cli_json_str(cli_json_get(s, "module"), d->sites[d->nsites].module, sizeof d->sites[0].module);
    d->sites[d->nsites].offset = u64(s, "module_offset");
    d->sites[d->nsites].bytes = u64(s, "bytes");
    d->sites[d->nsites++].nodes = u64(s, "nodes");
  }
}

void cli_read_report(const char *json, struct cli_measure *m, struct cli_details *d) {
  int loaded = cli_json_get(json, "torch_loaded") && strncmp(cli_json_get(json, "torch_loaded"), "true", 4) == 0;
  if (m->reports++ == 0) {
    cli_json_str(cli_json_get(json, "torch_version"), m->torch_version, sizeof m->torch_version);
    cli_json_str(cli_json_get(json, "cuda.state"), m->cuda, sizeof m->cuda);
  }
  m->loaded |= loaded;
  m->active |= strncmp(cli_json_get(json, "active") ? cli_json_get(json, "active") : "", "true", 4) == 0;
  uint64_t peak = u64(json, "cpu_peak_total_bytes"), cuda = 0, v; /* the whole run's */
  const char *devices = cli_json_get(json, "cuda.peak_allocated_bytes");
  for (int i = 0; cli_json_u64(cli_json_at(devices, i), &v); i++) cuda += v;
  if (peak > m->cpu_peak) m->cpu_peak = peak;
  if (cuda > m->cuda_peak) m->cuda_peak = cuda;
  if (d) read_details(json, d);
}
