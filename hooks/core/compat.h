// SPDX-License-Identifier: MIT
// compat.h: every difference between the LibTorch releases we build against, in one place.
//
// Note [Versions]: one source serves LibTorch 1.13 to 2.14. Where the C++ API differs, the
// difference is absorbed here, under a name that says what it is; the families and the
// machinery use those names and never test TORCH_VERSION themselves. Where stock's
// *behaviour* differs (what a composite calls, which layout a kernel picks), the fact is a
// constexpr flag here too, and the family says in a comment what stock does in each case.
// Built and tested: 1.13 (Debian 12), 2.6 (Debian 13, scripts/trixie.sh), 2.14 (Debian
// unstable, scripts/sid.sh). Each entry names the PyTorch change behind it.
#pragma once

#include <c10/util/intrusive_ptr.h>
#include <c10/util/python_stub.h>
#include <torch/csrc/autograd/function.h>
#include <torch/version.h>

#include <memory>
#include <string>
#include <utility>

#define MEMSAVE_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

// Note [Compiled autograd] (node.h) and Note [Compile tracing] (rules.h): what torch.compile
// needs of us, one switch (CMake MEMSAVE_COMPILED_AUTOGRAD): AUTO (2 here) serves it on 2.6
// and 2.14, the releases where it passes its tests; ON on any release from 2.6 on; OFF never.
// 2.14 (2026-12-07) needed three things 2.6 did not: the functional backward compiled
// autograd binds from 2.7 on (Note [Functional backward], compiled.cpp); AOTAutograd's
// on-disk cache off (on by default from 2.7 on: Note [AOTAutograd's cache], shim/environ.c),
// without which inductor loaded stock's graphs instead of tracing through our kernels; and
// convolution stand-ins that follow the weight (kConvStandInFollowsWeight, below).
#if !defined(MEMSAVE_WITH_COMPILED_AUTOGRAD) || MEMSAVE_WITH_COMPILED_AUTOGRAD == 2
#define MEMSAVE_COMPILED_AUTOGRAD                                     \
  ((MEMSAVE_TORCH_AT_LEAST(2, 6) && !MEMSAVE_TORCH_AT_LEAST(2, 7)) || \
   (MEMSAVE_TORCH_AT_LEAST(2, 14) && !MEMSAVE_TORCH_AT_LEAST(2, 15)))
#elif MEMSAVE_WITH_COMPILED_AUTOGRAD
#define MEMSAVE_COMPILED_AUTOGRAD MEMSAVE_TORCH_AT_LEAST(2, 6)
#else
#define MEMSAVE_COMPILED_AUTOGRAD 0
#endif
#define MEMSAVE_COMPILE_TRACING MEMSAVE_COMPILED_AUTOGRAD
// Note [Functional backward] (compiled.cpp): from 2.7 on, compiled autograd calls
// apply_with_saved on placeholders and has the node bind a functional backward for Python to
// trace (torch/csrc/dynamo/compiled_autograd.h, "Compiled Autograd and backward functions";
// pytorch#143296, "[compiled autograd] Proxy opaque nodes for built-in autograd nodes"); 2.6 traced the
// node's own ATen calls.
#define MEMSAVE_FUNCTIONAL_BACKWARD (MEMSAVE_COMPILED_AUTOGRAD && MEMSAVE_TORCH_AT_LEAST(2, 7))
// The thread-local dispatch modes that tell PyTorch's own tracing apart (2.x).
#define MEMSAVE_TRACING_MODES MEMSAVE_TORCH_AT_LEAST(2, 6)

// c10::Allocator: 2.3 (which added Allocator::clone) made allocate()
// non-const and copy_data() pure virtual.
#if MEMSAVE_TORCH_AT_LEAST(2, 3)
#define MEMSAVE_ALLOCATE_CONST
#define MEMSAVE_ALLOCATOR_COPY_DATA 1
#else
#define MEMSAVE_ALLOCATE_CONST const
#define MEMSAVE_ALLOCATOR_COPY_DATA 0
#endif

