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
#include <ATen/ops/as_strided.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_strided.h>
#include <ATen/ops/expand.h>
#include <ATen/ops/hardtanh_backward.h>
#include <ATen/ops/isnan.h>
#include <ATen/ops/leaky_relu_backward.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/threshold_backward.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/csrc/autograd/variable.h>

#include <algorithm>
#include <sstream>

#include "../core/bitmask.h"
#include "../core/kernel.h"
#include "relu_bounds.h"

namespace memsave {
namespace {

using torch::autograd::Edge;
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
// two differ (a bound not exactly representable in the dtype: relu_bounds.h) the mask comes
// from stock's own kernel run on ones (pass_from_kernel), so it is right by construction.
//
// Note [NaN in hardtanh on CPU]: stock's CPU hardtanh_backward lets the gradient of a NaN
// input through in its scalar loop (NaN <= min is false) and blocks it in its vector loop
// ((NaN > min) & (NaN < max) is false), so the result depends on where the element falls in
// the iteration. A proxy cannot reproduce that, so a CPU input with a NaN goes to stock.
// threshold_backward and leaky_relu_backward treat NaN alike in both loops.

enum class Activation { kRelu, kThreshold, kLeakyRelu, kHardtanh };

// Which tensor stock's node keeps, for the version check.
enum class Kept {
  kOutput,  // relu, relu_, leaky_relu_: the output (version checked, "output 0 of" in the error)
  kInput,   // threshold, leaky_relu, hardtanh: the input (version checked)
  kClone,   // threshold_, hardtanh_: a private clone, which nothing can modify
};

constexpr Kept kept(Activation op, bool inplace) {
  if (op == Activation::kRelu) return Kept::kOutput;
  if (op == Activation::kLeakyRelu) return inplace ? Kept::kOutput : Kept::kInput;
  return inplace ? Kept::kClone : Kept::kInput;
}

constexpr const char* node_name(Activation op) {
  return op == Activation::kRelu        ? "MemsaveReluBackward"
         : op == Activation::kThreshold ? "MemsaveThresholdBackward"
         : op == Activation::kLeakyRelu ? "MemsaveLeakyReluBackward"
                                : "MemsaveHardtanhBackward";
}

struct Params {
  at::Scalar a, b;  // threshold; negative_slope; min_val, max_val
};

template <Activation kOp>
Params params_of(const c10::IValue* args) {
  switch (kOp) {
    case Activation::kRelu: return {at::Scalar(0), at::Scalar(0)};
    case Activation::kThreshold: return {args[1].toScalar(), at::Scalar(0)};
    case Activation::kLeakyRelu: return {args[1].toScalar(), at::Scalar(0)};
    case Activation::kHardtanh: return {args[1].toScalar(), args[2].toScalar()};
  }
  return {};
}

// The test whose outcome the mask keeps, and the tensor stock's kernel would test.
constexpr BitMask::Test test_of(Activation op) {
  return op == Activation::kLeakyRelu ? BitMask::Test::kGreater
         : op == Activation::kHardtanh ? BitMask::Test::kInside
                               : BitMask::Test::kNotAtMost;
}

// The bounds of that test: leaky_relu compares with 0, not with its slope.
Params test_bounds(Activation op, const Params& p) {
  switch (op) {
    case Activation::kRelu:
    case Activation::kLeakyRelu: return {at::Scalar(0), at::Scalar(0)};
    case Activation::kThreshold: return {p.a, at::Scalar(0)};
    case Activation::kHardtanh: return p;
  }
  return p;
}

// The mask of `t` by running stock's backward kernel on ones: the element passes where the
// result is nonzero. Used for bounds the test cannot compare exactly (Note [Proxy]).
at::Tensor pass_from_kernel(Activation op, const at::Tensor& t, const Params& p) {
  at::Tensor ones = at::ones({}, t.options()).expand(t.sizes());
  at::Tensor out = op == Activation::kHardtanh ? at::hardtanh_backward(ones, t, p.a, p.b) : at::threshold_backward(ones, t, p.a);
  return out.ne(0);
}

// Packs the mask of `t` into `mask`; returns why it cannot, or nullptr.
const char* make_mask(Activation op, const at::Tensor& t, const Params& params, BitMask* mask) {
  at::AutoDispatchBelowADInplaceOrView guard;
  const Params p = test_bounds(op, params);
  const at::ScalarType dtype = t.scalar_type();
  // Note [NaN in hardtanh on CPU]
  const bool check_nan = op == Activation::kHardtanh && t.is_cpu();
  // Note [Compile tracing] in core/rules.h: fakes have no values to check.
  if (check_nan && tracing()) return "compile tracing: hardtanh on CPU (its NaN check reads values)";
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

class MemsaveReluFamilyBackward final : public MemsaveNode<at::Tensor> {
 public:
  MemsaveReluFamilyBackward(Activation op, bool inplace, Params params) : op_(op), inplace_(inplace), params_(std::move(params)) {}

  std::string name() const override { return node_name(op_); }

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
      case Activation::kRelu:
      case Activation::kThreshold:
        set_ = params_.a.toDouble() == kInf ? kNaN : kInf;
        unset_ = -kInf;
        break;
      case Activation::kLeakyRelu:
        set_ = 1;
        unset_ = 0;
        break;
      case Activation::kHardtanh:
        set_ = *hardtanh_inside(params_.a.toDouble(), params_.b.toDouble(), t);
        unset_ = -kInf;
        break;
    }
  }


