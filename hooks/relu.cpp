// SPDX-License-Identifier: MIT
// relu.cpp: relu, threshold, leaky_relu and hardtanh (which relu6 reaches), out-of-place and
// in-place, on AutogradCPU/AutogradCUDA, with nodes that keep a 1-bit mask.
//
// Stock keeps a tensor of the activation's size: ReluBackward0 and LeakyReluBackward1
// (leaky_relu_) keep the output; LeakyReluBackward0, HardtanhBackward0 and ThresholdBackward0
// keep the input; for hardtanh_ (relu6_) and threshold_ stock keeps a clone of the input taken
// before the op, so the in-place op allocates a full copy (PyTorch issue #95432).
// Here: each backward kernel only asks one question per element of the tensor stock keeps
// (threshold_backward: x <= t?, leaky_relu_backward: x > 0?, hardtanh_backward: x <= min or
// x >= max?). We keep the answer, one bit per element (hooks/bitmask.h), and in backward we
// rebuild a proxy tensor whose elements give the same answers, with the same strides, and
// call the same kernel with the same arguments (Note [Proxy]).
#include <ATen/core/grad_mode.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/ops/as_strided.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_strided.h>
#include <ATen/ops/expand.h>
#include <ATen/ops/hardtanh_backward.h>
#include <ATen/ops/isnan.h>
#include <ATen/ops/leaky_relu_backward.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/threshold_backward.h>
#include <torch/csrc/autograd/anomaly_mode.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/csrc/autograd/variable.h>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include "bitmask.h"
#include "common.h"