namespace memsave {

// The fallback reason of a call traced by torch.compile where this build does not serve the
// tracing (Note [Compile tracing] in rules.h): the report shows it, counted.
constexpr const char* kCompileTracingUnserved =
    MEMSAVE_TORCH_AT_LEAST(2, 7) ? "torch.compile tracing: not served on this LibTorch (tested on 2.6 and 2.14; docs/compile.md)"
                                 : "torch.compile tracing: not served in this build (MEMSAVE_COMPILED_AUTOGRAD=OFF)";

// Nodes. pytorch#181139 (relanded as #181782, merged April 2026; in 2.14) made autograd's
// nodes intrusively counted: Node derives from c10::intrusive_ptr_target instead of
// std::enable_shared_from_this, Tensor::grad_fn(), set_history, rebase_history, Edge and
// SavedVariable::unpack take c10::intrusive_ptr<Node>, torch::autograd::deleteNode is gone,
// and nodes are made with c10::make_intrusive. Detected from Node's base, not from the version number, so that a
// release in between builds whichever it has.
constexpr bool kIntrusiveNodes = std::is_base_of<c10::intrusive_ptr_target, torch::autograd::Node>::value;

template <class N>
using NodePtr = std::conditional_t<kIntrusiveNodes, c10::intrusive_ptr<N>, std::shared_ptr<N>>;

namespace compat_detail {
template <bool Intrusive>
struct Nodes;
template <>
struct Nodes<false> {
  // deleteNode releases deep graphs iteratively, as the engine expects. Called unqualified
  // on the node's own type, so that it is looked up (in torch::autograd, by argument) only
  // where this branch is used.
  template <class N, class... Args>
  static std::shared_ptr<N> make(Args&&... args) {
    return std::shared_ptr<N>(new N(std::forward<Args>(args)...), [](N* node) { deleteNode(node); });
  }
  template <class N>
  static auto self(N* node) {
    return node->shared_from_this();
  }
};
template <>
struct Nodes<true> {
  template <class N, class... Args>
  static auto make(Args&&... args) {
    return c10::make_intrusive<N>(std::forward<Args>(args)...);
  }
  template <class N>
  static auto self(N* node) {
    // A new owning reference to a node that is alive (we are inside one of its methods).
    return c10::intrusive_ptr<torch::autograd::Node>::unsafe_reclaim_from_nonowning(node);
  }
};
}  // namespace compat_detail

// Makes a node the way the engine expects.
template <class N, class... Args>
NodePtr<N> make_node(Args&&... args) {
  return compat_detail::Nodes<kIntrusiveNodes>::template make<N>(std::forward<Args>(args)...);
}

// An owning pointer to `node` from inside its own methods (shared_from_this before pytorch#181139).
template <class N>
auto self_ptr(N* node) {
  return compat_detail::Nodes<kIntrusiveNodes>::self(static_cast<torch::autograd::Node*>(node));
}

// The name stock's version-mismatch error gives the node that made a kept output: 2.14's
// SavedVariable::unpack names Node::forward_op_name() (name() without its "Backward<N>"
// suffix: "Relu"), earlier releases name() ("ReluBackward0").
template <class N>
auto version_error_name(const N& node, int) -> decltype(node.forward_op_name()) {
  return node.forward_op_name();
}
template <class N>
std::string version_error_name(const N& node, long) {
  return node.name();
}
inline std::string version_error_name(const torch::autograd::Node& node) { return version_error_name(node, 0); }

// Named tensors. at::Tensor::has_names is absent from 2.14's TensorBase (the change that
// removed it is not identified here). Where it is gone no tensor has names.
template <class T>
auto has_names(const T& t, int) -> decltype(t.has_names()) {
  return t.has_names();
}
template <class T>
bool has_names(const T&, long) {
  return false;
}
template <class T>
bool has_names(const T& t) {
  return has_names(t, 0);
}

#if MEMSAVE_COMPILE_TRACING
// The Python object of a tensor, or null. 2.14's PyObjectSlot has load_pyobj() and uses one
// global interpreter; 2.6 asks check_pyobj(pyobj_interpreter(), ignore_hermetic_tls), which
// raises for another interpreter's tensor (null here).
template <class Slot>
auto python_object(Slot* slot, int) -> decltype(slot->load_pyobj()) {
  return slot->load_pyobj();
}
template <class Slot>
PyObject* python_object(Slot* slot, long) {
  try {
    const auto obj = slot->check_pyobj(slot->pyobj_interpreter(), /*ignore_hermetic_tls=*/true);
    return obj ? *obj : nullptr;
  } catch (const c10::Error&) {
    return nullptr;
  }
}
template <class Slot>
PyObject* python_object(Slot* slot) {
  return python_object(slot, 0);
}
#endif

// Stock's behaviour, where it differs between the releases we build.
// 2.0: linear folds any contiguous N-D input into addmm
// (_flatten_nd_linear, the fold made before w.t()); 1.13 folds only a 3-D input
// (_flatten_3d_linear, a view made after w.t()).
constexpr bool kLinearFoldsAnyRank = MEMSAVE_TORCH_AT_LEAST(2, 0);
// 2.0: native_dropout's noise layout follows the input's in some releases and not others,
// so a non-contiguous input is left to stock there.
constexpr bool kDropoutNoiseLayoutVaries = MEMSAVE_TORCH_AT_LEAST(2, 0);
// Inductor's convolution_backward lowering under its layout optimisation (Note [Traced
// stand-in] in standin.h): 2.14's makes the incoming gradient and the weight of a 2-d
// convolution channels-last (torch/_inductor/kernel/conv.py, require_channels_last), so a
// stand-in that followed the gradient froze the gradient's layout first and made inductor
// keep it twice; the stand-in follows the weight there. 2.6's took the gradient as it was.
// Set from 2.7 on; tested on 2.14 only (2.7 to 2.13 serve no compile by default).
constexpr bool kConvStandInFollowsWeight = MEMSAVE_TORCH_AT_LEAST(2, 7);
// 2.0: MeanBackward1 (mean.dim) keeps sizes and the element count only, not the input.
constexpr bool kStockMeanPoolMinimal = MEMSAVE_TORCH_AT_LEAST(2, 0);

}  // namespace memsave