 private:
  // As stock: unpacking raises on a version mismatch.
  at::Tensor unpack() override {
    at::Tensor bits = bits_.unpack();
    check_version();
    return bits;
  }
  void release() override { bits_.reset_data(); }
  void fields(Fields& f) override {
    f.saved(bits_, false);
    mask_.layout(f);
    f.integer(static_cast<int64_t>(op_));
    f.flag(inplace_);
    f.real(params_.a.toDouble());
    f.real(params_.b.toDouble());
    f.integer(static_cast<int64_t>(kept_));
    f.options(options_);
    f.real(set_);
    f.real(unset_);
  }
  void backward(const at::Tensor& grad, const at::Tensor& bits, variable_list& out) override {
    out[0] = can_chunk(grad, bits) ? backward_in_chunks(grad, bits) : backward(grad, proxy(bits, grad));
  }

  void check_version() const;
  at::Tensor proxy(const at::Tensor& bits, const at::Tensor& grad);
  at::Tensor backward(const at::Tensor& grad, const at::Tensor& proxy) const;
  // Note [Backward in chunks].
  static constexpr int64_t kChunk = int64_t{1} << 16;
  bool can_chunk(const at::Tensor& grad, const at::Tensor& bits) const;
  at::Tensor backward_in_chunks(const at::Tensor& grad, const at::Tensor& bits) const;

  const Activation op_;
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
  if (functional() || !version_.enabled() || version_.current_version() == saved_version_) return;
  std::ostringstream msg;
  msg << "one of the variables needed for gradient computation has been modified by an inplace operation: ["
      << c10::toString(options_.computeDispatchKey()) << c10::toString(options_.dtype().toScalarType()) << "Type "
      << at::IntArrayRef(mask_.sizes()) << "]";
  if (kept_ == Kept::kOutput) msg << ", which is output 0 of " << version_error_name(*this) << ",";
  msg << " is at version " << version_.current_version() << "; expected version " << saved_version_ << " instead."
      << stock_version_hint();
  TORCH_CHECK(false, msg.str());
}

// The proxy of Note [Proxy]. Under create_graph it carries the gradient edge of the tensor
// stock keeps (this node for an output; the input's edge, which stock's clone also leads
// to, otherwise), so that the double-backward graph has stock's shape: the zero gradient
// that threshold_backward & co. send to their `self` reaches the same node.
at::Tensor MemsaveReluFamilyBackward::proxy(const at::Tensor& bits, const at::Tensor& grad) {
  // Traced, in the gradient's layout if a compiler changes it (Note [Traced mask] in core/bitmask.h).
  at::Tensor p = mask_.unpack_bits(bits, options_.dtype().toScalarType(), set_, unset_, grad);
  if (!at::GradMode::is_enabled()) return p;
  Edge edge = kept_ == Kept::kOutput ? Edge(self_ptr(this), 0) : next_edge(0);
  return torch::autograd::make_variable(p, std::move(edge));
}

// The call stock's node makes, with the proxy in place of the tensor it keeps.
at::Tensor MemsaveReluFamilyBackward::backward(const at::Tensor& grad, const at::Tensor& proxy) const {
  switch (op_) {
    case Activation::kRelu: return at::threshold_backward(grad, proxy, 0);
    case Activation::kThreshold: return at::threshold_backward(grad, proxy, params_.a);
    case Activation::kLeakyRelu: return at::leaky_relu_backward(grad, proxy, params_.a, /*self_is_result=*/inplace_);
    case Activation::kHardtanh: return at::hardtanh_backward(grad, proxy, params_.a, params_.b);
  }
  return {};
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
// [Reusing the incoming gradient] in core/rules.h).
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
  // Note [Reusing the incoming gradient] in core/rules.h: the out= kernel then runs with its
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
      case Activation::kRelu: at::threshold_backward_out(r, g, p, 0); break;
      case Activation::kThreshold: at::threshold_backward_out(r, g, p, params_.a); break;
      case Activation::kLeakyRelu: at::leaky_relu_backward_out(r, g, p, params_.a, /*self_is_result=*/inplace_); break;
      case Activation::kHardtanh: at::hardtanh_backward_out(r, g, p, params_.a, params_.b); break;
    }
  }
  return result;
}

