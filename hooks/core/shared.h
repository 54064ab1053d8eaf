// SPDX-License-Identifier: MIT
// shared.h: the state the shim owns, as the hooks see it: whether a family is on now, and
// the counters every kernel updates (counters.cpp).
#pragma once

#include <cstdint>

#include "../../shim/hooks_abi.h"

// Note [Versions] and the compile switch: compat.h.
#include <ATen/core/operator_name.h>

#include "compat.h"

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
// `recomputed`: activation bytes of `stock` not kept because a recipe recomputes them.
void count_substituted(memsave_family_t family, const c10::OperatorName& op, Bytes kept, Bytes stock,
                       uint64_t recomputed = 0);
// Note [Live activations] (node.h): a node's activations while it keeps them, and after.
void live_add(uint64_t kept, uint64_t stock);
void live_sub(uint64_t kept, uint64_t stock);
void count_passthrough(memsave_family_t family);
void count_fallback(memsave_family_t family, const char* reason);

}  // namespace memsave
