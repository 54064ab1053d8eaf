// SPDX-License-Identifier: MIT
// recipe.h: keeping a recipe for a tensor instead of the tensor (Note [Recipe]).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/TensorOptions.h>
#include <c10/util/Optional.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/saved_variable.h>

#include <cstdint>
#include <vector>

#include "compat.h"
#include "fields.h"

namespace memsave {

// Note [Recipe]: a consumer node (a multiply, a linear) must keep an operand for backward.
// When that operand is a producer's untouched output (Note [Recipe source]) and the producer's
// node keeps what made it anyway, the consumer keeps the recipe instead: the producer's node,
// the operand's version and geometry. Backward recomputes the operand from the producer's
// kept tensors with the kernel that made it (same inputs, same sizes and strides: the same
// elements in the same order), and, under create_graph, gives it the operand's own gradient
// edge, as stock's unpacked SavedVariable has, so the double-backward graph is stock's.
// Producers: stock's SiluBackward0, GeluBackward0, HardswishBackward0 and MishBackward0
// (which keep their input; also after an in-place call: Note [In-place producer]),
// NativeLayerNormBackward0 (its input, weight and bias; eps: Note [Layer norm eps]),
// MulBackward0 when it keeps both operands (Note [Stock product]), and nodes of
// ours that implement RecipeProducer (a multiply that keeps both operands, a dropout whose
// input is itself a recipe, or a tensor a stock node keeps as it is: attention
// probabilities, which SoftmaxBackward0 keeps as its result): recipes chain. Under compile tracing there are no recipes: the
// compiler's partitioner decides what to recompute. With saved-tensor hooks set, none either:
// the hooks see what stock keeps. The recipe family (MEMSAVE_OPS) switches them.
//
// Note [Recipe source]: a tensor t is recomputable when
//   - its grad_fn is a producer and t is its output 0, not a view;
//   - t is at version 0: an out-of-place result that nothing modified since, even under
//     no_grad (an in-place change with grad mode on would also have replaced its grad_fn);
//     or, made in place (silu_), at the version its producer left it (Note [In-place
//     producer]).
// What autograd cannot see cannot be seen here either: a write through `.data` (which shares
// no version counter) changes t without a trace; stock's saved t would carry it while the
// recomputed one would not (docs/limits.md).

// A node of ours whose output 0 can be recomputed, bit for bit, from what it keeps.
class RecipeProducer {
 public:
  // Whether its forward kept all that the recomputation needs.
  virtual bool recomputable() const = 0;
  // Raises what unpacking those kept tensors raises (a version mismatch, backward twice).
  virtual void recipe_check() = 0;
  // Output 0, recomputed: a plain tensor without history.
  virtual at::Tensor recompute_output() = 0;
  // What the recomputation depends on, for compiled autograd (fields.h).
  virtual void recipe_fields(Fields& f) = 0;

