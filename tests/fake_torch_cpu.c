/* SPDX-License-Identifier: MIT */
/* A library named libtorch_cpu with a soname no real LibTorch has, so the preload test can
 * check the refusal of a LibTorch the hooks were not built for. */
int memsave_fake_torch_cpu(void) { return 42; }
