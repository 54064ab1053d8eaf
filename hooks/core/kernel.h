// SPDX-License-Identifier: MIT
// kernel.h: the one kernel skeleton. A family file describes each operator it covers as a
// small struct (what is differentiable, when stock is minimal already, what the node keeps)
// and registers it with one line; the route, the forward below autograd, the history and
// the counting are written once, here.
#pragma once

#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <ATen/core/stack.h>
#include <torch/csrc/autograd/VariableTypeUtils.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/library.h>

#include <array>
#include <initializer_list>
#include <memory>
#include <type_traits>

#include "node.h"
#include "rules.h"
#include "shared.h"
#include "standin.h"

namespace memsave {

// The arguments of one call, on the dispatcher's stack, and what the skeleton needs to run
// the forward: the operator and the dispatch keys it was called with.
class Call {
 public:
  Call(const c10::OperatorHandle& op, c10::DispatchKeySet ks, torch::jit::Stack* stack)
      : op_(op), ks_(ks), stack_(stack), nargs_(op.schema().arguments().size()) {}

  const c10::IValue& arg(size_t i) const { return (*stack_)[stack_->size() - nargs_ + i]; }
  at::Tensor tensor(size_t i) const { return arg(i).toTensor(); }
  // An optional tensor argument, undefined when absent.
  at::Tensor optional_tensor(size_t i) const { return arg(i).isNone() ? at::Tensor() : arg(i).toTensor(); }
  // False when one of these int[] arguments is symbolic (SymInt[] under tracing).
  bool int_lists(std::initializer_list<size_t> idx) const {
    for (size_t i : idx)
      if (!arg(i).isIntList()) return false;
    return true;
  }
  std::vector<int64_t> ints(size_t i) const { return arg(i).toIntVector(); }
  size_t nargs() const { return nargs_; }
  c10::DispatchKeySet keys() const { return ks_; }
  const c10::OperatorName& operator_name() const { return op_.operator_name(); }

  // After the forward: return value i of the operator.
  at::Tensor output(size_t i) const {
    return (*stack_)[stack_->size() - op_.schema().returns().size() + i].toTensor();
  }

  // Stock's kernel for this call: `key` is Autograd for operators with their own autograd
  // kernel, CompositeImplicitAutograd for composites.
  void stock(c10::DispatchKey key) const { op_.callBoxedForDispatchKey(key, *stack_); }

  // The operator's own kernel below autograd. An in-place operator goes through the
  // ADInplaceOrView kernel, which bumps its argument's version as stock's does.
  void forward_below_autograd(bool inplace) const {
    if (inplace) {
      at::AutoDispatchBelowAutograd guard;
      op_.redispatchBoxed(ks_ & c10::after_autograd_keyset, stack_);
    } else {
      at::AutoDispatchBelowADInplaceOrView guard;
      op_.redispatchBoxed(ks_ & c10::after_autograd_keyset, stack_);
    }
  }

  // Replaces the arguments by one returned tensor (a forward the family runs itself).
  void return_tensor(at::Tensor result) const {
    torch::jit::drop(*stack_, nargs_);
    stack_->emplace_back(std::move(result));
  }


 private:
  const c10::OperatorHandle& op_;
  c10::DispatchKeySet ks_;
  torch::jit::Stack* stack_;
  size_t nargs_;
};

// What the node kept and what stock's would have, for the counters.
struct Footprint {
  Bytes kept, stock;
  uint64_t recomputed = 0;  // activations of `stock` a recipe recomputes (Note [Recipe])
};

// Note [Kernel skeleton]: one operator of a family is a struct `O` derived from Op<O>:
//
//   struct Convolution : Op<Convolution> {
//     static constexpr memsave_family_t kFamily = MEMSAVE_FAMILY_CONV;
//     using Node = MemsaveConvolutionBackward;        // void: stock only (counted passthrough)
//     explicit Convolution(const Call& c);            // takes its arguments off the stack
//     std::array<at::Tensor, 3> differentiable() const;  // the arguments stock differentiates
//     bool stock_minimal() const;                     // stock keeps the minimum already
//     const char* prepare(const Call& c);             // why not (or nullptr); work before the node
//     NodePtr<Node> node(const Call& c) const;       // make_node<Node>(...) (compat.h)
//     Footprint keep(const Call& c, Node& node);      // after the forward: what the node keeps
//   };
//
// and kernel<O> runs the route of Note [Fallback] (rules.h) once for all of them:
//   1. family off or grad mode off: stock (not counted);
//   2. O(call); !wanted() (by default: no differentiable argument requires grad): stock,
//      counted as a fallback only inside a TorchScript differentiable graph (rules.h);
//   3. stock_minimal(): counted passthrough, stock;
//   4. why = unsupported_keys, unsupported_tensor of each checked() tensor, prepare(): counted
//      fallback with that reason, stock (under compile tracing, Note [Compile tracing] in
//      rules.h, these and the rest run inside Tracing);
//   5. ours: the node, made before the forward as stock's is (sequence numbers), with its
//      edges from edges() (by default differentiable(), in stock's order); forward() (by
//      default the operator's own kernel below autograd); keep(); the history of output 0
//      (rebased for an in-place operator); and, only once the forward has returned, the
//      count.
// Defaults an operator may hide: kStock (Autograd), kInplace, enabled(), family(), wanted(),
// checked(), prepare(), edges(), forward().
template <class O>
struct Op {
  static constexpr c10::DispatchKey kStock = c10::DispatchKey::Autograd;
  static constexpr bool kInplace = false;

