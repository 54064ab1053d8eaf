/* SPDX-License-Identifier: MIT */
/* environ.c: what libmemsave sets in the host's environment, from the constructor, before
 * the host reads it (Python copies the environment into os.environ when it starts).
 *
 * Note [AOTAutograd's cache]: torch.compile keeps what AOTAutograd traced in a cache on disk
 * (torch._functorch's enable_autograd_cache: on by default from 2.7 on, pytorch#141981; off in
 * 2.6), keyed by the Dynamo graph and PyTorch's configuration, not by the kernels the trace
 * went through. With it on, a process with libmemsave would load a graph traced without it
 * (stock's savings only: found on 2.14, where test_compile.py's inductor cases kept what stock
 * keeps), and a process without libmemsave, or with MEMSAVE=0, would load a graph traced
 * through our kernels, which calls libmemsave's operators (memsave::stand_in_like): not stock's
 * behaviour, and an error where they are not registered. So, while libmemsave is on, the cache
 * is off for the process (TORCHINDUCTOR_AUTOGRAD_CACHE=0, the variable that forces the
 * setting), unless the user set that variable: then we leave it and say, once, what it risks.
 * Inductor's own FX graph cache stays on: its key is the graph after AOTAutograd, which differs
 * with us. The cost is a compilation where a cached one would have been loaded. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define AUTOGRAD_CACHE "TORCHINDUCTOR_AUTOGRAD_CACHE"

void memsave__environ_adjust(void) {
  if (!memsave__shared.opts.enable) return; /* MEMSAVE=0: exactly stock's, environment included */
  const char *set = getenv(AUTOGRAD_CACHE);
  if (!set) {
    setenv(AUTOGRAD_CACHE, "0", 0);
    return;
  }
  if (strcmp(set, "0") != 0)
    memsave__options_hold("warning: " AUTOGRAD_CACHE "=%.40s: torch.compile may load graphs traced without "
                          "libmemsave (stock's memory) and, without libmemsave, graphs traced through it; unset it "
                          "to let libmemsave turn that cache off (docs/options.md)",
                          set);
}
