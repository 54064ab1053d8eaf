// SPDX-License-Identifier: MIT
// tracing.cpp: tracing() (rules.h; Note [Compiled autograd] in node.h), alone so that
// the programs that compile bitmask.cpp or pool_windows.cpp by themselves link it too.
#include "rules.h"

namespace memsave {
namespace {

thread_local bool t_tracing = false;

}  // namespace

bool tracing() { return t_tracing; }

Tracing::Tracing() : previous_(t_tracing) { t_tracing = true; }
Tracing::~Tracing() { t_tracing = previous_; }

}  // namespace memsave
