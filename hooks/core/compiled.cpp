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

#if !MEMSAVE_FUNCTIONAL_BACKWARD
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
#else
// Note [Functional backward]: from 2.7 on, compiled autograd's first pass over the graph
// calls apply_with_saved with placeholders (tensors of sizes [0, 123456789]) for the kept
// tensors and the incoming gradients, and records, instead of our ATen calls, one opaque
// call to a function the node binds (PyCompilerInterface::bind_function): backward as a
// function of the incoming gradients and a list of IValues. Dynamo then compiles that graph
// and the backend's tracing (AOTAutograd under aot_eager and inductor) runs the function on
// fake tensors, recording our backward's ATen calls; "eager" runs it as it is, at every step.
// The list we pack holds the kept tensors, in fields() order, and which gradients are
// wanted; every other value is in compiled_args's key, so the node the function was bound
// for has the same ones. The function holds that node, runs its backward with the kept
// tensors swapped for the list's and the wanted gradients from the list, on the
// graph-friendly path (Tracing), and swaps them back: the node is only a recipe then, never
// checked against released or modified tensors (compiled_args already raised stock's errors
// for the node being compiled). So a compiled graph keeps the node objects it was traced
// from alive, as long as Python keeps the function (compiled_autograd.ops): their kept
// tensors are released as usual, the objects and the nodes they point to are not.
// Bound once per apply_with_saved with a fresh name, as stock's CppNode does, and marked
// custom (not moved between devices by compiled autograd's CPU-scalar pass) and traceable.
namespace {

using torch::dynamo::autograd::PackedArgs;

// The kept tensors, as apply_with_saved's swap left them, into the list.
class Pack final : public Fields {
 public:
  explicit Pack(PackedArgs& args) : args_(args) {}
  void saved(SavedVariable& v, bool) override { args_.pack(v.unpack()); }
  void ints(const std::vector<int64_t>&) override {}
  void integer(int64_t) override {}
  void real(double) override {}
  void flag(bool) override {}
  void options(const at::TensorOptions&) override {}

 private:
  PackedArgs& args_;
};

// The list's tensors into the node's SavedVariables (in), and the node's own back (out).
class Load final : public Fields {
 public:
  explicit Load(const std::vector<c10::IValue>& args) : args_(args) {}
  void saved(SavedVariable& v, bool) override {
    if (restoring_) {
      v = std::move(stash_[next_++]);
      return;
    }
    stash_.push_back(std::move(v));
    const c10::IValue& a = args_.at(next_++);
    v = SavedVariable(a.isTensor() ? a.toTensor() : at::Tensor(), /*is_output=*/false);
  }
  void ints(const std::vector<int64_t>&) override {}
  void integer(int64_t) override {}
  void real(double) override {}
  void flag(bool) override {}
  void options(const at::TensorOptions&) override {}
  // How many list entries the kept tensors took; then switches to restoring.
  size_t taken() {
    const size_t n = next_;
    next_ = 0;
    restoring_ = true;
    return n;
  }

 private:
  const std::vector<c10::IValue>& args_;
  std::vector<SavedVariable> stash_;
  size_t next_ = 0;
  bool restoring_ = false;
};

}  // namespace

variable_list NodeBase::apply_with_saved(const variable_list& inputs, SwapSavedVariables& saved) {
  Swap before(saved, /*before=*/true), after(saved, /*before=*/false);
  fields(before);
  PackedArgs packed;
  try {
    Pack pack(packed);
    fields(pack);
  } catch (...) {
    fields(after);
    throw;
  }
  std::vector<bool> needs(num_outputs());
  for (size_t i = 0; i < needs.size(); i++) needs[i] = task_should_compute_output(i);
  packed.pack(needs);
  const std::vector<c10::IValue>& args = packed.vec();
  std::vector<at::TypePtr> schema;
  schema.reserve(args.size());
  for (const c10::IValue& a : args) schema.push_back(a.isTensor() ? at::TensorType::get() : a.type());
  const auto& python = torch::dynamo::autograd::getPyCompilerInterface();
  auto node = self_ptr(this);
  auto fn = [node](const variable_list& grads, const std::vector<c10::IValue>& args) {
    return static_cast<NodeBase&>(*node).apply_functional(grads, args);
  };
  const std::string bound = python->bind_function(saved.get_py_compiler(), name(), fn, schema,
                                                  /*is_custom_function=*/true, /*is_traceable=*/true);
  const auto metadata = torch::dynamo::autograd::IValuePacker<std::vector<std::optional<torch::autograd::InputMetadata>>>::pack(
      torch::dynamo::autograd::get_input_metadata(next_edges()));
  variable_list out;
  try {
    out = python->call_function(saved.get_py_compiler(), "apply_functional", bound, inputs, args, metadata);
  } catch (...) {
    fields(after);
    throw;
  }
  fields(after);
  return out;
}

variable_list NodeBase::apply_functional(const variable_list& grads, const std::vector<c10::IValue>& args) {
  std::lock_guard<std::mutex> lock(mutex_);
  Load load(args);
  fields(load);
  const size_t n = load.taken();
  const std::vector<bool> needs = args.at(n).toBoolList().vec();
  variable_list out;
  needs_ = &needs;
  try {
    Tracing tracing;
    out = apply_locked(grads);
  } catch (...) {
    needs_ = nullptr;
    fields(load);
    throw;
  }
  needs_ = nullptr;
  fields(load);
  return out;
}
#endif
#endif

}  // namespace memsave
