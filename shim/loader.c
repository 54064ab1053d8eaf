/* SPDX-License-Identifier: MIT */
/* loader.c: locating, version-checking and loading libmemsave_hooks.so, exactly once. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <link.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

#ifndef MEMSAVE_TORCH_SONAME
#error "MEMSAVE_TORCH_SONAME (the soname of the libtorch_cpu the hooks link) must be defined"
#endif

typedef void *(*dlopen_fn)(const char *, int);

void *memsave__real_dlopen(const char *file, int mode) {
  static dlopen_fn fn;
  dlopen_fn f = __atomic_load_n(&fn, __ATOMIC_ACQUIRE);
  if (!f) {
    f = (dlopen_fn)dlsym(RTLD_NEXT, "dlopen");
    if (!f) {
      memsave__log(MEMSAVE_LOG_WARN, "warning: the real dlopen was not found (dlsym(RTLD_NEXT, \"dlopen\") failed)");
      return NULL;
    }
    __atomic_store_n(&fn, f, __ATOMIC_RELEASE);
  }
  return f(file, mode);
}

/* 0: LibTorch not seen yet; 1: hooks loaded; -1: refused or failed (never retried). */
static int torch_state;
static pthread_mutex_t activate_lock = PTHREAD_MUTEX_INITIALIZER;

int memsave__torch_state(void) { return __atomic_load_n(&torch_state, __ATOMIC_ACQUIRE); }

struct find_ctx {
  const char *prefix;
  char path[PATH_MAX];
};

static int find_cb(struct dl_phdr_info *info, size_t size, void *data) {
  (void)size;
  struct find_ctx *ctx = data;
  const char *name = info->dlpi_name;
  if (!name || !*name) return 0;
  const char *base = strrchr(name, '/');
  base = base ? base + 1 : name;
  if (strncmp(base, ctx->prefix, strlen(ctx->prefix)) != 0) return 0;
  snprintf(ctx->path, sizeof ctx->path, "%s", name);
  return 1;
}

/* Path of a mapped object whose file name starts with `prefix`, or NULL. */
static const char *find_mapped(struct find_ctx *ctx, const char *prefix) {
  ctx->prefix = prefix;
  ctx->path[0] = '\0';
  return dl_iterate_phdr(find_cb, ctx) ? ctx->path : NULL;
}

static void hooks_path(char *out, size_t cap) {
  if (memsave__shared.opts.hooks[0]) {
    snprintf(out, cap, "%s", memsave__shared.opts.hooks);
    return;
  }
  Dl_info info;
  const char *self = (dladdr((void *)memsave_version, &info) && info.dli_fname) ? info.dli_fname : "";
  const char *slash = strrchr(self, '/');
  int dirlen = slash ? (int)(slash - self) : 0;
  snprintf(out, cap, "%.*s%slibmemsave_hooks.so", dirlen, self, slash ? "/" : "");
}

static int refuse(const char *fmt, const char *a, const char *b) {
  memsave__log(MEMSAVE_LOG_WARN, fmt, a, b);
  return -1;
}

/* Returns the new torch_state. Called with activate_lock held. */
static int activate_locked(void) {
  struct find_ctx ctx;
  void *torch = memsave__real_dlopen(MEMSAVE_TORCH_SONAME, RTLD_LAZY | RTLD_NOLOAD);
  if (!torch) {
    const char *other = find_mapped(&ctx, "libtorch_cpu");
    if (!other) return 0; /* not yet: keep watching dlopen */
    memsave__options_flush();
    return refuse("warning: LibTorch %s is not %s, the one libmemsave_hooks was built for; no hooks installed",
                  other, MEMSAVE_TORCH_SONAME);
  }
  dlclose(torch);
  memsave__options_flush();

  char path[PATH_MAX];
  hooks_path(path, sizeof path);
  void *hooks = memsave__real_dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!hooks) return refuse("warning: could not load the hooks library %s: %s; no hooks installed", path, dlerror());
  memsave_hooks_init_fn init = (memsave_hooks_init_fn)dlsym(hooks, MEMSAVE_HOOKS_INIT_SYMBOL);
  if (!init) return refuse("warning: %s has no %s; no hooks installed", path, MEMSAVE_HOOKS_INIT_SYMBOL);

  /* The hooks read the options in s->opts; the enabled flag starts as MEMSAVE says and is
   * the C ABI's from here on. The hooks log the families this build lacks. */
  struct memsave_shared *s = &memsave__shared;
  __atomic_store_n(&s->enabled, s->opts.enable, __ATOMIC_RELAXED);
  int rc = init(s);
  if (rc < 0) return refuse("warning: the hooks failed to start (%s)%s; no hooks installed", memsave_strerror(rc), "");
  __atomic_store_n(&s->active, s->opts.enable, __ATOMIC_RELEASE);
  memsave__log(MEMSAVE_LOG_INFO, "LibTorch %s found; hooks %s from %s", s->torch_version,
               s->opts.enable ? "registered" : "loaded for counting only (MEMSAVE=0)", path);
  return 1;
}

void memsave__try_activate(void) {
  if (memsave__torch_state() != 0) return;
  /* trylock, not lock: a dlopen made by another library's initialiser while that thread
   * holds glibc's loader lock must never wait for us (we may be waiting for that lock). */
  if (pthread_mutex_trylock(&activate_lock) != 0) return;
  if (memsave__torch_state() == 0) __atomic_store_n(&torch_state, activate_locked(), __ATOMIC_RELEASE);
  pthread_mutex_unlock(&activate_lock);
}