  // Whether the kernel looks at a call at all (before anything is read off the stack).
  static bool enabled() { return family_on(O::kFamily); }
  // The family a call is counted under (linear's recipe consumers count as the recipe family).
  memsave_family_t family() const { return O::kFamily; }

  bool wanted() const {
    for (const at::Tensor& t : self().differentiable())
      if (t.defined() && t.requires_grad()) return true;
    return false;
  }
  bool stock_minimal() const { return false; }
  // For an operator with no node (Node = void) whose stock node keeps activations: why it
  // is left to stock, counted as a fallback (Note [Uncovered route]).
  const char* uncovered() const { return nullptr; }
  auto checked() const { return self().differentiable(); }
  const char* prepare(const Call&) { return nullptr; }
  // What the node's edges point at, after prepare(): the differentiable arguments, or
  // tensors prepare() derived from them with autograd (linear's w.t(), as stock's).
  auto edges() const { return self().differentiable(); }
  template <class Node>
  void forward(const Call& call, Node&) {
    call.forward_below_autograd(O::kInplace);
  }

 private:
  const O& self() const { return static_cast<const O&>(*this); }
};

// An operator with one differentiable input, its first argument.
template <class O, memsave_family_t F>
struct OneInput : Op<O> {
  static constexpr memsave_family_t kFamily = F;
  at::Tensor input;
  explicit OneInput(const Call& c) : input(c.tensor(0)) {}
  std::array<at::Tensor, 1> differentiable() const { return {input}; }
  // Named tensors, which these families leave to stock; then the int[] arguments `ints`.
  const char* unnamed_with_int_lists(const Call& c, std::initializer_list<size_t> ints = {}) const {
    if (has_names(input)) return "named tensor";
    return c.int_lists(ints) ? nullptr : "symbolic sizes";
  }
};

// Note [Uncovered route]: an entry point of a covered family for which we have no node, and
// whose stock node keeps activations (adaptive and fractional max pooling, conv_tbc, direct
// calls of backend convolutions, 2.x's export-only batch norms; tests/test_op_sweep.py lists
// each with its reason). Its kernel counts a fallback naming the operator and calls stock, so
// that the report never calls a family fine while such calls kept their inputs. Stock's
// kernel for these is the Autograd one (composites reach a covered operator or one of these).
template <memsave_family_t F>
struct Uncovered : Op<Uncovered<F>> {
  static constexpr memsave_family_t kFamily = F;
  using Node = void;
  std::vector<at::Tensor> tensors;
  const c10::OperatorName& name;
  explicit Uncovered(const Call& c) : name(c.operator_name()) {
    for (size_t i = 0; i < c.nargs(); i++) {
      const c10::IValue& v = c.arg(i);
      if (v.isTensor()) tensors.push_back(v.toTensor());
      else if (v.isTensorList())
        for (const at::Tensor& t : v.toTensorVector()) tensors.push_back(t);
    }
  }
  const std::vector<at::Tensor>& differentiable() const { return tensors; }
  // Only for calls that need a gradient: the reason's table is looked up under a lock.
  const char* uncovered() const { return uncovered_reason(name); }
};

template <class O>
void kernel(const c10::OperatorHandle& handle, c10::DispatchKeySet ks, torch::jit::Stack* stack) {
  const Call call(handle, ks, stack);
  if (!O::enabled() || !at::GradMode::is_enabled()) return call.stock(O::kStock);
  O op(call);
  if (!op.wanted()) {
    if (in_autodiff_graph() && family_on(op.family())) count_fallback(op.family(), kAutodiffGraph);
    return call.stock(O::kStock);
  }
  if (op.stock_minimal()) {
    count_passthrough(op.family());
    return call.stock(O::kStock);
  }
  if constexpr (std::is_void<typename O::Node>::value) {
    if (const char* why = op.uncovered()) count_fallback(op.family(), why);
    return call.stock(O::kStock);  // an operator we only count
  } else {
    // Note [Compile tracing] (rules.h): PyTorch's own tracing is served, graph-friendly.
    const bool traced = python_keys(ks) && compile_tracing();
    c10::optional<Tracing> tracing_scope;
    if (traced) tracing_scope.emplace();
    const char* why = unsupported_keys(ks, traced);
    for (const at::Tensor& t : op.checked()) {
      if (!why) why = unsupported_tensor(t);
      if (!why && traced) why = unsupported_traced_tensor(t);
    }
    if (!why) why = op.prepare(call);
    if (why) {
      tracing_scope.reset();
      count_fallback(op.family(), why);
      return call.stock(O::kStock);
    }
    NodePtr<typename O::Node> node = op.node(call);
    if (traced) node->set_traced();
    const auto inputs = op.edges();
    node->set_next_edges(torch::autograd::collect_next_edges(at::ArrayRef<at::Tensor>(inputs.data(), inputs.size())));
    op.forward(call, *node);
    const Footprint footprint = op.keep(call, *node);
    at::Tensor output = call.output(0);
    if constexpr (O::kInplace) torch::autograd::rebase_history(output, node);
    else torch::autograd::set_history(output, node);
    // Fakes hold no bytes; the compiled graph keeps what the node keeps (Note [Compile tracing]).
    count_substituted(op.family(), handle.operator_name(), traced ? Bytes{} : footprint.kept,
                      traced ? Bytes{} : footprint.stock, traced ? 0 : footprint.recomputed);
    if (!traced) node->hold(footprint.kept.activations, footprint.stock.activations);  // Note [Live activations]
  }
}

// A kernel that runs stock's composite inside a scope object (e.g. a thread-local flag that
// the kernels of the operators it reaches read).
template <class Scope>
void around_composite(const c10::OperatorHandle& handle, c10::DispatchKeySet, torch::jit::Stack* stack) {
  Scope scope;
  handle.callBoxedForDispatchKey(c10::DispatchKey::CompositeImplicitAutograd, *stack);
}

// Registration: a family file ends with
//   void register_conv(Registrar& r) { r.op<Convolution>("convolution"); }
//   const FamilyRegistration registration(MEMSAVE_FAMILY_CONV, &register_conv);
// and memsave_hooks_init (init.cpp) calls register_conv when the family is in MEMSAVE_OPS.
// Kernels go on AutogradCPU and AutogradCUDA: a kernel registered directly on those keys
// wins over stock's Autograd alias kernel, without an override warning.
class Registrar {
 public:
  using Boxed = void(const c10::OperatorHandle&, c10::DispatchKeySet, torch::jit::Stack*);

