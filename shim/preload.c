/* SPDX-License-Identifier: MIT */
/* preload.c: the constructor and the interposed dlopen, nothing else.
 *
 * Note [When to activate]: activation must wait until LibTorch's static initialisers have
 * run. Our constructor may run before them (a program that links libmemsave.so ahead of
 * LibTorch is initialised in reverse order), and even a RTLD_NOLOAD dlopen of a library not
 * yet initialised runs its initialisers out of order. So:
 *   - the constructor only reads the options (and sets what environ.c sets);
 *   - the interposed __libc_start_main activates just before main, when every library the
 *     program was started with is initialised (C++ hosts that link LibTorch);
 *   - the interposed dlopen activates when the outermost dlopen of a thread returns after
 *     main has started (Python's `import torch`, plugins that load LibTorch late). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <stdlib.h>
#include <unistd.h>

#include "internal.h"

typedef int (*main_fn)(int, char **, char **);
typedef int (*start_main_fn)(main_fn, int, char **, void (*)(void), void (*)(void), void (*)(void), void *);

static main_fn host_main;
static int main_started;
/* Depth of dlopen calls on this thread; LibTorch is initialised when the outermost returns. */
static __thread int dlopen_depth;

static void maybe_activate(void) {
  if (__atomic_load_n(&main_started, __ATOMIC_ACQUIRE) && memsave__torch_state() == 0) memsave__try_activate();
}

/* Note [dlopen's caller]: glibc resolves a bare file name with the RUNPATH of the object
 * that called dlopen. Through this wrapper that object is libmemsave.so, so a host that
 * dlopens a plugin by bare name and relies on its own RUNPATH may not find it; hosts that
 * pass a path (Python does) are unaffected. Listed in docs/limits.md.
 *
 * Note [Under ASan]: ASan's runtime (MEMSAVE_SANITIZE, scripts/sanitize.sh) intercepts dlopen
 * as well and must come first in LD_PRELOAD. Its interceptor calls the next dlopen, found
 * with dlsym(RTLD_NEXT) from the runtime: this one, which calls libc's, so activation on
 * Python's `import torch` still happens (the preload and fork_dataloader tests under
 * sanitize.sh). It does not intercept __libc_start_main. */
__attribute__((visibility("default"))) void *dlopen(const char *file, int mode) {
  dlopen_depth++;
  void *handle = memsave__real_dlopen(file, mode);
  dlopen_depth--;
  if (handle && dlopen_depth == 0 && !(mode & RTLD_NOLOAD)) maybe_activate();
  return handle;
}

static int wrapped_main(int argc, char **argv, char **envp) {
  __atomic_store_n(&main_started, 1, __ATOMIC_RELEASE);
  maybe_activate();
  return host_main(argc, argv, envp);
}

/* The real __libc_start_main: the next definition (libc's), else libc's own by handle.
 * Note [No next __libc_start_main]: if dlsym(RTLD_NEXT) cannot find it (a loader or libc
 * that does not answer for it), asking libc.so.6 by handle still finds the one the program
 * would have called; libmemsave then starts the host with its own main, not ours, and stays
 * inactive: nothing of ours runs before or around main. Only when libc itself has none is
 * there nothing to start the program with: we say so and end it (status 127, like a
 * program whose loader failed). */
static start_main_fn real_start_main(int *next) {
  start_main_fn real = (start_main_fn)dlsym(RTLD_NEXT, "__libc_start_main");
  *next = real != NULL;
  void *libc = real ? NULL : memsave__real_dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
  if (libc) real = (start_main_fn)dlsym(libc, "__libc_start_main");
  return real;
}

__attribute__((visibility("default"))) int __libc_start_main(main_fn main, int argc, char **argv, void (*init)(void),
                                                             void (*fini)(void), void (*rtld_fini)(void),
                                                             void *stack_end) {
  int next;
  start_main_fn real = real_start_main(&next);
  if (!real) {
    memsave__log(MEMSAVE_LOG_WARN, "warning: __libc_start_main was not found (dlsym(RTLD_NEXT) and libc.so.6); "
                                   "the program cannot be started with libmemsave preloaded: exit status 127");
    _exit(127);
  }
  if (!next) {
    memsave__log(MEMSAVE_LOG_WARN, "warning: dlsym(RTLD_NEXT, \"__libc_start_main\") failed; libc's was used and "
                                   "libmemsave stays inactive");
    return real(main, argc, argv, init, fini, rtld_fini, stack_end);
  }
  host_main = main;
  return real(wrapped_main, argc, argv, init, fini, rtld_fini, stack_end);
}

__attribute__((constructor)) static void memsave_constructor(void) {
  memsave__options_read();
  memsave__environ_adjust();
  memsave__report_install();
}
