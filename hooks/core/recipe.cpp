// SPDX-License-Identifier: MIT
// recipe.cpp: Note [Recipe] and Note [Recipe source] (recipe.h).
#include "recipe.h"

#include <ATen/ExpandUtils.h>
#include <ATen/SavedTensorHooks.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/gelu.h>
#include <ATen/ops/hardswish.h>
#include <ATen/ops/mish.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/native_layer_norm.h>
#include <ATen/ops/silu.h>
#include <torch/csrc/autograd/generated/Functions.h>
#include <torch/csrc/autograd/variable.h>

#include <mutex>
#include <sstream>
#include <tuple>
#include <unordered_map>

#include "rules.h"
#include "shared.h"

namespace memsave {

using Kind = RecipeSource::Kind;

namespace {
// Notes about outputs that their nodes do not keep (Note [Layer norm eps], Note [In-place
// producer]): an output's TensorImpl -> (a weak reference to it, to tell a reused address;
// the node that made it; what the note says). A weak reference to a tensor keeps none of
// its data (a dead tensor's storage is released at once); one to a node would keep the node
// and its kept tensors where nodes are intrusively counted (2.14).
using WeakImpl = c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>;
struct Note {
  double eps;        // layer norm
  uint32_t version;  // the output's version when its producer returned
};
struct NoteEntry {
  WeakImpl output;
  const torch::autograd::Node* node;
  Note note;
};
struct NoteTable {
  std::mutex mutex;
  std::unordered_map<const c10::TensorImpl*, NoteEntry> entries;
  size_t sweep_at = 64;
};
NoteTable& note_table() {
  static NoteTable* table = new NoteTable;  // never destroyed: tensors may die after exit's destructors
  return *table;
}

void remember(const at::Tensor& output, Note note) {
  NoteTable& table = note_table();
  std::lock_guard<std::mutex> lock(table.mutex);
  table.entries.insert_or_assign(output.unsafeGetTensorImpl(),
                                 NoteEntry{WeakImpl(output.getIntrusivePtr()), output.grad_fn().get(), note});
  if (table.entries.size() < table.sweep_at) return;
  for (auto it = table.entries.begin(); it != table.entries.end();)
    it = it->second.output.expired() ? table.entries.erase(it) : std::next(it);
  table.sweep_at = 2 * table.entries.size() + 64;
}

// The note of `t`, made for `t` itself by the node that is still its grad_fn.
c10::optional<Note> note_of(const at::Tensor& t) {
  NoteTable& table = note_table();
  std::lock_guard<std::mutex> lock(table.mutex);
  const auto it = table.entries.find(t.unsafeGetTensorImpl());
  if (it == table.entries.end() || it->second.output.lock().get() != t.unsafeGetTensorImpl() ||
      it->second.node != t.grad_fn().get())
    return c10::nullopt;
  return it->second.note;
}

// Stock's producers that keep their input: the kind of recipe their output has.
// Sets `input` to the node's kept input.
c10::optional<Kind> input_keeping_producer(torch::autograd::Node* node, torch::autograd::SavedVariable*& input) {
  using namespace torch::autograd::generated;
  if (auto* silu = dynamic_cast<SiluBackward0*>(node)) {
    input = &silu->self_;
    return Kind::kSilu;
  }
  if (auto* hardswish = dynamic_cast<HardswishBackward0*>(node)) {
    input = &hardswish->self_;
    return Kind::kHardswish;
  }
  if (auto* mish = dynamic_cast<MishBackward0*>(node)) {
    input = &mish->self_;
    return Kind::kMish;
  }
  if (auto* gelu = dynamic_cast<GeluBackward0*>(node)) {
    input = &gelu->self_;
    if (gelu->approximate == "none") return Kind::kGeluNone;
    if (gelu->approximate == "tanh") return Kind::kGeluTanh;
  }
  return c10::nullopt;
}
}  // namespace

void remember_layer_norm_eps(const at::Tensor& output, double eps) { remember(output, Note{eps, 0}); }

void remember_inplace_producer(const at::Tensor& output) {
  torch::autograd::SavedVariable* input = nullptr;
  if (input_keeping_producer(output.grad_fn().get(), input))
    remember(output, Note{0, static_cast<uint32_t>(output._version())});
}

c10::optional<RecipeSource> recipe_source(const at::Tensor& t, bool kept) {
  if (!t.defined() || !t.requires_grad() || t.is_view() || t.output_nr() != 0) return c10::nullopt;
  torch::autograd::Node* node = t.grad_fn().get();
  if (!node) return c10::nullopt;
  torch::autograd::SavedVariable* input = nullptr;
  if (const auto kind = input_keeping_producer(node, input)) {
    if (t._version() == 0) return RecipeSource{*kind, input, nullptr};
    // Note [In-place producer]: at the version its producer left it, which a note says; and
    // dense, so that the node's copy of the input has its strides.
    const auto note = note_of(t);
    if (note && note->version == t._version() && t.is_non_overlapping_and_dense())
      return RecipeSource{*kind, input, nullptr};
    return c10::nullopt;
  }
  if (t._version() != 0) return c10::nullopt;
  if (auto* mul = dynamic_cast<torch::autograd::generated::MulBackward0*>(node)) {
    // Note [Stock product]: both operands kept, as both need a gradient (self_ is kept for
    // other's gradient, other_ for self's: docs/pytorch.md §1.2).
    if (mul->next_edges().size() == 2 && mul->next_edge(0).is_valid() && mul->next_edge(1).is_valid())
      return RecipeSource{Kind::kMul, &mul->self_, nullptr, nullptr, 0, &mul->other_};
    return c10::nullopt;
  }
  if (auto* ln = dynamic_cast<torch::autograd::generated::NativeLayerNormBackward0*>(node)) {
    if (const auto note = note_of(t)) return RecipeSource{Kind::kLayerNorm, &ln->input_, nullptr, ln, note->eps};
    return c10::nullopt;
  }
  if (auto* ours = dynamic_cast<RecipeProducer*>(node))
    if (ours->recomputable()) return RecipeSource{Kind::kOurs, nullptr, ours};
  if (kept)
    if (auto* softmax = dynamic_cast<torch::autograd::generated::SoftmaxBackward0*>(node))
      return RecipeSource{Kind::kKept, &softmax->result_, nullptr};
  return c10::nullopt;
}

c10::optional<RecipeSource> recipe_source_through_view(const at::Tensor& t, at::Tensor& base) {
  base = t;
  if (!t.defined() || !t.is_view()) return recipe_source(t);
  if (!t.requires_grad() || !t.grad_fn() || t.numel() == 0) return c10::nullopt;
  const at::Tensor b(t._base());
  if (b.is_view() || !b.is_contiguous() || b.dtype() != t.dtype()) return c10::nullopt;
  // KeptOperand::value() reaches t's elements with as_strided on a recomputation of b.
  int64_t last = t.storage_offset() - b.storage_offset();
  for (int64_t d = 0; d < t.dim(); d++) {
    if (t.stride(d) < 0) return c10::nullopt;
    last += (t.size(d) - 1) * t.stride(d);
  }
  if (t.storage_offset() < b.storage_offset() || last >= b.numel()) return c10::nullopt;
  c10::optional<RecipeSource> source = recipe_source(b);
  if (source) base = b;
  return source;
}

bool recipes_on(bool traced) { return !traced && family_on(MEMSAVE_FAMILY_RECIPE); }

bool can_multiply_into(const at::Tensor& into, const at::Tensor& other) {
  return !tracing() && into.is_contiguous() && other.is_contiguous() && into.dtype() == other.dtype() &&
         into.device() == other.device() && into.dim() >= other.dim() &&
         at::infer_size(into.sizes(), other.sizes()) == into.sizes();
}

bool saved_tensor_hooks_set() { return !at::SavedTensorDefaultHooks::get_tls_state().stack.empty(); }

namespace {
// The producer's kernel, below autograd.
at::Tensor recompute(const RecipeSource& s, const at::Tensor& input) {
  at::NoGradGuard no_grad;
  PlainUnlessTraced below;
  switch (s.kind) {
    case Kind::kSilu: return at::silu(input);
    case Kind::kGeluNone: return at::gelu(input, "none");
    case Kind::kGeluTanh: return at::gelu(input, "tanh");
    case Kind::kHardswish: return at::hardswish(input);
    case Kind::kMish: return at::mish(input);
    case Kind::kMul: return at::mul(input, s.other->unpack());
    case Kind::kOurs: return s.ours->recompute_output();
    case Kind::kKept: return input;
    case Kind::kLayerNorm: {
      auto* ln = static_cast<torch::autograd::generated::NativeLayerNormBackward0*>(s.layer_norm);
      return std::get<0>(
          at::native_layer_norm_symint(input, ln->normalized_shape, ln->weight_.unpack(), ln->bias_.unpack(), s.eps));
    }
  }
  TORCH_INTERNAL_ASSERT(false, "memsave: unknown recipe");
}
}  // namespace

void KeptOperand::keep(const at::Tensor& t, const c10::optional<RecipeSource>& source, const at::Tensor& base) {
  kept_ = true;
  if (!source) {
    saved_ = torch::autograd::SavedVariable(t, /*is_output=*/false);
    return;
  }
  const at::Tensor& b = base.defined() ? base : t;
  source_ = source;
  // Note [Kept source]: a kKept operand is the very tensor stock's node keeps as its output.
  // Kept here too (the same storage: no byte more), as an input, so that it unpacks to one
  // tensor: compiled autograd lifts each kept tensor once per TensorImpl, and an output's
  // SavedVariable unpacks to a new one each time (lifted twice, read once).
  if (source->kind == Kind::kKept) saved_ = torch::autograd::SavedVariable(t, /*is_output=*/false);
  producer_ = b.grad_fn();
  edge_ = torch::autograd::impl::gradient_edge(t);
  version_ = torch::autograd::impl::version_counter(t);
  saved_version_ = version_.current_version();
  base_sizes_ = b.sizes().vec();
  base_strides_ = b.strides().vec();
  view_ = !t.is_same(b);
  sizes_ = t.sizes().vec();
  strides_ = t.strides().vec();
  offset_ = t.storage_offset() - b.storage_offset();
  options_ = t.options();
}

at::Tensor KeptOperand::unpack(bool check) const {
  if (!by_recipe()) return saved_.unpack();
  if (check && version_.current_version() != saved_version_) raise_version_error();
  if (source_->kind == Kind::kKept) return saved_.unpack();
  if (source_->kind == Kind::kMul) {
    at::Tensor self = source_->input->unpack();
    (void)source_->other->unpack();  // its errors too
    return self;
  }
  if (source_->kind != Kind::kOurs) return source_->input->unpack();
  source_->ours->recipe_check();
  return at::Tensor();
}

at::Tensor KeptOperand::value(const at::Tensor& unpacked) const {
  if (!by_recipe()) return unpacked;
  at::Tensor b = recompute(*source_, unpacked);
  // Traced (compiled autograd), sizes may be symbolic; the graph is specialised on these.
  TORCH_INTERNAL_ASSERT(tracing() || (b.sizes() == at::IntArrayRef(base_sizes_) &&
                                      b.strides() == at::IntArrayRef(base_strides_) && b.storage_offset() == 0 &&
                                      b.dtype() == options_.dtype()),
                        "memsave: a recomputed tensor's geometry differs from the original's");
  // A recomputation is a new tensor: its storage offset is 0.
  return view_ ? b.as_strided(sizes_, strides_, offset_) : b;
}

at::Tensor KeptOperand::tensor(const at::Tensor& unpacked) const {
  if (!by_recipe()) return unpacked;
  at::Tensor t = value(unpacked);
  if (tracing()) return t;
  t = torch::autograd::make_variable(t, edge_);
  torch::autograd::impl::set_version_counter(t, version_);
  return t;
}

void KeptOperand::reset_data() {
  saved_.reset_data();
  producer_.reset();
  edge_ = torch::autograd::Edge();
}

void KeptOperand::fields(Fields& f) {
  f.flag(kept_);
  f.flag(by_recipe());
  if (!by_recipe()) {
    if (kept_) f.saved(saved_, false);
    return;
  }
  f.integer(static_cast<int64_t>(source_->kind));
  switch (source_->kind) {
    case Kind::kOurs: source_->ours->recipe_fields(f); break;
    case Kind::kKept: f.saved(saved_, false); break;
    case Kind::kMul:
      f.saved(*source_->input, false);
      f.saved(*source_->other, false);
      break;
    case Kind::kLayerNorm: {
      // What recompute() reads besides the input.
      auto* ln = static_cast<torch::autograd::generated::NativeLayerNormBackward0*>(source_->layer_norm);
      f.saved(*source_->input, false);
      f.saved(ln->weight_, false);
      f.saved(ln->bias_, false);
      std::vector<int64_t> shape;
      for (const c10::SymInt& d : ln->normalized_shape) shape.push_back(d.expect_int());
      f.ints(shape);
      f.real(source_->eps);
      break;
    }
    default: f.saved(*source_->input, false);
  }
  f.ints(base_sizes_);
  f.ints(base_strides_);
  f.flag(view_);
  f.ints(sizes_);
  f.ints(strides_);
  f.integer(offset_);
  f.options(options_);
}

// Stock's SavedVariable::unpack error for the operand, naming the node that made it.
void KeptOperand::raise_version_error() const {
  std::ostringstream msg;
  msg << "one of the variables needed for gradient computation has been modified by an inplace operation: ["
      << c10::toString(options_.computeDispatchKey()) << c10::toString(options_.dtype().toScalarType()) << "Type "
      << at::IntArrayRef(sizes_) << "], which is output " << edge_.input_nr << " of "
      << version_error_name(*edge_.function) << ", is at version " << version_.current_version()
      << "; expected version " << saved_version_ << " instead." << stock_version_hint();
  TORCH_CHECK(false, msg.str());
}

}  // namespace memsave
