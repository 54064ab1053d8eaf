// SPDX-License-Identifier: MIT
// rules.cpp: Note [Fallback] and Note [Reusing the incoming gradient] (rules.h).
#include "rules.h"

#include <ATen/EmptyTensor.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/csrc/autograd/variable.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/jit/runtime/interpreter.h>

#include <map>
#include <mutex>
#include <string>

#include "compat.h"

namespace memsave {

const char* unsupported_tensor(const at::Tensor& t) {
  if (!t.defined()) return nullptr;
  if (t.layout() != c10::kStrided) return "non-strided layout (sparse or other)";
  if (t.is_mkldnn()) return "mkldnn tensor";
  if (t.is_quantized()) return "quantized tensor";
  if (t.is_nested()) return "nested tensor";
  switch (t.scalar_type()) {
    case at::kFloat:
    case at::kDouble:
    case at::kBFloat16:
    case at::kHalf:
      break;
    default:
      return "dtype not handled (complex or other)";
  }
  if (t._fw_grad(/*level=*/0).defined()) return "forward-mode AD (dual tensor)";
  return nullptr;
}

bool python_keys(c10::DispatchKeySet ks) {
  const c10::DispatchKeySet all = ks | c10::impl::tls_local_dispatch_key_set().included_;
  return all.has(c10::DispatchKey::Python) || all.has(c10::DispatchKey::PythonTLSSnapshot);
}

const char* unsupported_keys(c10::DispatchKeySet ks, bool traced) {
  using K = c10::DispatchKey;
  const c10::DispatchKeySet tls_included = c10::impl::tls_local_dispatch_key_set().included_;
  const c10::DispatchKeySet all = ks | tls_included;
  if (!traced && python_keys(ks))
    return tracing_modes() ? kCompileTracingUnserved : "Python dispatch (subclass, mode, or tracing not served)";
  if (all.has(K::FuncTorchDynamicLayerBackMode) || all.has(K::FuncTorchDynamicLayerFrontMode) ||
      all.has(K::FuncTorchGradWrapper) || all.has(K::FuncTorchBatched))
    return "functorch transform";
  return nullptr;
}

const char* uncovered_reason(const c10::OperatorName& op) {
  // Keyed by the dispatcher's own OperatorName, which lives as long as the operator; the
  // strings are never freed (the shim's reason table points at them).
  static std::mutex lock;
  static auto* reasons = new std::map<const c10::OperatorName*, std::string>;
  std::lock_guard<std::mutex> guard(lock);
  std::string& r = (*reasons)[&op];
  if (r.empty()) r = "route not covered: " + op.name + (op.overload_name.empty() ? "" : "." + op.overload_name);
  return r.c_str();
}

bool in_autodiff_graph() {
  // Empty (one thread-local read) outside TorchScript's interpreter; inside it, one entry
  // per frame, named after the code it runs.
  for (const torch::jit::StackEntry& e : torch::jit::currentCallstack())
    if (e.filename == "<forward op>") return true;
  return false;
}

bool gradient_is_reusable(const at::Tensor& grad) {
  // Nothing records what we do: no create_graph, not traced, a plain dense tensor.
  if (at::GradMode::is_enabled() || tracing() || !grad.defined() || grad.layout() != c10::kStrided || grad.requires_grad() ||
      grad.is_conj() || grad.is_neg() || grad._is_zerotensor() || !grad.is_non_overlapping_and_dense())
    return false;
  // Nobody else can see its memory: not a view, the only reference to it and to its storage,
  // and a storage from an allocator (from_blob/from_numpy storages are not resizable).
  return !grad.is_view() && grad.use_count() == 1 && grad.has_storage() && grad.storage().use_count() == 1 &&
         grad.storage().resizable();
}

std::string stock_version_hint() {
  // Made directly on the CPU (no dispatch: no mode or tracing sees it), no elements.
  at::Tensor t(at::detail::empty_cpu({0}, at::TensorOptions().dtype(at::kFloat)));
  torch::autograd::SavedVariable saved(t, /*is_output=*/false);
  try {
    // Both raise: a tensor without a version counter (inference mode) gives no hint.
    torch::autograd::impl::bump_version(t);
    (void)saved.unpack();
  } catch (const c10::Error& e) {
    const std::string msg = e.what_without_backtrace();
    const std::string marker = " instead.";
    const size_t at = msg.find(marker);
    if (at != std::string::npos) {
      const size_t from = at + marker.size(), end = msg.find('\n', from);
      return msg.substr(from, end == std::string::npos ? std::string::npos : end - from);
    }
  }
  return "";
}

}  // namespace memsave
