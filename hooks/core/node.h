// SPDX-License-Identifier: MIT
// node.h: the base of every node we build. It owns what all of them do alike: the lock, the
// one incoming gradient, "backward through the graph a second time", unpacking what was kept
// in stock's order before anything else, and the early return when no gradient is wanted;
// and, on 2.6 and later, what compiled autograd asks of a node (Note [Compiled autograd]).
#pragma once

#include <torch/csrc/autograd/function.h>

#include <mutex>

#include "fields.h"
#include "rules.h"
#include "shared.h"

// Note [Compiled autograd]: with compiled autograd on (2.x: torch._dynamo.compiled_autograd,
// torch._dynamo.config.compiled_autograd), backward does not run the nodes one by one. It
// asks each node of the graph for compiled_args(): the tensors it keeps, which become inputs
// of one traced graph, and every other value the node's backward depends on, which key the
// cache of traced graphs. On a miss it calls apply_with_saved() with fake tensors in place of
// the incoming gradients and of the kept tensors, and traces the ATen calls of our backward
// into an FX graph, which a torch.compile backend (aot_eager, inductor) compiles; later
// backwards with the same keys run that graph without calling our nodes at all.
// Each node describes its fields once (fields(), a Fields visitor): compiled_args collects
// them, apply_with_saved swaps the kept tensors for their fakes around apply(). While tracing
// (tracing() in rules.h) backward takes its graph-friendly path only: stand-ins from
// empty_strided, never a borrowed live input or an untouched mapping (Note [Untouched
// stand-in]); masks unpacked with tensor ops, never raw memory; no incoming gradient reused,
// no pieces, no data-dependent checks. The traced graph then computes what our node computes,
// with the same backward kernels, from what our node keeps: the eager forward's savings hold
// under a compiled backward. compiled_args raises stock's errors first (backward twice, a kept
// tensor modified in place), as stock's nodes do when they unpack their SavedVariables there.
// 1.13 has no compiled autograd; before 2.6 its node API differed, so there our nodes keep
// Node's default (compiled autograd raises "compiled_args not implemented").
// From 2.7 on compiled autograd no longer traces apply(): apply_with_saved binds a functional
// backward that Python traces later (Note [Functional backward], compiled.cpp); the node's
// fields() and graph-friendly path serve both protocols.
// Built by default (CMake MEMSAVE_COMPILED_AUTOGRAD=AUTO) on 2.6 and 2.14, the releases it is
// tested on (tests/test_compiled_autograd.py: every node class alone, with NaN, inf and -0.0
// in the input, and small networks of all of them, two steps each, the second running the
// cached graph; bitwise equal to stock under aot_eager, eager and inductor, with mkldnn off as
// in every 2.x test here). Other releases from 2.6 on take it with
// MEMSAVE_COMPILED_AUTOGRAD=ON; OFF keeps Node's default everywhere.
// mkldnn: on this development machine (Debian 13's oneDNN, an AVX-512 AMD EPYC), stock's own
// convolution_backward for the input gradient, called 12 times on the same arguments, gives
// NaN at different places in some calls; gradients computed through it differ from run to run
// whoever calls it, so they are compared with mkldnn off.
// The switch, MEMSAVE_COMPILED_AUTOGRAD, is in shared.h.

// Note [Live activations]: the report's sums (kept, stock) add up every node of the run and
// grow with every training step; what compares with a peak is what the nodes alive keep at
// once. kernel<O> gives each node it counts its footprint's activations (ours and stock's,
// hold()); they are live (shared state kept_live, stock_live, with their largest values
// kept_live_peak, stock_live_peak) until the node drops them: when the engine calls
// release_variables() after a backward without retain_graph, or when the node is destroyed
// (a graph dropped without backward, or kept with retain_graph), whichever comes first, once.
// (Where deleteNode is the nodes' deleter, make_node in compat.h, it calls release_variables()
// before the destructor; with 2.14's intrusive nodes the destructor drops them.) Stock's node
// would keep its tensors exactly as long, so both figures move together. A traced node (Note
// [Compile tracing]) holds nothing, as it counts nothing. tests/test_python_module.py checks
// the live figures over training steps, retain_graph and a graph dropped without backward.

namespace memsave {

// What every node of ours has, apart from the type of what it unpacks.
class NodeBase : public torch::autograd::Node {
 public:
  ~NodeBase() override { drop_held(); }

  // Built under compile tracing (Note [Compile tracing] in rules.h): backward is traced too.
  void set_traced() { traced_ = true; }

