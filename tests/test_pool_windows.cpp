// SPDX-License-Identifier: MIT
// test_pool_windows: max pooling's window arithmetic (hooks/ops/pool_windows.h), alone:
// stock's indices -> window offsets -> stock's indices is the identity on every index stock
// produces, each offset names the element of its window that holds the maximum, the
// narrowest offset type is chosen, and arguments stock rejects are refused.
//
// The hooks library is not linked into tests, so this test compiles hooks/ops/pool_windows.cpp in.
#include <ATen/ATen.h>

#include <limits>

#include "../hooks/ops/pool_windows.h"
#include "testing.h"

namespace {

using memsave::Windows;
using memsave::windows_of;
using memsave_test::bitwise_equal;
using Ints = std::vector<int64_t>;

TEST(PoolWindows, ArgumentsAsStockAcceptsThem) {
  auto w = windows_of(2, {3}, {}, {1}, {1});
  ASSERT_TRUE(w);
  EXPECT_EQ(w->kernel, (Ints{3, 3}));
  EXPECT_EQ(w->stride, (Ints{3, 3}));  // an omitted stride is the kernel size
  EXPECT_EQ(w->padding, (Ints{1, 1}));
  EXPECT_EQ(w->dilation, (Ints{1, 1}));
  w = windows_of(3, {2, 3, 4}, {1, 2, 3}, {0, 1, 2}, {1, 1, 2});
  ASSERT_TRUE(w);
  EXPECT_EQ(w->stride, (Ints{1, 2, 3}));
  EXPECT_FALSE(windows_of(2, {3, 3, 3}, {}, {0}, {1}));  // three sizes for two dimensions
  EXPECT_FALSE(windows_of(2, {0}, {}, {0}, {1}));
  EXPECT_FALSE(windows_of(2, {2}, {0}, {0}, {1}));
  EXPECT_FALSE(windows_of(2, {2}, {}, {-1}, {1}));
  EXPECT_FALSE(windows_of(2, {2}, {}, {0}, {0}));
}

TEST(PoolWindows, NarrowestOffsetType) {
  EXPECT_EQ(windows_of(2, {3}, {}, {0}, {1})->offset_dtype(), at::kByte);
  EXPECT_EQ(windows_of(2, {16}, {}, {0}, {1})->offset_dtype(), at::kByte);   // 256 elements
  EXPECT_EQ(windows_of(2, {17}, {}, {0}, {1})->offset_dtype(), at::kShort);  // 289
  EXPECT_EQ(windows_of(3, {32}, {}, {0}, {1})->offset_dtype(), at::kShort);  // 32768
  EXPECT_EQ(windows_of(3, {33}, {}, {0}, {1})->offset_dtype(), at::kInt);
}

struct Case {
  int dims;
  Ints input, kernel, stride, padding, dilation;
  bool ceil;
};

// Every index stock's kernel produces for random data on `c`, its offsets and back.
void check(const Case& c, at::MemoryFormat format = at::MemoryFormat::Contiguous) {
  at::manual_seed(7);
  const at::Tensor x = at::randn(c.input).contiguous(format);
  const at::Tensor indices =
      c.dims == 2 ? std::get<1>(at::max_pool2d_with_indices(x, c.kernel, c.stride, c.padding, c.dilation, c.ceil))
                  : std::get<1>(at::max_pool3d_with_indices(x, c.kernel, c.stride, c.padding, c.dilation, c.ceil));
  const Windows w = *windows_of(c.dims, c.kernel, c.stride, c.padding, c.dilation);
  const at::IntArrayRef in = x.sizes().slice(x.dim() - c.dims);
  const at::Tensor offsets = w.offsets(indices, in);
  const std::string where = "input " + c10::str(c.input) + " kernel " + c10::str(c.kernel) + " stride " +
                            c10::str(c.stride) + " padding " + c10::str(c.padding) + " dilation " +
                            c10::str(c.dilation) + (c.ceil ? " ceil" : "");
  ASSERT_EQ(offsets.scalar_type(), w.offset_dtype()) << where;
  EXPECT_TRUE(w.represents(indices, in)) << where;
  int64_t window = 1;
  for (int64_t k : w.kernel) window *= k;
  EXPECT_GE(offsets.to(at::kLong).min().item<int64_t>(), 0) << where;
  EXPECT_LT(offsets.to(at::kLong).max().item<int64_t>(), window) << where;
  const at::IntArrayRef out = offsets.sizes().slice(offsets.dim() - w.dims());
  EXPECT_TRUE(bitwise_equal(w.indices(offsets, in, out), indices)) << where;
  // In pieces (Note [Pieces]) as in one piece.
  EXPECT_TRUE(bitwise_equal(w.offsets_in_pieces(indices, in), offsets)) << where;
  EXPECT_TRUE(bitwise_equal(w.indices_in_pieces(offsets, in, out), indices)) << where;

  // Each offset names the maximum's element of its own window: recompute the flat index of
  // element k of the window of output position o by hand on a few positions.
  if (c.dims != 2) return;
  const at::Tensor idx = indices.reshape({-1, indices.size(-2), indices.size(-1)});
  const at::Tensor off = offsets.to(at::kLong).reshape(idx.sizes());
  for (int64_t oh = 0; oh < idx.size(1); oh += std::max<int64_t>(1, idx.size(1) / 3)) {
    for (int64_t ow = 0; ow < idx.size(2); ow += std::max<int64_t>(1, idx.size(2) / 3)) {
      const int64_t k = off[0][oh][ow].item<int64_t>();
      const int64_t kh = k / w.kernel[1], kw = k % w.kernel[1];
      const int64_t ih = oh * w.stride[0] - w.padding[0] + kh * w.dilation[0];
      const int64_t iw = ow * w.stride[1] - w.padding[1] + kw * w.dilation[1];
      EXPECT_EQ(ih * in[1] + iw, idx[0][oh][ow].item<int64_t>()) << where << " at " << oh << "," << ow;
    }
  }
}

TEST(PoolWindows, RoundTripOnStockIndices) {
  const std::vector<Case> cases = {
      {2, {2, 3, 9, 11}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, false},
      {2, {2, 3, 9, 11}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, true},
      {2, {1, 2, 12, 7}, {2, 3}, {1, 2}, {0, 1}, {1, 1}, false},
      {2, {1, 2, 13, 13}, {3, 2}, {2, 1}, {1, 0}, {2, 3}, true},  // dilation
      {2, {3, 9, 10}, {2, 2}, {2, 2}, {0, 0}, {1, 1}, false},     // no batch dimension
      {2, {1, 1, 1, 40}, {1, 4}, {1, 3}, {0, 1}, {1, 1}, false},  // height 1: a 1-d pool
      {2, {2, 2, 40, 40}, {17, 17}, {3, 3}, {8, 8}, {1, 1}, false},  // int16 offsets
      {2, {8, 64, 40, 40}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, false},   // large enough for pieces
      {3, {1, 2, 7, 8, 9}, {2, 3, 2}, {2, 2, 1}, {1, 1, 0}, {1, 1, 1}, true},
      {3, {2, 1, 9, 9, 9}, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {2, 1, 2}, false},
  };
  for (const Case& c : cases) check(c);
  check(cases[0], at::MemoryFormat::ChannelsLast);
  check(cases[7], at::MemoryFormat::ChannelsLast);
}

// Note [Index outside its window]: an index off its window's dilation grid, or outside the
// window, is seen; an index on it is not refused. The case test_property found on 2.6 and 2.14.
TEST(PoolWindows, IndicesOutsideTheirWindowAreSeen) {
  const Windows w = *windows_of(3, {2, 1, 1}, {}, {1, 0, 0}, {2, 2, 1});
  const std::vector<int64_t> in{2, 2, 3};  // one output depth: the window {-1, 1}
  const at::Tensor on_grid = at::arange(6, 12, at::kLong).view({1, 1, 1, 2, 3});  // depth 1
  const at::Tensor depth0 = at::arange(0, 6, at::kLong).view({1, 1, 1, 2, 3});     // 2.x channels_last, all -inf
  EXPECT_TRUE(w.represents(on_grid, in));
  EXPECT_FALSE(w.represents(depth0, in));
  at::Tensor one_off = on_grid.clone();
  one_off.view(-1)[4] = 1;  // one element of six
  EXPECT_FALSE(w.represents(one_off, in));
  // Stock's own indices on such an input, the layout that showed it.
  at::Tensor x = at::randn({2, 3, 2, 2, 3});
  x.select(2, 1).fill_(-std::numeric_limits<float>::infinity());
  x = x.contiguous(at::MemoryFormat::ChannelsLast3d);
  const at::Tensor stock = std::get<1>(at::max_pool3d_with_indices(x, {2, 1, 1}, {}, {1, 0, 0}, {2, 2, 1}, false));
  const bool in_window = stock.ge(6).all().item<bool>();
  EXPECT_EQ(w.represents(stock, in), in_window) << "stock's indices span " << stock.min().item<int64_t>() << ".."
                                                << stock.max().item<int64_t>();
  // No dilation: max(s_d, 0) is always in the window, nothing is computed.
  EXPECT_TRUE(windows_of(3, {2, 1, 1}, {}, {1, 0, 0}, {1, 1, 1})->represents(depth0, in));
}

TEST(PoolWindows, OffsetsOutsideTheWindowAreRefused) {
  const Windows w = *windows_of(2, {2}, {}, {0}, {1});
  const at::Tensor offsets = at::full({1, 1, 2, 2}, 200, at::kByte);  // far outside a 2x2 window of a 4x4 plane
  EXPECT_NE(memsave_test::error_of([&] { w.indices(offsets, {4, 4}, {2, 2}); }).find("out of range"), std::string::npos);
}

}  // namespace
