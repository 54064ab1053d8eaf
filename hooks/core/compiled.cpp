// SPDX-License-Identifier: MIT
// compiled.cpp: what compiled autograd asks of our nodes (Note [Compiled autograd] in node.h).
#include "node.h"
#include "rules.h"
#include "standin.h"

#if MEMSAVE_COMPILED_AUTOGRAD
#include <torch/csrc/dynamo/compiled_autograd.h>
#endif

namespace memsave {

void Fields::geometry(const Geometry& g) {
  ints(g.sizes);
  ints(g.strides);
  options(g.options);
}

#if MEMSAVE_COMPILED_AUTOGRAD
namespace {

using torch::autograd::SavedVariable;
using torch::autograd::variable_list;
using torch::dynamo::autograd::CompiledNodeArgs;
using torch::dynamo::autograd::SwapSavedVariables;

// compiled_args: tensors become graph inputs, the rest the cache key.
class Collect final : public Fields {
 public:
  explicit Collect(CompiledNodeArgs& args) : args_(args) {}
  void saved(SavedVariable& v, bool is_output) override { args_.collect(v, is_output); }
  void ints(const std::vector<int64_t>& v) override { args_.collect(v); }
  void integer(int64_t v) override { args_.collect(v); }
  void real(double v) override { args_.collect(v); }
  void flag(bool v) override { args_.collect(v); }
  void options(const at::TensorOptions& o) override { args_.collect(o); }

 private:
  CompiledNodeArgs& args_;
};

// apply_with_saved: the kept tensors swapped for their fakes (before) and back (after).
// Values stay what they are: they are in the key.
class Swap final : public Fields {
 public:
  Swap(SwapSavedVariables& saved, bool before) : saved_(saved), before_(before) {}
  void saved(SavedVariable& v, bool) override { before_ ? saved_.before(v) : saved_.after(v); }
  void ints(const std::vector<int64_t>&) override {}
  void integer(int64_t) override {}
  void real(double) override {}
  void flag(bool) override {}
  void options(const at::TensorOptions&) override {}

 private:
  SwapSavedVariables& saved_;
  bool before_;
};

}  // namespace

void NodeBase::compiled_args(CompiledNodeArgs& args) const {
  // Collecting only reads; fields() is non-const because the same visit swaps in apply_with_saved.
  const_cast<NodeBase*>(this)->compiled_args(args);
}

void NodeBase::compiled_args(CompiledNodeArgs& args) {
  check_unpack();
  // Which gradients backward computes is part of what it traces.
  for (size_t i = 0; i < num_outputs(); i++) args.collect(task_should_compute_output(i));
  Collect collect(args);
  fields(collect);
}

variable_list NodeBase::apply_with_saved(const variable_list& inputs, SwapSavedVariables& saved) {
  Swap before(saved, /*before=*/true), after(saved, /*before=*/false);
  fields(before);
  variable_list out;
  try {
    Tracing tracing;
    out = apply(variable_list(inputs));
  } catch (...) {
    fields(after);
    throw;
  }
  fields(after);
  return out;
}
#endif

}  // namespace memsave
