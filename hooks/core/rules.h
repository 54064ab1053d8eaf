// SPDX-License-Identifier: MIT
// rules.h: which calls take our path (Note [Fallback]) and when backward may write into its
// incoming gradient (Note [Reusing the incoming gradient]).
#pragma once

#include <string>

#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>
#include <ATen/core/operator_name.h>
#include <c10/core/DispatchKeySet.h>

#include <cstdint>

namespace memsave {

// Note [Bitwise contract]: every node we build calls the same backward kernel, with the
// same arguments, that stock's node calls, so forward outputs and gradients are bitwise
// identical to stock for every requires_grad pattern. We only change what is kept between
// forward and backward. Where we cannot keep that promise, we call stock (Note [Fallback]).
//
// Note [Fallback]: a call goes to stock, unchanged, when (the route of Note [Kernel skeleton]
// in kernel.h, in this order)
//   - the family is off (MEMSAVE_OPS, memsave_set_enabled(0)) or grad mode is off,
//     or no differentiable argument requires grad  (not counted: stock builds nothing);
//   - stock already keeps the minimum for this requires_grad pattern (counted as passthrough);
//   - the call is one we do not handle: forward-mode AD, functorch or Python-dispatch keys
//     (torch.func, __torch_dispatch__ subclasses and modes; compile tracing is served: Note
//     [Compile tracing]), non-strided layouts,
//     mkldnn, quantized, nested, complex or unknown dtypes, or a case the family names
//     (counted as a fallback, with the reason kept for the report);
//   - the call runs inside the forward of a TorchScript differentiable graph (Note
//     [TorchScript autodiff]): its inputs arrive detached, so nothing requires grad, but the
//     graph's own backward keeps what it needs (counted as a fallback, reason kAutodiffGraph).
//
// Note [TorchScript autodiff]: TorchScript's graph executor, with optimisation on (the
// default), groups runs of operators that its own autodiff can differentiate (batch norm,
// non-in-place ReLU and friends, pooling, dropout; never convolution) into a differentiable
// graph, from the second call of a method on. Its forward runs those operators on detached
// inputs (no autograd node of ours or of stock), and one DifferentiableGraphBackward keeps
// the inputs and outputs its symbolic backward needs. We cannot take those calls without
// changing the gradients' bits (the symbolic backward differs from autograd's in -0.0 and
// NaN), so we count them: the executor names that forward "<forward op>", which is how
// in_autodiff_graph() recognises it (docs/pytorch.md §5).

// Why `t` cannot take our path, or nullptr. Undefined tensors are fine.
const char* unsupported_tensor(const at::Tensor& t);
// Whether the call has the Python dispatch keys (on its tensors or in the thread's state).
bool python_keys(c10::DispatchKeySet ks);
// Why the current dispatch state cannot take our path, or nullptr; `traced`: the Python keys
// are compile tracing's (Note [Compile tracing]), which we serve.
const char* unsupported_keys(c10::DispatchKeySet ks, bool traced);

// Note [Compile tracing]: torch.compile's AOTAutograd (and make_fx) runs the program once with
// fake tensors wrapped in FunctionalTensors, through the dispatcher, and records every ATen
// call into a joint forward-backward graph; its partitioner then saves for backward exactly
// the forward values the backward part reads. Our kernels serve that trace (2.6, compile.cpp):
// the node is built as in eager, its forward below autograd is recorded as stock's would be,
// and, inside Tracing, every piece is graph-friendly (Note [Compiled autograd] in node.h): masks
// packed and unpacked with tensor operations, stand-ins from empty_strided, no raw memory, no
// data-dependent check, no pieces, no borrowed live input. The node remembers it was traced
// and takes the same path in backward, which the trace records too. So the compiled backward
// reads what our node keeps (bits, offsets, statistics) and the partitioner saves only that.
// Served: calls with the Python keys while one of PyTorch's own tracing modes is set (fake,
// proxy, functional) and no mode of the user's, on tensors that are FakeTensors,
// FunctionalTensors or plain, with static sizes. Everything else with the Python keys is a
// counted fallback: a user's __torch_dispatch__ mode or tensor subclass (which could not take
// a plain stand-in), symbolic sizes (dynamic shapes), and what a family names (hardtanh on CPU,
// whose NaN check reads values; dropout, whose traced random stream we do not reproduce).
// A traced call counts as substituted with no bytes (fakes hold none): the compiled graph
// runs later without our kernels, once per compilation, not once per step.
bool compile_tracing();
// PyTorch's own tracing modes are set (fake, proxy, functional) and no mode of the user's:
// known wherever the TLS exists (2.x), served or not.
bool tracing_modes();
// Why a tensor of a traced call cannot take our path, or nullptr.
const char* unsupported_traced_tensor(const at::Tensor& t);

// Note [Uncovered route] (kernel.h): "route not covered: aten::NAME", one string per operator
// for the life of the process (the shim keeps the pointer).
const char* uncovered_reason(const c10::OperatorName& op);

// Note [TorchScript autodiff]: true inside the forward of a TorchScript differentiable graph.
bool in_autodiff_graph();
constexpr const char* kAutodiffGraph = "TorchScript differentiable graph (its own backward keeps the inputs)";

// Note [Compiled autograd] (node.h), Note [Compile tracing]: true while compiled autograd
// traces one of our nodes' backward, or while AOTAutograd traces a forward we serve or the
// backward of a node built then; every piece then takes its graph-friendly path.
bool tracing();
// Sets it for one scope (kernel.h, node.h, compiled.cpp).
class Tracing {
 public:
  Tracing();
  ~Tracing();
  Tracing(const Tracing&) = delete;
  Tracing& operator=(const Tracing&) = delete;