 protected:
  ~RecipeProducer() = default;
};

struct RecipeSource {
  // kKept: not a recomputation; the tensor itself, which stock's node keeps as its own output
  // (SoftmaxBackward0's result), for a producer of ours that recomputes from it; KeptOperand
  // keeps it as well, sharing its storage (Note [Kept source] in recipe.cpp).
  enum class Kind : int64_t {
    kSilu = 0,
    kGeluNone = 1,
    kGeluTanh = 2,
    kOurs = 3,
    kKept = 4,
    kLayerNorm = 5,
    kHardswish = 6,
    kMish = 7,
    kMul = 8  // stock's MulBackward0, which keeps both operands (Note [Stock product])
  } kind;
  torch::autograd::SavedVariable* input = nullptr;  // stock's producers: the node's kept input (kKept: output)
  RecipeProducer* ours = nullptr;                   // kOurs
  torch::autograd::Node* layer_norm = nullptr;      // kLayerNorm: NativeLayerNormBackward0
  double eps = 0;                                   // kLayerNorm
  torch::autograd::SavedVariable* other = nullptr;  // kMul: the second operand (input: the first)
};

// Note [Layer norm eps]: NativeLayerNormBackward0 keeps the input, the normalized shape, the
// weight and the bias, but not eps, without which its output cannot be recomputed. The
// recipe family's kernel on native_layer_norm (hooks/ops/recipe.cpp) calls stock's and notes
// eps for the output it made, with that output's node; recipe_source() reads it while the
// output lives. An output without a note (made while the family was off) has no recipe.
// Entries of dead outputs are swept as the table grows.
void remember_layer_norm_eps(const at::Tensor& output, double eps);

// Note [Stock product]: stock's MulBackward0 keeps both operands when both need a gradient
// (RMS norm written out, x * rsqrt(mean(x^2) + eps) * w, with a trainable weight; products
// in hand-written activations). Its output is then a recipe as well: at::mul of the two.
// A multiply of ours that keeps such a product by recipe is itself a producer: recipes chain
// through the norm to the linears that keep its output.
//
// Note [In-place producer]: silu_, hardswish_ and mish_ (torchvision's and timm's
// activations are in place) leave their output at version 1 or more, and their stock node
// keeps a copy of the input as it was (SiluBackward0's self_, ...). Their output is a recipe
// while it stays at the version the producer left it: the recipe family's kernels on them
// (hooks/ops/recipe.cpp) call stock's and note that version, as for layer norm's eps.
void remember_inplace_producer(const at::Tensor& output);

// The recipe of `t` (Note [Recipe source]), or nothing. With `kept`, also a tensor that a
// stock node keeps as its output (kKept): for a producer of ours that recomputes its output
// from it (a dropout); a consumer that kept it so would save nothing.
c10::optional<RecipeSource> recipe_source(const at::Tensor& t, bool kept = false);
// The recipe of `t`, or of the tensor `t` is a view of (C++ torch::nn::Linear's matmul folds
// a 3-D input to 2-D with a view before mm); `base` is set to the tensor the recipe makes.
// Only a view of a contiguous base, with its dtype, inside the base's elements.
c10::optional<RecipeSource> recipe_source_through_view(const at::Tensor& t, at::Tensor& base);
// Whether a call may keep recipes: the recipe family on, not under compile tracing (`traced`:
// the call has Python dispatch keys).
bool recipes_on(bool traced);
// Note [Recomputing in place]: at::mul_out(a, a, b) and at::mul_out(b, a, b) run at::mul(a, b)'s
// kernel with the same operands in the same order (the order matters: of two NaNs, the
// result carries the first one's payload), writing into one of them. Into a fresh
// recomputation of the same sizes, dtype and (contiguous) layout as the result, it saves one
// buffer.
bool can_multiply_into(const at::Tensor& into, const at::Tensor& other);
// Saved-tensor hooks are set: they see what stock keeps, so no recipe is kept (counted).
bool saved_tensor_hooks_set();
constexpr const char* kRecipeUnderHooks = "recipe: saved-tensor hooks are set (they see what stock keeps)";

// One tensor a node needs in backward: a SavedVariable, as stock keeps it, or a recipe.
class KeptOperand {
 public:
  // Keeps `t` as stock does; or, with `source`, the recipe of `base` (`t` itself, or `t` a
  // view of it: linear's fold).
  void keep(const at::Tensor& t, const c10::optional<RecipeSource>& source = c10::nullopt, const at::Tensor& base = {});
  bool defined() const { return kept_; }
  bool by_recipe() const { return source_.has_value(); }
  // value() is a new tensor nobody else holds (a recomputation, not a view of one), which the
  // caller may overwrite. A kKept source's value is the producer's own kept tensor.
  bool fresh() const { return by_recipe() && !view_ && source_->kind != RecipeSource::Kind::kKept; }

  // What stock's unpack raises, in stock's order: backward twice, a version mismatch of the
  // operand (`check`: not in a functional backward) or of what its recipe reads. Returns what
  // value() needs: the tensor, or the stock producer's input.
  at::Tensor unpack(bool check) const;
  // The tensor from what unpack() returned, without history (for a recomputation).
  at::Tensor value(const at::Tensor& unpacked) const;
  // The tensor as stock's SavedVariable::unpack gives it: with its gradient edge.
  at::Tensor tensor(const at::Tensor& unpacked) const;
  void reset_data();
  void fields(Fields& f);

 private:
  [[noreturn]] void raise_version_error() const;

  bool kept_ = false;
  torch::autograd::SavedVariable saved_;
  c10::optional<RecipeSource> source_;
  NodePtr<torch::autograd::Node> producer_;  // base's grad_fn: keeps the source alive
  torch::autograd::Edge edge_;               // t's gradient edge
  c10::VariableVersion version_{c10::VariableVersion::DISABLED};
  uint32_t saved_version_ = 0;
  std::vector<int64_t> base_sizes_, base_strides_;
  bool view_ = false;  // t is a view of base
  std::vector<int64_t> sizes_, strides_;
  int64_t offset_ = 0;  // t's storage offset, relative to base's
  at::TensorOptions options_;
};

}  // namespace memsave
