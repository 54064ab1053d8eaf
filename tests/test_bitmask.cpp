// SPDX-License-Identifier: MIT
// test_bitmask: 1-bit masks round-trip values and strides, at one bit per element.
//
// The hooks library is not linked into tests, so this test compiles hooks/bitmask.cpp in.
#include <ATen/ATen.h>

#include "../hooks/bitmask.h"
#include "testing.h"

namespace {

using memsave_test::bitwise_equal;

void round_trip(const at::Tensor& src) {
  at::Tensor pred = src.gt(0);
  memsave::BitMask mask(pred);
  EXPECT_EQ(mask.nbytes(), static_cast<uint64_t>((src.numel() + 7) / 8));
  at::Tensor back = mask.unpack(at::kFloat);
  EXPECT_TRUE(bitwise_equal(back, pred.to(at::kFloat).contiguous(src.suggest_memory_format())))
      << src.sizes() << " " << src.strides();
}

TEST(BitMask, RoundTripsValuesAndLayouts) {
  at::manual_seed(0);
  for (int64_t n : {1, 7, 8, 9, 1000, 4099}) round_trip(at::randn({n}));
  round_trip(at::randn({2, 3, 5, 7}));
  round_trip(at::randn({2, 3, 5, 7}).contiguous(at::MemoryFormat::ChannelsLast));
  round_trip(at::randn({2, 3, 4, 5, 6}).contiguous(at::MemoryFormat::ChannelsLast3d));
  round_trip(at::randn({0, 3}));
}

TEST(BitMask, NonDenseComesBackContiguous) {
  at::Tensor src = at::randn({4, 10}).slice(1, 0, 10, 2);
  memsave::BitMask mask(src.gt(0));
  at::Tensor back = mask.unpack(at::kDouble);
  EXPECT_TRUE(back.is_contiguous());
  EXPECT_TRUE(at::equal(back, src.gt(0).to(at::kDouble)));
}

}  // namespace