 private:
  bool previous_;
};

// Below ADInplaceOrView (plain tensors, no view tracking), for what a backward computes on its
// own temporaries; not while traced: in-place ops on views made under that guard were missing
// from compiled autograd's graph (Note [Compiled autograd] in node.h).
class PlainUnlessTraced {
 public:
  PlainUnlessTraced() {
    if (!tracing()) guard_.emplace();
  }

 private:
  c10::optional<at::AutoDispatchBelowADInplaceOrView> guard_;
};

// Tensor bytes of a tensor's elements (numel x element size); 0 for undefined.
inline uint64_t tensor_bytes(const at::Tensor& t) {
  return t.defined() ? static_cast<uint64_t>(t.numel()) * t.element_size() : 0;
}

// Note [Reusing the incoming gradient]: a backward that maps each element of its incoming
// gradient to one element of its result, with the same sizes and strides (ReLU family, batch
// norm in eval with only the input's gradient), may write its result into the incoming
// gradient's memory instead of a new tensor, when nothing else can see that memory: grad
// mode is off (no create_graph: the engine records nothing), the tensor is not a view, this
// node holds the only reference to it and to its storage (hooks, retain_grad, captured
// gradients of autograd.grad, the other branch of an addition and detached aliases all hold
// references), and the storage came from an allocator (not from_blob/from_numpy). The
// engine's InputBuffer relies on the same use-count rule to accumulate in place. The values
// are those of stock's kernel, run on the same elements (its out= form with the result
// aliasing the gradient, or in pieces copied back); only the result's address differs, so
// the peak of that backward step loses one activation.
bool gradient_is_reusable(const at::Tensor& grad);

// The hint stock's SavedVariable::unpack ends its version-mismatch error with (whatever
// follows "instead."), as this LibTorch words it under the current anomaly mode: read from
// stock itself, on a tensor of no elements, because the wording changes between releases
// (2.14 added ", check_nan=False"). For nodes that check a version without a SavedVariable.
std::string stock_version_hint();

}  // namespace memsave
