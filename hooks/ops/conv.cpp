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
// keeps what backward needs, and the call goes to stock (counted as passthrough).
#include <ATen/ops/convolution_backward.h>
#include <torch/csrc/autograd/saved_variable.h>

#include "../core/kernel.h"

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
class MemsaveConvolutionBackward final : public MemsaveNode<at::Tensor> {
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

 private:
  at::Tensor unpack() override { return weight_.unpack(); }
  void release() override { weight_.reset_data(); }
  void fields(Fields& f) override {
    f.geometry(input_);
    f.saved(weight_, false);
    f.optional_ints(bias_sizes_);
    for (const auto* v : {&stride_, &padding_, &dilation_, &output_padding_}) f.ints(*v);
    f.flag(transposed_);
    f.integer(groups_);
  }

  void backward(const at::Tensor& grad, const at::Tensor& weight, variable_list& out) override {
    const std::array<bool, 3> mask{wanted(0), wanted(1), wanted(2)};
    // The weight has no gradient edge (we only build this node for a frozen weight).
    TORCH_INTERNAL_ASSERT(!mask[1], name(), ": weight gradient requested without a kept input");
    at::OptionalIntArrayRef bias_sizes;
    if (bias_sizes_) bias_sizes = at::IntArrayRef(*bias_sizes_);
    // Traced, Note [Traced stand-in] in core/standin.h: in the layout a compiler gave the
    // tensor it follows (kConvStandInFollowsWeight, compat.h).
    const at::Tensor& like = kConvStandInFollowsWeight && weight.dim() == 4 ? weight : grad;
    auto res = at::convolution_backward(grad, input_.stand_in_like(like), weight, bias_sizes, stride_, padding_,
                                        dilation_, transposed_, output_padding_, groups_, mask);
    if (mask[0]) out[0] = std::move(std::get<0>(res));
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
  explicit Convolution(const Call& c) : input(c.tensor(0)), weight(c.tensor(1)), bias(c.optional_tensor(2)) {}

  std::array<at::Tensor, 3> differentiable() const { return {input, weight, bias}; }
  // A weight that needs its gradient needs the input: stock keeps what backward reads.
  bool stock_minimal() const { return weight.requires_grad(); }
  const char* prepare(const Call& c) const {
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
  Footprint keep(const Call&, Node&) const {
    return {{0, tensor_bytes(weight)}, {tensor_bytes(input), tensor_bytes(weight)}};
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
const FamilyRegistration registration(MEMSAVE_FAMILY_CONV, &register_conv);

}  // namespace
}  // namespace memsave