namespace memsave {
namespace {

using torch::autograd::Edge;
using torch::autograd::Node;
using torch::autograd::SavedVariable;
using torch::autograd::variable_list;

// Note [Proxy]: the mask records, per element, which branch stock's backward kernel would
// take on the tensor stock keeps. The proxy holds one value that takes the "gradient passes"
// branch where the bit is set and one that takes the other branch elsewhere, has the strides
// of the tensor stock keeps (they decide the gradient's strides), and is passed where stock
// passes that tensor. Each kernel's result depends on that tensor only through the branch,
// so the gradient is bitwise stock's.
//   relu, threshold: threshold_backward passes where !(x <= t); proxy +inf / -inf (NaN
//     where t is +inf, as nothing but NaN passes then).
//   leaky_relu: leaky_relu_backward takes grad where x > 0, grad * slope elsewhere; 1 / 0.
//   hardtanh: hardtanh_backward passes where !(x <= min || x >= max); a value strictly
//     inside / -inf.
// The test that makes the mask compares in the tensor's dtype; stock's kernels compare
// bfloat16/half against the bound rounded to that dtype (1.13) or in float (2.x). When the
// two differ (a bound not exactly representable in the dtype) the mask comes from stock's
// own kernel run on ones (mask_from_kernel), so it is right by construction.
//
// Note [NaN in hardtanh on CPU]: stock's CPU hardtanh_backward lets the gradient of a NaN
// input through in its scalar loop (NaN <= min is false) and blocks it in its vector loop
// ((NaN > min) & (NaN < max) is false), so the result depends on where the element falls in
// the iteration. A proxy cannot reproduce that, so a CPU input with a NaN goes to stock.
// threshold_backward and leaky_relu_backward treat NaN alike in both loops.

enum class Op { kRelu, kThreshold, kLeakyRelu, kHardtanh };

// Which tensor stock's node keeps, for the version check.
enum class Kept {
  kOutput,  // relu, relu_, leaky_relu_: the output (version checked, "output 0 of" in the error)
  kInput,   // threshold, leaky_relu, hardtanh: the input (version checked)
  kClone,   // threshold_, hardtanh_: a private clone, which nothing can modify
};

constexpr int num_args(Op op) {
  return op == Op::kRelu ? 1 : op == Op::kLeakyRelu ? 2 : 3;
}

constexpr Kept kept(Op op, bool inplace) {
  if (op == Op::kRelu) return Kept::kOutput;
  if (op == Op::kLeakyRelu) return inplace ? Kept::kOutput : Kept::kInput;
  return inplace ? Kept::kClone : Kept::kInput;
}

constexpr const char* node_name(Op op) {
  return op == Op::kRelu        ? "MemsaveReluBackward"
         : op == Op::kThreshold ? "MemsaveThresholdBackward"
         : op == Op::kLeakyRelu ? "MemsaveLeakyReluBackward"
                                : "MemsaveHardtanhBackward";
}

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double max_finite(at::ScalarType t) {
  switch (t) {
    case at::kDouble: return std::numeric_limits<double>::max();
    case at::kBFloat16: return static_cast<double>(std::numeric_limits<c10::BFloat16>::max());
    case at::kHalf: return static_cast<double>(std::numeric_limits<c10::Half>::max());
    default: return static_cast<double>(std::numeric_limits<float>::max());
  }
}

// `v` rounded to `t` (as Scalar::to does), saturating to +-inf instead of overflowing.
double round_to(double v, at::ScalarType t) {
  if (std::isnan(v) || t == at::kDouble) return v;
  if (std::abs(v) > static_cast<double>(std::numeric_limits<float>::max())) return v > 0 ? kInf : -kInf;
  const float f = static_cast<float>(v);
  switch (t) {
    case at::kBFloat16: return static_cast<float>(c10::BFloat16(f));
    case at::kHalf: return static_cast<float>(c10::Half(f));
    default: return f;
  }
}

// The bound as the kernels may compare it: rounded to the dtype, or to float (Note [Proxy]).
double round_low(double v, at::ScalarType t) { return std::max(round_to(v, t), round_to(v, t == at::kDouble ? t : at::kFloat)); }
double round_high(double v, at::ScalarType t) { return std::min(round_to(v, t), round_to(v, t == at::kDouble ? t : at::kFloat)); }

bool real_scalar(const at::Scalar& s) { return s.isFloatingPoint() || s.isIntegral(/*includeBool=*/false); }

// Whether the mask test, comparing against `s` rounded to `t`, decides every element as
// stock's kernels do in every version (Note [Proxy]).
bool bound_is_exact(const at::Scalar& s, at::ScalarType t) {
  if (s.isIntegral(false)) {
    const int64_t i = s.toLong();
    if (i > (int64_t{1} << 53) || i < -(int64_t{1} << 53)) return false;  // not exact in double
  }
  const double v = s.toDouble();
  if (std::isnan(v) || std::isinf(v)) return true;
  if (std::abs(v) > max_finite(t)) return false;  // stock's conversion throws; let its kernel say so
  return t == at::kFloat || t == at::kDouble || round_to(v, t) == round_to(v, at::kFloat);
}

// A value of dtype `t` strictly inside (min, max) for every way the kernels round the bounds.
c10::optional<double> hardtanh_inside(double min, double max, at::ScalarType t) {
  if (std::isnan(min) || std::isnan(max)) return c10::nullopt;
  const double lo = round_low(min, t), hi = round_high(max, t);
  double c;
  if (lo == -kInf && hi == kInf) c = 0;
  else if (lo == -kInf) c = -max_finite(t);
  else if (hi == kInf) c = max_finite(t);
  else c = round_to(lo / 2 + hi / 2, t);
  if (lo < c && c < hi) return c;
  return c10::nullopt;
}

struct Params {
  at::Scalar a, b;  // threshold; negative_slope; min_val, max_val
};

template <Op kOp>
Params params_of(const c10::IValue* args) {
  switch (kOp) {
    case Op::kRelu: return {at::Scalar(0), at::Scalar(0)};
    case Op::kThreshold: return {args[1].toScalar(), at::Scalar(0)};
    case Op::kLeakyRelu: return {args[1].toScalar(), at::Scalar(0)};
    case Op::kHardtanh: return {args[1].toScalar(), args[2].toScalar()};
  }
  return {};
}

// The test whose outcome the mask keeps, and the tensor stock's kernel would test.
constexpr BitMask::Test test_of(Op op) {
  return op == Op::kLeakyRelu ? BitMask::Test::kGreater
         : op == Op::kHardtanh ? BitMask::Test::kInside
                               : BitMask::Test::kNotAtMost;
}

// The bounds of that test: leaky_relu compares with 0, not with its slope.
Params test_bounds(Op op, const Params& p) {
  switch (op) {
    case Op::kRelu:
    case Op::kLeakyRelu: return {at::Scalar(0), at::Scalar(0)};
    case Op::kThreshold: return {p.a, at::Scalar(0)};
    case Op::kHardtanh: return p;
  }
  return p;
}

// The mask of `t` by running stock's backward kernel on ones: the element passes where the
// result is nonzero. Used for bounds the test cannot compare exactly (Note [Proxy]).
at::Tensor pass_from_kernel(Op op, const at::Tensor& t, const Params& p) {
  at::Tensor ones = at::ones({}, t.options()).expand(t.sizes());
  at::Tensor out = op == Op::kHardtanh ? at::hardtanh_backward(ones, t, p.a, p.b) : at::threshold_backward(ones, t, p.a);
  return out.ne(0);
}

// Packs the mask of `t` into `mask`; returns why it cannot, or nullptr.
const char* make_mask(Op op, const at::Tensor& t, const Params& params, BitMask* mask) {
  at::AutoDispatchBelowADInplaceOrView guard;
  const Params p = test_bounds(op, params);
  const at::ScalarType dtype = t.scalar_type();
  // Note [NaN in hardtanh on CPU]
  const bool check_nan = op == Op::kHardtanh && t.is_cpu();
  bool saw_nan = false;
  if (bound_is_exact(p.a, dtype) && bound_is_exact(p.b, dtype)) {
    *mask = BitMask(t, test_of(op), p.a.toDouble(), p.b.toDouble(), check_nan ? &saw_nan : nullptr);
  } else {
    try {
      *mask = BitMask(pass_from_kernel(op, t, p), t);
      if (check_nan) saw_nan = at::isnan(t).any().item<bool>();
    } catch (const c10::Error&) {
      return "stock's backward kernel rejects this dtype or bound";
    }
  }
  return saw_nan ? "NaN input to hardtanh on CPU (stock's gradient depends on the position)" : nullptr;
}

// Checks, before any node is made, whether the call can take our path.
template <Op kOp, bool kInplace>
const char* unsupported_call(c10::DispatchKeySet ks, const at::Tensor& self, const Params& p) {
  if (const char* why = unsupported_keys(ks)) return why;
  if (const char* why = unsupported_tensor(self)) return why;
  // Stock's check_inplace raises for a leaf; views need CopySlices: both are stock's business.
  if (kInplace && self.is_view()) return "in-place on a view";
  if (kInplace && self.is_leaf()) return "in-place on a leaf that requires grad";
  if (!real_scalar(p.a) || !real_scalar(p.b)) return "non-real scalar argument";
  // relu's mask comes from its output, which is always a fresh dense tensor.
  if (!(kOp == Op::kRelu && !kInplace) && !BitMask::keeps_strides(self)) return "input with overlapping elements";
  if (kOp == Op::kHardtanh && !hardtanh_inside(p.a.toDouble(), p.b.toDouble(), self.scalar_type()))
    return "hardtanh bounds with no value strictly between them (or NaN)";
  return nullptr;
}

struct MemsaveReluFamilyBackward final : public Node {
  MemsaveReluFamilyBackward(Op op, bool inplace, Params params) : op_(op), inplace_(inplace), params_(std::move(params)) {}

