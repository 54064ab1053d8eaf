// SPDX-License-Identifier: MIT
// test_bitmask: 1-bit masks round-trip values and strides at one bit per element; the raw
// CPU path and the tensor-op path (the one CUDA takes) give the same bytes; the fused tests
// decide as stock's backward kernels do, special values included.
//
// The hooks library is not linked into tests, so this test compiles hooks/core/bitmask.cpp in.
#include <ATen/ATen.h>

#include <limits>

#include "../hooks/core/bitmask.h"
#include "testing.h"

namespace {

using memsave::BitMask;
using memsave_test::bitwise_equal;
using memsave_test::on_cuda;
using memsave_test::to_test_device;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Runs `fn` with the tensor-op path forced on or off.
template <class Fn>
auto with_tensor_ops(bool on, Fn&& fn) {
  struct Restore {
    ~Restore() { BitMask::force_tensor_ops(false); }
  } restore;
  BitMask::force_tensor_ops(on);
  return fn();
}

// Layouts of a 4-D tensor: contiguous, channels_last, a slice (non-dense), a transpose of a
// slice (non-dense, permuted), size-1 dimensions, an expanded tensor (overlapping).
std::vector<std::pair<std::string, at::Tensor>> layouts(at::ScalarType dtype) {
  at::manual_seed(0);
  auto o = at::TensorOptions().dtype(dtype);
  return {
      {"contiguous", at::randn({2, 3, 5, 7}, o)},
      {"channels_last", at::randn({2, 3, 5, 7}, o).contiguous(at::MemoryFormat::ChannelsLast)},
      {"slice", at::randn({2, 3, 5, 14}, o).slice(3, 0, 14, 2)},
      {"transposed slice", at::randn({2, 6, 5, 7}, o).slice(1, 0, 6, 2).transpose(1, 3)},
      {"size-1 dims", at::randn({1, 3, 1, 7}, o).contiguous(at::MemoryFormat::ChannelsLast)},
      {"expanded", at::randn({1, 3, 1, 7}, o).expand({2, 3, 5, 7})},
      {"1-D 1001", at::randn({1001}, o)},
      {"0-dim", at::randn({}, o)},
      {"empty", at::randn({0, 3}, o)},
  };
}

// Packs src > 0 with src's layout, by both paths, and unpacks it into every dtype.
void round_trip(const std::string& what, const at::Tensor& src) {
  at::Tensor pred = src.gt(0);
  BitMask raw(pred, src);
  BitMask ops = with_tensor_ops(true, [&] { return BitMask(pred, src); });
  EXPECT_EQ(raw.nbytes(), static_cast<uint64_t>((src.numel() + 7) / 8)) << what;
  EXPECT_TRUE(bitwise_equal(raw.bits(), ops.bits())) << what << ": raw and tensor-op paths pack differently";
  for (at::ScalarType dtype : {at::kFloat, at::kDouble, at::kBFloat16, at::kHalf, at::kBool, at::kByte}) {
    at::Tensor want = BitMask::keeps_strides(src)
                          ? at::empty_strided(src.sizes(), src.strides(), pred.options().dtype(dtype)).copy_(pred)
                          : pred.to(dtype).contiguous();
    at::Tensor back = raw.unpack(dtype);
    at::Tensor back_ops = with_tensor_ops(true, [&] { return ops.unpack(dtype); });
    EXPECT_TRUE(bitwise_equal(back, want)) << what << " " << dtype;
    EXPECT_TRUE(bitwise_equal(back_ops, want)) << what << " " << dtype << " (tensor ops)";
  }
  // Packed from the predicate's own (dense) layout, it comes back with that layout.
  EXPECT_TRUE(bitwise_equal(BitMask(pred).unpack(at::kBool), pred)) << what;
}

TEST(BitMask, RoundTripsValuesAndStrides) {
  for (at::ScalarType dtype : {at::kFloat, at::kDouble, at::kBFloat16})
    for (const auto& [what, t] : layouts(dtype)) round_trip(what + " " + c10::toString(dtype), t);
  at::manual_seed(1);
  for (int64_t n : {1, 7, 8, 9, 63, 64, 65, 511, 512, 513, 4099, 70001}) round_trip(std::to_string(n), at::randn({n}));
}

// On CUDA the masks are packed and unpacked by the tensor-op path: the CPU's bytes, and the
// values and strides back (issue 14).
TEST(BitMask, CudaPacksAsTheCpu) {
  if (!on_cuda()) GTEST_SKIP() << "CUDA only: masks of CUDA tensors";
  for (const auto& [what, t] : layouts(at::kFloat)) {
    if (what == "expanded") continue;  // to_test_device cannot copy into overlapping memory
    at::Tensor src = to_test_device(t), pred = src.gt(0);
    BitMask cpu(t.gt(0), t), cuda(pred, src);
    EXPECT_TRUE(bitwise_equal(cpu.bits(), cuda.bits().cpu())) << what;
    for (at::ScalarType dtype : {at::kFloat, at::kHalf, at::kBool}) {
      at::Tensor want = BitMask::keeps_strides(src)
                            ? at::empty_strided(src.sizes(), src.strides(), pred.options().dtype(dtype)).copy_(pred)
                            : pred.to(dtype).contiguous();
      EXPECT_TRUE(bitwise_equal(cuda.unpack(dtype), want)) << what << " " << dtype;
    }
  }
}

TEST(BitMask, StridesOfNonDenseAndOverlapping) {
  at::Tensor slice = at::randn({4, 10}).slice(1, 0, 10, 2);
  EXPECT_TRUE(BitMask::keeps_strides(slice));
  at::Tensor back = BitMask(slice.gt(0), slice).unpack(at::kDouble);
  EXPECT_EQ(back.strides(), slice.strides()) << "a slice comes back with its strides";
  at::Tensor expanded = at::randn({1, 5}).expand({3, 5});
  EXPECT_FALSE(BitMask::keeps_strides(expanded));
  at::Tensor back2 = BitMask(expanded.gt(0), expanded).unpack(at::kFloat);
  EXPECT_TRUE(back2.is_contiguous()) << "an expanded tensor comes back contiguous";
  EXPECT_TRUE(at::equal(back2, expanded.gt(0).to(at::kFloat)));
}

TEST(BitMask, UnpacksAnyPairOfValues) {
  at::Tensor src = at::randn({3, 50}).contiguous(at::MemoryFormat::Contiguous);
  at::Tensor pred = src.gt(0);
  for (bool tensor_ops : {false, true})
    for (at::ScalarType dtype : {at::kFloat, at::kDouble, at::kBFloat16, at::kHalf})
      for (auto [set, unset] : {std::pair<double, double>{kInf, -kInf}, {kNaN, -kInf}, {0.5, -3}, {-0.0, 0.0}}) {
        at::Tensor got = with_tensor_ops(tensor_ops, [&] { return BitMask(pred).unpack(dtype, set, unset); });
        at::Tensor want = at::where(pred, at::full({}, set, at::TensorOptions().dtype(dtype)),
                                    at::full({}, unset, at::TensorOptions().dtype(dtype)));
        EXPECT_TRUE(bitwise_equal(got, want)) << dtype << " " << set << "/" << unset << " ops " << tensor_ops;
      }
}

TEST(BitMask, TakeBitsKeepsTheLayout) {
  at::Tensor src = at::randn({2, 3, 4, 5}).contiguous(at::MemoryFormat::ChannelsLast);
  BitMask mask(src.gt(0));
  at::Tensor want = mask.unpack(at::kFloat);
  at::Tensor bits = mask.take_bits();
  EXPECT_FALSE(mask.defined());
  EXPECT_TRUE(bitwise_equal(mask.unpack_bits(bits, at::kFloat, 1, 0), want));
}

// Values that exercise every comparison: the bounds, their neighbours, signed zeros,
// infinities and NaN, spread over the vector body and the scalar tail of stock's kernels.
at::Tensor special_values(at::ScalarType dtype, std::vector<double> extra) {
  std::vector<double> v{kNaN, kInf, -kInf, 0.0, -0.0, 1, -1, 1e-30, -1e-30, 6, 0.5, -0.5};
  v.insert(v.end(), extra.begin(), extra.end());
  at::manual_seed(3);
  at::Tensor t = at::randn({257}, at::TensorOptions().dtype(at::kDouble));
  for (size_t i = 0; i < v.size(); i++) {
    t[static_cast<int64_t>(i)] = v[i];
    t[static_cast<int64_t>(256 - i)] = v[i];
    t[static_cast<int64_t>(100 + i)] = v[i];
  }
  at::Tensor out = t.to(dtype);
  // Neighbours of the bounds in the dtype itself.
  for (size_t i = 0; i < extra.size(); i++) {
    at::Tensor b = at::full({}, extra[i], out.options());
    out[static_cast<int64_t>(40 + 2 * i)] = at::nextafter(b, at::full({}, kInf, out.options()));
    out[static_cast<int64_t>(41 + 2 * i)] = at::nextafter(b, at::full({}, -kInf, out.options()));
  }
  return out;
}

// The proxy must make stock's kernel take the same branch as the real tensor does.
void expect_kernel_agrees(const std::string& what, const at::Tensor& x, BitMask::Test test, double a, double b,
                          double set, double unset, const std::function<at::Tensor(const at::Tensor&, const at::Tensor&)>& kernel) {
  at::manual_seed(5);
  at::Tensor grad = at::randn(x.sizes(), x.options());
  grad[3] = kNaN;
  grad[4] = -0.0;
  grad[5] = kInf;
  at::Tensor want = kernel(grad, x);
  for (bool tensor_ops : {false, true}) {
    at::Tensor got = with_tensor_ops(tensor_ops, [&] {
      BitMask mask(x, test, a, b);
      return kernel(grad, mask.unpack(x.scalar_type(), set, unset));
    });
    EXPECT_TRUE(bitwise_equal(got, want)) << what << " " << x.scalar_type() << " ops " << tensor_ops;
  }
}

TEST(BitMask, ThresholdTestMatchesThresholdBackward) {
  for (at::ScalarType dtype : {at::kFloat, at::kDouble, at::kBFloat16})
    for (double t : {0.0, 0.5, -1.0, 6.0, kInf, -kInf, 1e-30}) {
      if (dtype != at::kFloat && dtype != at::kDouble && t == 1e-30) continue;  // not exact in bfloat16
      at::Tensor x = special_values(dtype, {t});
      expect_kernel_agrees("threshold " + std::to_string(t), x, BitMask::Test::kNotAtMost, t, 0, t == kInf ? kNaN : kInf,
                           -kInf, [&](const at::Tensor& g, const at::Tensor& s) { return at::threshold_backward(g, s, t); });
    }
}

TEST(BitMask, GreaterTestMatchesLeakyReluBackward) {
  for (at::ScalarType dtype : {at::kFloat, at::kDouble, at::kBFloat16})
    for (double slope : {0.01, 0.0, 0.2, -0.5, 2.0})
      for (bool is_result : {false, true}) {
        if (is_result && slope < 0) continue;  // stock refuses; relu.cpp test covers the error
        at::Tensor x = special_values(dtype, {});
        expect_kernel_agrees("leaky_relu " + std::to_string(slope), x, BitMask::Test::kGreater, 0, 0, 1, 0,
                             [&](const at::Tensor& g, const at::Tensor& s) {
                               return at::leaky_relu_backward(g, s, slope, is_result);
                             });
      }
}

TEST(BitMask, InsideTestMatchesHardtanhBackwardWithoutNaN) {
  // 1.13 has no bfloat16 hardtanh_backward on CPU; the NaN case goes to stock (relu.cpp).
  for (at::ScalarType dtype : {at::kFloat, at::kDouble})
    for (auto [lo, hi] : {std::pair<double, double>{-1, 1}, {0, 6}, {-0.3, 0.7}, {-kInf, 0.5}, {-2, kInf}, {-kInf, kInf}}) {
      at::Tensor x = special_values(dtype, {lo, hi});
      x.masked_fill_(x.isnan(), 0.25);
      const double inside = std::isinf(lo) && std::isinf(hi) ? 0 : std::isinf(lo) ? hi - 1 : std::isinf(hi) ? lo + 1 : (lo + hi) / 2;
      expect_kernel_agrees("hardtanh " + std::to_string(lo) + " " + std::to_string(hi), x, BitMask::Test::kInside, lo, hi,
                           inside, -kInf,
                           [&](const at::Tensor& g, const at::Tensor& s) { return at::hardtanh_backward(g, s, lo, hi); });
    }
}

TEST(BitMask, FusedTestReportsNaN) {
  at::Tensor x = at::randn({1000});
  bool nan = true;
  BitMask(x, BitMask::Test::kInside, -1, 1, &nan);
  EXPECT_FALSE(nan);
  x[777] = kNaN;
  BitMask(x, BitMask::Test::kInside, -1, 1, &nan);
  EXPECT_TRUE(nan);
  nan = false;
  with_tensor_ops(true, [&] { return BitMask(x, BitMask::Test::kInside, -1, 1, &nan); });
  EXPECT_TRUE(nan);
}

TEST(BitMask, FusedTestEqualsTensorOpsOnEveryLayout) {
  for (at::ScalarType dtype : {at::kFloat, at::kDouble, at::kBFloat16, at::kHalf})
    for (const auto& [what, t] : layouts(dtype))
      for (BitMask::Test test : {BitMask::Test::kGreater, BitMask::Test::kNotAtMost, BitMask::Test::kInside}) {
        BitMask raw(t, test, -0.5, 0.5);
        BitMask ops = with_tensor_ops(true, [&] { return BitMask(t, test, -0.5, 0.5); });
        EXPECT_TRUE(bitwise_equal(raw.bits(), ops.bits())) << what << " " << dtype << " test " << int(test);
      }
}

}  // namespace
