/* SPDX-License-Identifier: MIT */
/* state.c: the public C ABI (memsave.h) over the state shared with the hooks, the one
 * printer of the shim, and the table of fallback reasons. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

struct memsave_shared memsave__shared = {
    .abi_version = MEMSAVE_HOOKS_ABI_VERSION,
    .log = memsave__log,
    .note_fallback = memsave__note_fallback,
};

struct memsave_reason memsave__reasons[MEMSAVE_MAX_REASONS];
int memsave__nreasons;
static pthread_mutex_t reasons_lock = PTHREAD_MUTEX_INITIALIZER;

/* All output of the shim goes through here: a fixed stack buffer, one write(2), the
 * "memsave:" prefix, and a thread-local guard so a log call can never re-enter itself. */
void memsave__log(int level, const char *fmt, ...) {
  static __thread int inside;
  if (level > memsave__shared.opts.verbose && level != MEMSAVE_LOG_WARN) return;
  if (inside) return;
  inside = 1;
  char buf[1024];
  int n = snprintf(buf, sizeof buf, "memsave: ");
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
  va_end(ap);
  if (m < 0) m = 0;
  size_t len = (size_t)n + ((size_t)m < sizeof buf - (size_t)n - 1 ? (size_t)m : sizeof buf - (size_t)n - 2);
  buf[len++] = '\n';
  ssize_t w = write(STDERR_FILENO, buf, len);
  (void)w;
  inside = 0;
}

void memsave__note_fallback(int family, const char *reason) {
  if (family >= 0 && family < MEMSAVE_FAMILY_SLOTS)
    __atomic_fetch_add(&memsave__shared.fallbacks[family], 1, __ATOMIC_RELAXED);
  pthread_mutex_lock(&reasons_lock);
  int i;
  for (i = 0; i < memsave__nreasons; i++)
    if (memsave__reasons[i].family == family && strcmp(memsave__reasons[i].text, reason) == 0) break;
  int first = 0;
  if (i == memsave__nreasons && i < MEMSAVE_MAX_REASONS) {
    memsave__reasons[i].family = family;
    memsave__reasons[i].text = reason;
    memsave__nreasons++;
    first = 1;
  }
  if (i < MEMSAVE_MAX_REASONS) memsave__reasons[i].count++;
  pthread_mutex_unlock(&reasons_lock);
  if (first) memsave__log(MEMSAVE_LOG_INFO, "%s: falling back to stock: %s", memsave_family_name(family), reason);
}

int memsave_is_active(void) { return __atomic_load_n(&memsave__shared.active, __ATOMIC_ACQUIRE); }

int memsave_enabled(void) { return __atomic_load_n(&memsave__shared.enabled, __ATOMIC_RELAXED); }

int memsave_set_enabled(int on) {
  return __atomic_exchange_n(&memsave__shared.enabled, on ? 1 : 0, __ATOMIC_RELAXED);
}

/* The whole run's peak up to the last memsave_reset_peak: with the current peak, the
 * whole run's (cpu_peak_total_bytes, the report). */
static int64_t peak_before_reset;

int memsave_get_stats(struct memsave_stats *out, size_t size) {
  if (!out || size < sizeof(uint64_t)) return MEMSAVE_EINVAL;
  const struct memsave_shared *s = &memsave__shared;
  struct memsave_stats st;
  memset(&st, 0, sizeof st);
  for (int i = 0; i < MEMSAVE_FAMILY_SLOTS; i++) {
    st.substituted[i] = __atomic_load_n(&s->substituted[i], __ATOMIC_RELAXED);
    st.fallbacks[i] = __atomic_load_n(&s->fallbacks[i], __ATOMIC_RELAXED);
    st.passthrough[i] = __atomic_load_n(&s->passthrough[i], __ATOMIC_RELAXED);
  }
  st.activation_bytes_kept = __atomic_load_n(&s->kept.activations, __ATOMIC_RELAXED);
  st.parameter_bytes_kept = __atomic_load_n(&s->kept.parameters, __ATOMIC_RELAXED);
  st.activation_bytes_stock = __atomic_load_n(&s->stock.activations, __ATOMIC_RELAXED);
  st.parameter_bytes_stock = __atomic_load_n(&s->stock.parameters, __ATOMIC_RELAXED);
  st.recomputed_bytes = __atomic_load_n(&s->recomputed, __ATOMIC_RELAXED);
  st.activation_bytes_kept_peak = __atomic_load_n(&s->kept_live_peak, __ATOMIC_RELAXED);
  st.activation_bytes_stock_peak = __atomic_load_n(&s->stock_live_peak, __ATOMIC_RELAXED);
  st.activation_bytes_kept_live = __atomic_load_n(&s->kept_live, __ATOMIC_RELAXED);
  st.activation_bytes_stock_live = __atomic_load_n(&s->stock_live, __ATOMIC_RELAXED);
  st.bytes_kept = st.activation_bytes_kept + st.parameter_bytes_kept;
  st.bytes_stock = st.activation_bytes_stock + st.parameter_bytes_stock;
  int64_t cur = __atomic_load_n(&s->cpu_current_bytes, __ATOMIC_RELAXED);
  int64_t peak = __atomic_load_n(&s->cpu_peak_bytes, __ATOMIC_RELAXED);
  st.cpu_current_bytes = cur > 0 ? (uint64_t)cur : 0;
  st.cpu_peak_bytes = peak > 0 ? (uint64_t)peak : 0;
  int64_t before = __atomic_load_n(&peak_before_reset, __ATOMIC_RELAXED);
  st.cpu_peak_total_bytes = (uint64_t)(before > peak ? before : peak > 0 ? peak : 0);
  size_t n = size < sizeof st ? size : sizeof st;
  st.size = n;
  memcpy(out, &st, n);
  return 0;
}

void memsave_reset_peak(void) {
  int64_t cur = __atomic_load_n(&memsave__shared.cpu_current_bytes, __ATOMIC_RELAXED);
  int64_t old = __atomic_exchange_n(&memsave__shared.cpu_peak_bytes, cur, __ATOMIC_RELAXED);
  int64_t before = __atomic_load_n(&peak_before_reset, __ATOMIC_RELAXED);
  while (old > before &&
         !__atomic_compare_exchange_n(&peak_before_reset, &before, old, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
}

const char *memsave_err_name(int err) {
  switch (err) {
#define XX(name, value, text) case value: return "MEMSAVE_" #name;
    MEMSAVE_ERRNO_MAP(XX)
#undef XX
    case 0: return "MEMSAVE_OK";
  }
  return "MEMSAVE_UNKNOWN";
}

const char *memsave_strerror(int err) {
  switch (err) {
#define XX(name, value, text) case value: return text;
    MEMSAVE_ERRNO_MAP(XX)
#undef XX
    case 0: return "success";
  }
  return "unknown error";
}