  std::string name() const override { return node_name(op_); }

  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    bits_.reset_data();
  }

  // Keeps the mask and, unless stock keeps a private clone, the version of the tensor
  // stock keeps, so that an in-place change of it raises stock's error in backward.
  void save(BitMask mask, const at::Tensor& kept, Kept what) {
    kept_ = what;
    options_ = kept.options();
    bits_ = SavedVariable(mask.take_bits(), /*is_output=*/false);
    mask_ = std::move(mask);
    if (what != Kept::kClone) {
      version_ = torch::autograd::impl::version_counter(kept);
      saved_version_ = version_.current_version();
    }
    const at::ScalarType t = options_.dtype().toScalarType();
    switch (op_) {
      case Op::kRelu:
      case Op::kThreshold:
        set_ = params_.a.toDouble() == kInf ? kNaN : kInf;
        unset_ = -kInf;
        break;
      case Op::kLeakyRelu:
        set_ = 1;
        unset_ = 0;
        break;
      case Op::kHardtanh:
        set_ = *hardtanh_inside(params_.a.toDouble(), params_.b.toDouble(), t);
        unset_ = -kInf;
        break;
    }
  }

  variable_list apply(variable_list&& grads) override;

 private:
  void check_version() const;
  at::Tensor proxy(const at::Tensor& bits);
  at::Tensor backward(const at::Tensor& grad, const at::Tensor& proxy) const;
  // Note [Backward in chunks].
  static constexpr int64_t kChunk = int64_t{1} << 16;
  bool can_chunk(const at::Tensor& grad, const at::Tensor& bits) const;
  at::Tensor backward_in_chunks(const at::Tensor& grad, const at::Tensor& bits) const;