  Registrar();
  template <class O>
  void op(const char* name) {
    impl(name, &make<&kernel<O>>);
  }
  template <class Scope>
  void composite(const char* name) {
    impl(name, &make<&around_composite<Scope>>);
  }
  // A kernel written as a boxed function (one that calls stock's and notes what it made:
  // hooks/ops/recipe.cpp's layer norm).
  template <Boxed* fn>
  void boxed(const char* name) {
    impl(name, &make<fn>);
  }
  // Note [Uncovered route]: counted, left to stock. Names this LibTorch does not define,
  // or defines as a composite (which reaches another operator), are skipped.
  template <memsave_family_t F>
  void uncovered(std::initializer_list<const char*> names) {
    for (const char* name : names)
      if (has_stock_node(name)) impl(name, &make<&kernel<Uncovered<F>>>);
  }

 private:
  template <Boxed* fn>
  static torch::CppFunction make() {
    return torch::CppFunction::makeFromBoxedFunction<fn>();
  }
  // Registers the function `make` returns for aten::`name` on AutogradCPU and AutogradCUDA.
  void impl(const char* name, torch::CppFunction (*make)());
  // Whether aten::`name` ("op" or "op.overload") exists in this LibTorch with a kernel of
  // its own, not a CompositeImplicitAutograd one.
  static bool has_stock_node(const char* name);

  torch::Library* cpu_;
  torch::Library* cuda_;
};

// `also`: further families whose being asked for (MEMSAVE_OPS) registers this one's kernels
// too (linear's kernel serves the recipe family's consumers); the kernels then decide per
// call (Op::enabled(), wanted()).
struct FamilyRegistration {
  FamilyRegistration(memsave_family_t family, void (*fn)(Registrar&), unsigned also = 0);
};

}  // namespace memsave
