// SPDX-License-Identifier: MIT
// internal.h: the machinery's entry points that memsave_hooks_init (init.cpp) and the
// counters (counters.cpp) call; no family file needs them.
#pragma once

#include <ATen/core/operator_name.h>

#include <cstdint>

#include "../../shim/hooks_abi.h"

namespace memsave {

void set_shared(struct memsave_shared* shared);    // counters.cpp: once, before anything else
void install_counting_allocator();                   // allocator.cpp
void cuda_install_snapshot();                        // cuda.cpp
void register_stand_in_op();                         // standin.cpp: memsave::stand_in (2.6)
void trace_init();                                   // trace.cpp
void trace_substituted(const c10::OperatorName& op, uint64_t bytes_not_kept);  // trace.cpp

}  // namespace memsave