// aten::relu(Tensor self), threshold(self, Scalar threshold, Scalar value),
// leaky_relu(self, Scalar negative_slope), hardtanh(self, Scalar min_val, Scalar max_val),
// and their in-place forms (Tensor(a!) self): one operator struct for all eight.
template <Activation kOp, bool kInplaceOp>
struct ReluFamily : Op<ReluFamily<kOp, kInplaceOp>> {
  static constexpr memsave_family_t kFamily = MEMSAVE_FAMILY_RELU;
  static constexpr bool kInplace = kInplaceOp;
  static constexpr Kept kKept = kept(kOp, kInplace);
  // relu's and the in-place leaky_relu's masks come from the output (what stock keeps); the
  // others from the input, before an in-place op changes it.
  static constexpr bool kMaskFromOutput = kKept == Kept::kOutput;
  using Node = MemsaveReluFamilyBackward;

  at::Tensor self;
  Params params;
  BitMask mask;
  explicit ReluFamily(const Call& c) : self(c.tensor(0)), params(params_of<kOp>(&c.arg(0))) {}

  std::array<at::Tensor, 1> differentiable() const { return {self}; }

  const char* prepare(const Call&) {
    // Stock's check_inplace raises for a leaf; views need CopySlices: both are stock's business.
    if (kInplace && self.is_view()) return "in-place on a view";
    if (kInplace && self.is_leaf()) return "in-place on a leaf that requires grad";
    if (!real_scalar(params.a) || !real_scalar(params.b)) return "non-real scalar argument";
    // relu's mask comes from its output, which is always a fresh dense tensor.
    if (!(kOp == Activation::kRelu && !kInplace) && !BitMask::keeps_strides(self)) return "input with overlapping elements";
    if (kOp == Activation::kHardtanh && !hardtanh_inside(params.a.toDouble(), params.b.toDouble(), self.scalar_type()))
      return "hardtanh bounds with no value strictly between them (or NaN)";
    return kMaskFromOutput ? nullptr : make_mask(kOp, self, params, &mask);
  }

  // Its edge is self's current gradient edge (for in-place ops: before the op).
  NodePtr<Node> node(const Call&) const { return make_node<Node>(kOp, kInplace, params); }

  Footprint keep(const Call& c, Node& node) {
    const at::Tensor result = c.output(0);
    if (kMaskFromOutput) {
      const char* err = make_mask(kOp, result, params, &mask);  // exact bounds (0): cannot fail
      TORCH_INTERNAL_ASSERT(!err, err);
    }
    const uint64_t kept_bytes = mask.nbytes();
    node.save(std::move(mask), kKept == Kept::kOutput ? result : self, kKept);
    return {{kept_bytes, 0}, {tensor_bytes(self), 0}};
  }
};

void register_relu(Registrar& r) {
  r.op<ReluFamily<Activation::kRelu, false>>("relu");
  r.op<ReluFamily<Activation::kRelu, true>>("relu_");
  r.op<ReluFamily<Activation::kThreshold, false>>("threshold");
  r.op<ReluFamily<Activation::kThreshold, true>>("threshold_");
  r.op<ReluFamily<Activation::kLeakyRelu, false>>("leaky_relu");
  r.op<ReluFamily<Activation::kLeakyRelu, true>>("leaky_relu_");
  r.op<ReluFamily<Activation::kHardtanh, false>>("hardtanh");
  r.op<ReluFamily<Activation::kHardtanh, true>>("hardtanh_");
}

const FamilyRegistration registration(MEMSAVE_FAMILY_RELU, &register_relu);

}  // namespace
}  // namespace memsave
