// SPDX-License-Identifier: MIT
// conv.cpp: aten::convolution and aten::_convolution on AutogradCPU/AutogradCUDA, and the node
// that keeps no input.
//
// Stock: ConvolutionBackward0 (ConvolutionBackward1 for _convolution) keeps the input and the
// weight for every requires_grad pattern, because one formula covers input, weight and bias.
// So a frozen convolution whose input needs a gradient keeps its whole input alive until
// backward.
// Here: when the weight does not need a gradient, the input is never read in backward
// (only its geometry is), so we keep the weight (a parameter, already alive), the input's
// sizes/strides/options and the arguments. When the weight needs a gradient, stock already
// keeps what backward needs, and the call goes to stock (counted as passthrough), unless the
// input is a recipe (the output of SiLU, GELU, hardswish or mish, a product or dropout of
// one: Note [Recipe] in core/recipe.h, the recipe family's consumer): then the node keeps the recipe, and
// backward recomputes the input before stock's convolution_backward reads it.
#include <ATen/ops/convolution_backward.h>
#include <torch/csrc/autograd/saved_variable.h>

#include "../core/kernel.h"
#include "../core/recipe.h"

namespace memsave {
namespace {

using torch::autograd::SavedVariable;
using torch::autograd::variable_list;

// Note [Stand-in]: convolution_backward with output_mask[1] == false never reads the input's
// data, but it picks the backend and memory format from the input's strides, and a stand-in
// with other strides changed gradient values in dozens of channels_last configurations
// (docs/pytorch.md §2.1). So backward builds an uninitialised stand-in with the
// recorded sizes, strides and options. Every CPU path copies the input to a contiguous
// buffer of that size anyway; a stand-in that already has the right strides avoids the copy.
// When the host still holds the input at backward time, it is borrowed instead (Note [Live
// stand-in] in core/standin.h), so a convolution whose input stays alive costs nothing extra.
//
// Note [Convolution consumer]: with a trainable weight, stock's ConvolutionBackward0 keeps the
// input, which backward reads for the weight's gradient. When that input is a recipe
// (conv(silu(x)): YOLO-style Conv-BN-SiLU blocks, a depthwise convolution after SiLU, a
// projection after a squeeze-excitation product), the node keeps the recipe instead and
// backward calls the same convolution_backward on the recomputed input, which carries the
// input's gradient edge under create_graph (stock's double-backward graph). Stock unpacks
// the input before the weight: so do we (the first version error raised is the same).
struct ConvolutionSaved {
  at::Tensor input;  // as KeptOperand::unpack returned it; undefined for a frozen weight
  at::Tensor weight;
};

class MemsaveConvolutionBackward final : public MemsaveNode<ConvolutionSaved> {
 public:
  MemsaveConvolutionBackward(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                             std::vector<int64_t> stride, std::vector<int64_t> padding, std::vector<int64_t> dilation,
                             bool transposed, std::vector<int64_t> output_padding, int64_t groups)
      : input_(input),
        weight_(weight, /*is_output=*/false),
        stride_(std::move(stride)),
        padding_(std::move(padding)),
        dilation_(std::move(dilation)),
        output_padding_(std::move(output_padding)),
        transposed_(transposed),
        groups_(groups) {
    if (bias.defined()) bias_sizes_ = bias.sizes().vec();
  }

  std::string name() const override { return "MemsaveConvolutionBackward"; }

  KeptOperand kept_input_;  // by recipe, for a weight that needs its gradient (or not kept)

 private:
  ConvolutionSaved unpack() override {
    at::Tensor input = kept_input_.defined() ? kept_input_.unpack(!functional()) : at::Tensor();
    return {input, weight_.unpack()};
  }
  void release() override {
    weight_.reset_data();
    kept_input_.reset_data();
  }
  void fields(Fields& f) override {
    f.geometry(input_);
    kept_input_.fields(f);
    f.saved(weight_, false);
    f.optional_ints(bias_sizes_);
    for (const auto* v : {&stride_, &padding_, &dilation_, &output_padding_}) f.ints(*v);
    f.flag(transposed_);
    f.integer(groups_);
  }

  void backward(const at::Tensor& grad, const ConvolutionSaved& s, variable_list& out) override {
    const std::array<bool, 3> mask{wanted(0), wanted(1), wanted(2)};
    // A frozen weight has no gradient edge; a trainable one comes with a kept input.
    TORCH_INTERNAL_ASSERT(!mask[1] || kept_input_.defined(), name(),
                          ": weight gradient requested without a kept input");
    at::OptionalIntArrayRef bias_sizes;
    if (bias_sizes_) bias_sizes = at::IntArrayRef(*bias_sizes_);
    at::Tensor input;
    if (kept_input_.defined()) {
      input = kept_input_.tensor(s.input);  // Note [Convolution consumer]
    } else {
      // Traced, Note [Traced stand-in] in core/standin.h: in the layout a compiler gave the
      // tensor it follows (kConvStandInFollowsWeight, compat.h).
      const at::Tensor& like = kConvStandInFollowsWeight && s.weight.dim() == 4 ? s.weight : grad;
      input = input_.stand_in_like(like);
    }
    auto res = at::convolution_backward(grad, input, s.weight, bias_sizes, stride_, padding_, dilation_, transposed_,
                                        output_padding_, groups_, mask);
    if (mask[0]) out[0] = std::move(std::get<0>(res));
    if (mask[1]) out[1] = std::move(std::get<1>(res));
    if (mask[2]) out[2] = std::move(std::get<2>(res));
  }

