/* SPDX-License-Identifier: MIT */
/* start_main_preload.c: shim/preload.c with dlsym renamed to fake_dlsym (start_main_host.c),
 * so that a test can make the lookup of the real __libc_start_main fail. */
#define dlsym fake_dlsym
#include "../shim/preload.c"
