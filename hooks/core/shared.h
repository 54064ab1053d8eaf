// SPDX-License-Identifier: MIT
// shared.h: the state the shim owns, as the hooks see it: whether a family is on now, and
// the counters every kernel updates (counters.cpp).
#pragma once

#include <cstdint>

#include "../../shim/hooks_abi.h"

// Note [Versions]: one source serves LibTorch 1.13 and 2.x. Where the C++ API really differs,
// code is conditional on MEMSAVE_TORCH_AT_LEAST, and each use says which versions need which
// branch. Both branches are compiled and tested: 1.13 (Debian 12), 2.6 (Debian 13,
// scripts/trixie.sh).
#include <ATen/core/operator_name.h>
#include <torch/version.h>
#define MEMSAVE_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

// Note [Compiled autograd] (node.h) and Note [Compile tracing] (rules.h): what torch.compile
// needs of us, one switch (CMake MEMSAVE_COMPILED_AUTOGRAD): AUTO (2 here) serves it on 2.6
// only, the release it is tested on; ON on any release from 2.6 on; OFF never.
#if !defined(MEMSAVE_WITH_COMPILED_AUTOGRAD) || MEMSAVE_WITH_COMPILED_AUTOGRAD == 2
#define MEMSAVE_COMPILED_AUTOGRAD (MEMSAVE_TORCH_AT_LEAST(2, 6) && !MEMSAVE_TORCH_AT_LEAST(2, 7))
#elif MEMSAVE_WITH_COMPILED_AUTOGRAD
#define MEMSAVE_COMPILED_AUTOGRAD MEMSAVE_TORCH_AT_LEAST(2, 6)
#else
#define MEMSAVE_COMPILED_AUTOGRAD 0
#endif
#define MEMSAVE_COMPILE_TRACING MEMSAVE_COMPILED_AUTOGRAD

namespace memsave {

// The shim's state, set once by memsave_hooks_init before any kernel is registered.
struct memsave_shared* shared();

// True when the family is enabled now (MEMSAVE_OPS and memsave_set_enabled).
bool family_on(memsave_family_t family);

// Tensor bytes a node keeps for backward, as the report shows them: activations (tensors the
// forward computed: inputs, outputs, masks, batch statistics) and parameters (leaves that live
// in the model anyway: weights, biases, running statistics).
struct Bytes {
  uint64_t activations = 0;
  uint64_t parameters = 0;
};

// `op` names the operator for MEMSAVE_TRACE's Python attribution.
void count_substituted(memsave_family_t family, const c10::OperatorName& op, Bytes kept, Bytes stock);
void count_passthrough(memsave_family_t family);
void count_fallback(memsave_family_t family, const char* reason);

}  // namespace memsave