  Geometry input_;
  SavedVariable weight_;
  c10::optional<std::vector<int64_t>> bias_sizes_;
  std::vector<int64_t> stride_, padding_, dilation_, output_padding_;
  bool transposed_;
  int64_t groups_;
};

// aten::convolution(input, weight, bias?, stride, padding, dilation, transposed, output_padding, groups)
// aten::_convolution(the same, benchmark, deterministic, cudnn_enabled, allow_tf32)
struct Convolution : Op<Convolution> {
  static constexpr memsave_family_t kFamily = MEMSAVE_FAMILY_CONV;
  using Node = MemsaveConvolutionBackward;

  at::Tensor input, weight, bias;
  // A weight that needs its gradient needs the input: its recipe, when it is one (Note
  // [Convolution consumer]); the call is then the recipe family's.
  c10::optional<RecipeSource> input_source;
  explicit Convolution(const Call& c) : input(c.tensor(0)), weight(c.tensor(1)), bias(c.optional_tensor(2)) {
    if (weight.requires_grad() && recipes_on(python_keys(c.keys()))) input_source = recipe_source(input);
  }

  // Registered for the recipe family too (its registration below), as linear's kernel is.
  static bool enabled() { return family_on(MEMSAVE_FAMILY_CONV) || family_on(MEMSAVE_FAMILY_RECIPE); }
  memsave_family_t family() const { return input_source ? MEMSAVE_FAMILY_RECIPE : MEMSAVE_FAMILY_CONV; }
  bool wanted() const { return (family_on(MEMSAVE_FAMILY_CONV) || input_source) && Op<Convolution>::wanted(); }

  std::array<at::Tensor, 3> differentiable() const { return {input, weight, bias}; }
  // A weight that needs its gradient needs the input: stock keeps what backward reads, unless
  // the input is a recipe.
  bool stock_minimal() const { return weight.requires_grad() && !input_source; }
  const char* prepare(const Call& c) const {
    if (input_source && saved_tensor_hooks_set()) return kRecipeUnderHooks;
    if (!c.int_lists({3, 4, 5, 7})) return "symbolic sizes";
    // Note [Traced stand-in] (core/standin.h): where the stand-in follows the weight, a
    // grouped convolution's weight does not say how inductor lays out stock's saved input.
    if (kConvStandInFollowsWeight && tracing() && c.arg(8).toInt() > 1)
      return "compile tracing: grouped convolution (its input's layout under inductor is not the weight's)";
    return nullptr;
  }
  NodePtr<Node> node(const Call& c) const {
    return make_node<Node>(input, weight, bias, c.ints(3), c.ints(4), c.ints(5), c.arg(6).toBool(), c.ints(7),
                           c.arg(8).toInt());
  }
  Footprint keep(const Call&, Node& node) const {
    if (input_source) node.kept_input_.keep(input, input_source);
    return {{0, tensor_bytes(weight)}, {tensor_bytes(input), tensor_bytes(weight)}, input_source ? tensor_bytes(input) : 0};
  }
};

void register_conv(Registrar& r) {
  r.op<Convolution>("convolution");
  r.op<Convolution>("_convolution");  // TorchScript's traced convolutions; same arguments 0-8 and backward
  // Note [Uncovered route]: direct calls of the backend kernels (reached below autograd from
  // convolution, so only a direct call builds their node) and conv_tbc.
  r.uncovered<MEMSAVE_FAMILY_CONV>(
      {"_conv_depthwise2d", "conv_depthwise3d", "_mps_convolution", "_mps_convolution_transpose",
       "_nnpack_spatial_convolution", "_slow_conv2d_forward", "convolution_overrideable", "cudnn_convolution",
       "cudnn_convolution_transpose", "miopen_convolution", "miopen_convolution_transpose",
       "miopen_depthwise_convolution", "mkldnn_convolution", "slow_conv3d_forward", "slow_conv_dilated2d",
       "slow_conv_dilated3d", "slow_conv_transpose2d", "slow_conv_transpose3d", "conv_tbc"});
}
const FamilyRegistration registration(MEMSAVE_FAMILY_CONV, &register_conv, 1u << MEMSAVE_FAMILY_RECIPE);

}  // namespace
}  // namespace memsave
