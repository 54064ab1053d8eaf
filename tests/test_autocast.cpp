// SPDX-License-Identifier: MIT
// test_autocast: the families under automatic mixed precision (issue 14), stock against
// libmemsave, bit for bit. A small network (convolution, batch norm in training mode, ReLU,
// max pooling, a second convolution, in-place ReLU, adaptive average pooling, dropout,
// linear) runs under autocast: float16 and bfloat16 on CUDA, bfloat16 on the CPU (CPU
// autocast). Autocast casts before the autograd key, so our kernels see the reduced
// precision tensors and must keep, and give back, exactly what stock does. Contiguous and
// channels_last inputs; the requires_grad patterns of selective differentiation.
#include <ATen/autocast_mode.h>

#include "testing.h"

namespace {

using namespace memsave_test;  // the harness: tests/testing.h

// Autocast on for one device type and dtype, for one scope; the previous state and the
// cast cache are restored and cleared on exit. LibTorch 2.4 replaced the per-device calls by
// ones that take the device type.
class AutocastGuard {
 public:
  AutocastGuard(at::DeviceType device, at::ScalarType dtype) : device_(device) {
    prev_on_ = enabled();
    prev_dtype_ = get_dtype();
    set(true, dtype);
  }
  ~AutocastGuard() {
    set(prev_on_, prev_dtype_);
    at::autocast::clear_cache();
  }

 private:
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  bool enabled() const { return at::autocast::is_autocast_enabled(device_); }
  at::ScalarType get_dtype() const { return at::autocast::get_autocast_dtype(device_); }
  void set(bool on, at::ScalarType dtype) const {
    at::autocast::set_autocast_enabled(device_, on);
    at::autocast::set_autocast_dtype(device_, dtype);
  }
#else
  bool enabled() const { return device_ == at::kCUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled(); }
  at::ScalarType get_dtype() const {
    return device_ == at::kCUDA ? at::autocast::get_autocast_gpu_dtype() : at::autocast::get_autocast_cpu_dtype();
  }
  void set(bool on, at::ScalarType dtype) const {
    if (device_ == at::kCUDA) {
      at::autocast::set_enabled(on);
      at::autocast::set_autocast_gpu_dtype(dtype);
    } else {
      at::autocast::set_cpu_enabled(on);
      at::autocast::set_autocast_cpu_dtype(dtype);
    }
  }
#endif
  at::DeviceType device_;
  bool prev_on_;
  at::ScalarType prev_dtype_;
};

// Arguments: 0 x, 1 conv1 weight, 2 conv1 bias, 3 bn weight, 4 bn bias, 5 conv2 weight,
// 6 linear weight, 7 linear bias, 8 running mean, 9 running var (updated in place).
std::vector<at::Tensor> make_args(Layout layout) {
  at::manual_seed(11);
  std::vector<at::Tensor> a{at::randn({4, 3, 16, 16}),     at::randn({8, 3, 3, 3}) * 0.3, at::randn({8}) * 0.1,
                            at::rand({8}) + 0.5,           at::randn({8}) * 0.1,         at::randn({8, 8, 3, 3}) * 0.2,
                            at::randn({5, 8}) * 0.3,       at::randn({5}) * 0.1,         at::zeros({8}),
                            at::ones({8})};
  for (auto& t : a) t = to_test_device(t);
  a[0] = with_layout(a[0], layout);
  return a;
}

Forward network(at::ScalarType dtype) {
  return [dtype](std::vector<at::Tensor>& p) -> std::vector<at::Tensor> {
    AutocastGuard autocast(test_device().type(), dtype);
    at::manual_seed(5);  // dropout: the same stream for stock and libmemsave
    at::Tensor h = at::conv2d(p[0], p[1], p[2], 1, 1);
    h = at::batch_norm(h, p[3], p[4], p[8], p[9], /*training=*/true, 0.1, 1e-5, /*cudnn_enabled=*/true);
    h = at::max_pool2d(at::relu(h), {2, 2});
    h = at::conv2d(h, p[5], {}, 1, 1).relu_();
    h = at::adaptive_avg_pool2d(h, {1, 1}).flatten(1);
    h = at::dropout(h, 0.3, /*train=*/true);
    at::Tensor y = at::linear(h, p[6], p[7]).to(at::kFloat);
    return {y, h};
  };
}

// Bit i: argument i requires grad.
constexpr unsigned kInputOnly = 1u << 0, kBiasesOnly = (1u << 2) | (1u << 4) | (1u << 7),
                   kNormOnly = (1u << 3) | (1u << 4), kAll = 0xffu;

TEST(Autocast, FamiliesEqualStockInReducedPrecision) {
  std::vector<at::ScalarType> dtypes{at::kBFloat16};
  if (on_cuda()) dtypes.insert(dtypes.begin(), at::kHalf);
  int ran = 0;
  for (at::ScalarType dtype : dtypes)
    for (Layout layout : {Layout::kContiguous, Layout::kChannelsLast})
      for (unsigned pattern : {kInputOnly, kBiasesOnly, kNormOnly, kAll}) {
        const std::string where = std::string(c10::toString(dtype)) + " " + layout_name(layout) + pattern_name(pattern, 8);
        const auto before = stats();
        const Pair p = compare_with_stock(network(dtype), make_args(layout), pattern, where, random_grad(),
                                          /*buffers=*/{8, 9});
        const auto after = stats();
        if (!p) continue;
        ran++;
        EXPECT_EQ(p.stock.outs.at(1).scalar_type(), dtype) << where << ": autocast did not run in reduced precision";
        if (pattern == kInputOnly) {  // every family but batch norm (training, input grad) has a node of ours
          for (int f : {MEMSAVE_FAMILY_CONV, MEMSAVE_FAMILY_RELU, MEMSAVE_FAMILY_POOL, MEMSAVE_FAMILY_DROPOUT})
            EXPECT_GT(after.substituted[f], before.substituted[f]) << where << " family " << memsave_family_name(f);
        }
      }
  std::printf("autocast cases that ran (stock accepted them): %d\n", ran);
  EXPECT_GT(ran, 0);
}

}  // namespace