  // Note [Live activations]: the activation bytes this node keeps and stock's would, live
  // until drop_held(). Called once, by kernel<O>, before the output leaves the kernel.
  void hold(uint64_t kept, uint64_t stock) {
    held_kept_ = kept;
    held_stock_ = stock;
    __atomic_store_n(&holding_, true, __ATOMIC_RELEASE);
    live_add(kept, stock);
  }

#if MEMSAVE_COMPILED_AUTOGRAD
  // Note [Compiled autograd] (compiled.cpp). Declared in both of the forms LibTorch's Node has
  // had (const from 2.7 on); whichever matches overrides it.
  void compiled_args(torch::dynamo::autograd::CompiledNodeArgs& args);
  void compiled_args(torch::dynamo::autograd::CompiledNodeArgs& args) const;
  torch::autograd::variable_list apply_with_saved(const torch::autograd::variable_list& inputs,
                                                  torch::dynamo::autograd::SwapSavedVariables& saved) override;
#if MEMSAVE_FUNCTIONAL_BACKWARD
  // Note [Functional backward] (compiled.cpp): backward on the kept tensors `args` hold.
  torch::autograd::variable_list apply_functional(const torch::autograd::variable_list& grads,
                                                  const std::vector<c10::IValue>& args);
#endif
#endif

 protected:
  // Whether backward computes gradient `i`: the engine's task_should_compute_output, or, in
  // a functional backward (Note [Functional backward]), what compiled autograd packed.
  bool wanted(size_t i) const { return needs_ ? (*needs_)[i] : task_should_compute_output(i); }
  // Inside a functional backward: the kept tensors are the graph's, already checked.
  bool functional() const { return needs_ != nullptr; }
  // Backward with the lock held, the kept tensors as they are now and `needs_` set.
  virtual torch::autograd::variable_list apply_locked(const torch::autograd::variable_list& grads) = 0;

  // Visits everything backward depends on (fields.h); the order is fixed per node class.
  virtual void fields(Fields& f) = 0;
  // Raises what apply() would raise before computing anything: backward twice, a version
  // mismatch of a kept tensor.
  virtual void check_unpack() = 0;

  // No longer live (Note [Live activations]): the first call takes them off, later ones do nothing.
  void drop_held() {
    if (__atomic_exchange_n(&holding_, false, __ATOMIC_ACQ_REL)) live_sub(held_kept_, held_stock_);
  }

  bool traced_ = false;
  const std::vector<bool>* needs_ = nullptr;

 private:
  bool holding_ = false;
  uint64_t held_kept_ = 0, held_stock_ = 0;
};

// `Saved` is what a node's unpack returns: the tensors it kept, unpacked (a tensor, a struct
// of them, or an empty struct for nodes that keep geometry only).
//
// Stock's node unpacks its SavedVariables first, so a second backward (or a version
// mismatch) raises even when the incoming gradient is undefined or no gradient is wanted;
// so does apply() here. A node without SavedVariables raises stock's message from the
// released flag.
template <class Saved>
class MemsaveNode : public NodeBase {
 public:
  void release_variables() final {
    std::lock_guard<std::mutex> lock(mutex_);
    released_ = true;
    release();
    drop_held();
  }

  torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) final {
    std::lock_guard<std::mutex> lock(mutex_);
    c10::optional<Tracing> tracing_scope;
    if (traced_) tracing_scope.emplace();
    return apply_locked(grads);
  }

 protected:
  torch::autograd::variable_list apply_locked(const torch::autograd::variable_list& grads) final {
    TORCH_INTERNAL_ASSERT(grads.size() == 1, name(), ": expected 1 gradient, got ", grads.size());
    TORCH_CHECK(functional() || !released_, torch::autograd::ERR_BACKWARD_TWICE);
    const Saved saved = unpack();
    torch::autograd::variable_list out(needs_ ? needs_->size() : num_outputs());
    bool any = false;
    for (size_t i = 0; i < out.size(); i++) any = any || wanted(i);
    if (!any || !grads[0].defined()) return out;
    backward(grads[0], saved, out);
    return out;
  }
  void check_unpack() final {
    std::lock_guard<std::mutex> lock(mutex_);
    TORCH_CHECK(!released_, torch::autograd::ERR_BACKWARD_TWICE);
    (void)unpack();
  }
  // Unpacks what the node kept, in stock's order (called with the lock held).
  virtual Saved unpack() = 0;
  // Drops what the node kept (release_variables, with the lock held).
  virtual void release() {}
  // Fills the wanted entries of `out` (wanted()) from the incoming
  // gradient, which is defined, with stock's backward kernel.
  virtual void backward(const at::Tensor& grad, const Saved& saved, torch::autograd::variable_list& out) = 0;

 private:
  bool released_ = false;
};

// Saved of a node that keeps geometry and arguments only.
struct Nothing {};

// release() of a node that keeps these SavedVariables.
template <class... Saved>
void reset_data(Saved&... saved) {
  (saved.reset_data(), ...);
}

}  // namespace memsave