  const Op op_;
  const bool inplace_;
  const Params params_;
  Kept kept_ = Kept::kClone;
  at::TensorOptions options_;
  BitMask mask_;  // the layout; the bytes are in bits_
  SavedVariable bits_;
  double set_ = 1, unset_ = 0;
  c10::VariableVersion version_{c10::VariableVersion::DISABLED};
  uint32_t saved_version_ = 0;
};

// Stock's SavedVariable::unpack error, with our node's name. For an input, stock also names
// the grad_fn the input has at backward time, which we do not keep.
void MemsaveReluFamilyBackward::check_version() const {
  if (!version_.enabled() || version_.current_version() == saved_version_) return;
  std::ostringstream msg;
  msg << "one of the variables needed for gradient computation has been modified by an inplace operation: ["
      << c10::toString(options_.computeDispatchKey()) << c10::toString(options_.dtype().toScalarType()) << "Type "
      << at::IntArrayRef(mask_.sizes()) << "]";
  if (kept_ == Kept::kOutput) msg << ", which is output 0 of " << name() << ",";
  msg << " is at version " << version_.current_version() << "; expected version " << saved_version_ << " instead.";
  if (!torch::autograd::AnomalyMode::is_enabled()) {
    msg << " Hint: enable anomaly detection to find the operation that failed to compute its gradient, with "
           "torch.autograd.set_detect_anomaly(True).";
  } else {
    msg << " Hint: the backtrace further above shows the operation that failed to compute its gradient. The "
           "variable in question was changed in there or anywhere later. Good luck!";
  }
  TORCH_CHECK(false, msg.str());
}

// The proxy of Note [Proxy]. Under create_graph it carries the gradient edge of the tensor
// stock keeps (this node for an output; the input's edge, which stock's clone also leads
// to, otherwise), so that the double-backward graph has stock's shape: the zero gradient
// that threshold_backward & co. send to their `self` reaches the same node.
at::Tensor MemsaveReluFamilyBackward::proxy(const at::Tensor& bits) {
  at::Tensor p = mask_.unpack_bits(bits, options_.dtype().toScalarType(), set_, unset_);
  if (!at::GradMode::is_enabled()) return p;
  Edge edge = kept_ == Kept::kOutput ? Edge(shared_from_this(), 0) : next_edge(0);
  return torch::autograd::make_variable(p, std::move(edge));
}

// The call stock's node makes, with the proxy in place of the tensor it keeps.
at::Tensor MemsaveReluFamilyBackward::backward(const at::Tensor& grad, const at::Tensor& proxy) const {
  switch (op_) {
    case Op::kRelu: return at::threshold_backward(grad, proxy, 0);
    case Op::kThreshold: return at::threshold_backward(grad, proxy, params_.a);
    case Op::kLeakyRelu: return at::leaky_relu_backward(grad, proxy, params_.a, /*self_is_result=*/inplace_);
    case Op::kHardtanh: return at::hardtanh_backward(grad, proxy, params_.a, params_.b);
  }
  return {};
}

variable_list MemsaveReluFamilyBackward::apply(variable_list&& grads) {
  std::lock_guard<std::mutex> lock(mutex_);
  TORCH_INTERNAL_ASSERT(grads.size() == 1, name(), ": expected 1 gradient, got ", grads.size());
  // As stock: unpacking raises after release (second backward) and on a version mismatch.
  at::Tensor bits = bits_.unpack();
  check_version();
  variable_list out(1);
  if (!task_should_compute_output(0) || !grads[0].defined()) return out;
  if (can_chunk(grads[0], bits)) {
    out[0] = backward_in_chunks(grads[0], bits);
  } else {
    out[0] = backward(grads[0], proxy(bits));
  }
  return out;
}

// Note [Backward in chunks]: the full proxy is as large as the activation, and it is alive
// with the incoming gradient and the result, where stock has only those two. When the
// gradient and the tensor stock keeps are dense with the same sizes, strides and dtype,
// stock's kernel (a TensorIterator binary op) gives its result those strides (the
// NON_OVERLAPPING_DENSE fast setup), and every element of the result depends only on the
// two elements at the same position. So we allocate the result with those strides and run
// the kernel's out variant (the same implementation as the functional form) on pieces of
// the memory-order flat views, with the proxy of each piece unpacked into a small buffer.
// The per-element results are the same in the vector and scalar loops for every proxy we
// build (the only position-dependent case, a NaN in hardtanh's tensor, goes to stock:
// Note [NaN in hardtanh on CPU]); pieces start at multiples of kChunk anyway.
// Under create_graph the proxy must be one tensor carrying an edge, so that path stays.
// When nothing else holds the incoming gradient, the result is written into it (Note
// [Reusing the incoming gradient] in common.h).
bool MemsaveReluFamilyBackward::can_chunk(const at::Tensor& grad, const at::Tensor& bits) const {
  const at::ScalarType t = options_.dtype().toScalarType();
  return !at::GradMode::is_enabled() && grad.is_cpu() && grad.layout() == at::kStrided &&
         grad.scalar_type() == t && !grad.is_conj() && !grad.is_neg() && mask_.can_unpack_range(bits, t) &&
         grad.numel() > kChunk && grad.is_non_overlapping_and_dense() &&
         grad.sizes() == at::IntArrayRef(mask_.sizes()) && grad.strides() == at::IntArrayRef(mask_.strides());
}

at::Tensor MemsaveReluFamilyBackward::backward_in_chunks(const at::Tensor& grad, const at::Tensor& bits) const {
  at::AutoDispatchBelowADInplaceOrView guard;  // plain tensors: no grad (can_chunk), no view tracking
  const int64_t n = grad.numel();
  // Note [Reusing the incoming gradient] in common.h: the out= kernel then runs with its
  // result aliasing its gradient argument, element for element.
  at::Tensor result =
      gradient_is_reusable(grad) ? grad : at::empty_strided(grad.sizes(), grad.strides(), grad.options());
  // Dense: the elements fill [storage_offset, storage_offset + n) in memory order.
  const at::Tensor grad_flat = grad.as_strided({n}, {1}, grad.storage_offset());
  const at::Tensor result_flat = result.as_strided({n}, {1}, result.storage_offset());
  const at::Tensor buffer = at::empty({kChunk}, grad.options());
  for (int64_t start = 0; start < n; start += kChunk) {
    const int64_t len = std::min(kChunk, n - start);
    const at::Tensor p = buffer.narrow(0, 0, len);
    mask_.unpack_range(bits, start, p, set_, unset_);
    at::Tensor r = result_flat.narrow(0, start, len);
    const at::Tensor g = grad_flat.narrow(0, start, len);
    switch (op_) {
      case Op::kRelu: at::threshold_backward_out(r, g, p, 0); break;
      case Op::kThreshold: at::threshold_backward_out(r, g, p, params_.a); break;
      case Op::kLeakyRelu: at::leaky_relu_backward_out(r, g, p, params_.a, /*self_is_result=*/inplace_); break;
      case Op::kHardtanh: at::hardtanh_backward_out(r, g, p, params_.a, params_.b); break;
    }
  }
  return result;
}

// aten::relu(Tensor self), threshold(self, Scalar threshold, Scalar value),
// leaky_relu(self, Scalar negative_slope), hardtanh(self, Scalar min_val, Scalar max_val),
// and their in-place forms (Tensor(a!) self): one kernel for all eight.
template <Op kOp, bool kInplace>
void relu_family_autograd(const c10::OperatorHandle& op, c10::DispatchKeySet ks, torch::jit::Stack* stack) {
  constexpr auto F = MEMSAVE_FAMILY_RELU;
  constexpr Kept kKept = kept(kOp, kInplace);
  // relu's and the in-place leaky_relu's masks come from the output (what stock keeps); the
  // others from the input, before an in-place op changes it.
  constexpr bool kMaskFromOutput = kKept == Kept::kOutput;
  const c10::IValue* args = &(*stack)[stack->size() - num_args(kOp)];
  const at::Tensor self = args[0].toTensor();
  if (!family_on(F) || !at::GradMode::is_enabled() || !self.requires_grad())
    return call_stock(op, stack, c10::DispatchKey::Autograd);
  const Params p = params_of<kOp>(args);
  const char* why = unsupported_call<kOp, kInplace>(ks, self, p);
  BitMask mask;
  if (!why && !kMaskFromOutput) why = make_mask(kOp, self, p, &mask);
  if (why) {
    count_fallback(F, why);
    return call_stock(op, stack, c10::DispatchKey::Autograd);
  }

  // One node per call, made before the forward runs, as stock does (sequence numbers),
  // with its edge from self's current gradient edge (for in-place ops: before the op).
  std::shared_ptr<MemsaveReluFamilyBackward> node(new MemsaveReluFamilyBackward(kOp, kInplace, p),
                                                  torch::autograd::deleteNode);
  node->set_next_edges(torch::autograd::collect_next_edges(self));
  if (kInplace) {
    // Through the ADInplaceOrView kernel, which bumps self's version as stock's does.
    at::AutoDispatchBelowAutograd guard;
    op.redispatchBoxed(ks & c10::after_autograd_keyset, stack);
  } else {
    at::AutoDispatchBelowADInplaceOrView guard;
    op.redispatchBoxed(ks & c10::after_autograd_keyset, stack);
  }
  at::Tensor result = stack->back().toTensor();
  if (kMaskFromOutput) {
    const char* err = make_mask(kOp, result, p, &mask);  // exact bounds (0): cannot fail
    TORCH_INTERNAL_ASSERT(!err, err);
  }
  const uint64_t kept_bytes = mask.nbytes();
  node->save(std::move(mask), kKept == Kept::kOutput ? result : self, kKept);
  if (kInplace) {
    // What stock's rebase_history does for a tensor that is not a view.
    node->add_input_metadata(result);
    torch::autograd::impl::rebase_history(result, {node, 0});
  } else {
    torch::autograd::set_history(result, node);
  }
  count_substituted(F, kept_bytes, tensor_bytes(self));
}

template <Op kOp, bool kInplace>
torch::CppFunction make_kernel() {
  return torch::CppFunction::makeFromBoxedFunction<&relu_family_autograd<kOp, kInplace>>();
}

void register_relu(Registrar& r) {
  r.impl("relu", &make_kernel<Op::kRelu, false>);
  r.impl("relu_", &make_kernel<Op::kRelu, true>);
  r.impl("threshold", &make_kernel<Op::kThreshold, false>);
  r.impl("threshold_", &make_kernel<Op::kThreshold, true>);
  r.impl("leaky_relu", &make_kernel<Op::kLeakyRelu, false>);
  r.impl("leaky_relu_", &make_kernel<Op::kLeakyRelu, true>);
  r.impl("hardtanh", &make_kernel<Op::kHardtanh, false>);
  r.impl("hardtanh_", &make_kernel<Op::kHardtanh, true>);
}

const FamilyRegistration registration(MEMSAVE_FAMILY_RELU, &register_relu);

}  // namespace
}  // namespace memsave
