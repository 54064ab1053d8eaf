// SPDX-License-Identifier: MIT
// bitmask.cpp: packing and unpacking 1-bit masks (Note [Mask layout] in bitmask.h): loops over
// raw memory for dense CPU tensors, tensor ops for everything else.
#include "bitmask.h"

#include "rules.h"
#include "shared.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <ATen/Parallel.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/bitwise_left_shift.h>
#include <ATen/ops/constant_pad_nd.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_strided.h>
#include <ATen/ops/isnan.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/where.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

namespace memsave {
namespace {

std::atomic<bool> g_force_tensor_ops{false};

// The CPU loops work on blocks of kBlock elements (kBlock / 8 mask bytes), with one flag
// byte per element on the stack. The block size is a compile-time constant so that the
// compiler vectorises the inner loops without a remainder loop (GCC does so at -O2 only
// then); the last, partial block goes through the same code on a padded copy.
constexpr int64_t kBlock = 512;
constexpr int64_t kGrainBlocks = 64;  // 32K elements per parallel task at least

// Eight flag bytes (0 or 1) -> one byte, flag i in bit i. In the product, flag i (at bit 8i)
// times 2^(56-7j) lands at bit 8i+56-7j; those positions are distinct for all (i, j), so
// nothing carries, and the top byte holds exactly the terms i == j, at bit 56 + i.
inline uint8_t gather8(const uint8_t* flags) {
  uint64_t v;
  std::memcpy(&v, flags, 8);
  return static_cast<uint8_t>((v * 0x0102040810204080ULL) >> 56);
}

// One byte -> eight flag bytes (0 or 1): lane i keeps bit i of the byte, then adding 0x7f
// moves any nonzero lane's value into its bit 7, without carrying into the next lane.
inline uint64_t spread8(uint8_t byte) {
  const uint64_t lanes = (byte * 0x0101010101010101ULL) & 0x8040201008040201ULL;
  return ((lanes + 0x7f7f7f7f7f7f7f7fULL) >> 7) & 0x0101010101010101ULL;
}

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "gather8/spread8 assume little-endian lanes");

// The value the comparisons of an element of type T use: float for the 16-bit types.
template <typename T>
using compute_t = std::conditional_t<std::is_same<T, double>::value, double, float>;

// `v` converted to T and back to the compute type, saturating instead of overflowing.
template <typename T>
compute_t<T> bound_as(double v) {
  using C = compute_t<T>;
  const double top = static_cast<double>(std::numeric_limits<T>::max());
  if (std::isnan(v)) return std::numeric_limits<C>::quiet_NaN();
  if (v > top) return std::numeric_limits<C>::infinity();
  if (v < -top) return -std::numeric_limits<C>::infinity();
  return static_cast<C>(static_cast<T>(static_cast<compute_t<T>>(v)));
}

// The tests of the fused constructor (BitMask::Test) as flag functors: flag(x) is the test of
// one element. On x86-64 the float ones also test four elements at once with SSE2 (part of
// the x86-64 baseline, so no CPU check): bit i of simd(v) is flag(lane i), NaN included, as
// each vector comparison is the same IEEE predicate as the scalar one (cmpnle is !(x <= y),
// cmpnge is !(x >= y)). Mask creation is a pass over every activation in the forward; the
// scalar loop cost MobileNetV2 (relu6 everywhere, little arithmetic per element) several
// percent of its step time.
template <typename T>
struct Greater {
  compute_t<T> lo;
  uint8_t operator()(T v) const { return static_cast<compute_t<T>>(v) > lo; }
};
template <typename T>
struct NotAtMost {
  compute_t<T> lo;
  uint8_t operator()(T v) const { return !(static_cast<compute_t<T>>(v) <= lo); }
};
template <typename T>
struct Inside {
  compute_t<T> lo, hi;
  uint8_t operator()(T v) const {
    const compute_t<T> c = static_cast<compute_t<T>>(v);
    return !(c <= lo || c >= hi);
  }
};

template <typename Flag>
struct HasSimd : std::false_type {};

#if defined(__SSE2__)
inline int simd(const Greater<float>& f, __m128 v) { return _mm_movemask_ps(_mm_cmpgt_ps(v, _mm_set1_ps(f.lo))); }
inline int simd(const NotAtMost<float>& f, __m128 v) { return _mm_movemask_ps(_mm_cmpnle_ps(v, _mm_set1_ps(f.lo))); }
inline int simd(const Inside<float>& f, __m128 v) {
  return _mm_movemask_ps(_mm_and_ps(_mm_cmpnle_ps(v, _mm_set1_ps(f.lo)), _mm_cmpnge_ps(v, _mm_set1_ps(f.hi))));
}
template <>
struct HasSimd<Greater<float>> : std::true_type {};
template <>
struct HasSimd<NotAtMost<float>> : std::true_type {};
template <>
struct HasSimd<Inside<float>> : std::true_type {};

// pack_block for the float tests: eight elements per mask byte, two vectors of four.
template <bool kNan, typename Flag>
inline bool pack_block_simd(const float* p, uint8_t* out, const Flag& flag) {
  __m128 nan = _mm_setzero_ps();
  for (int64_t j = 0; j < kBlock / 8; j++) {
    const __m128 a = _mm_loadu_ps(p + 8 * j), b = _mm_loadu_ps(p + 8 * j + 4);
    out[j] = static_cast<uint8_t>(simd(flag, a) | (simd(flag, b) << 4));
    if (kNan) nan = _mm_or_ps(nan, _mm_or_ps(_mm_cmpunord_ps(a, a), _mm_cmpunord_ps(b, b)));
  }
  return kNan && _mm_movemask_ps(nan) != 0;
}
#endif

// One full block: kBlock elements at `p` -> kBlock / 8 bytes at `out`. Returns whether a
// NaN was seen (only looked for with kNan).
template <bool kNan, typename T, typename Flag>
inline bool pack_block(const T* p, uint8_t* out, const Flag& flag) {
#if defined(__SSE2__)
  if constexpr (std::is_same<T, float>::value && HasSimd<Flag>::value) return pack_block_simd<kNan>(p, out, flag);
#endif
  alignas(64) uint8_t flags[kBlock];
  for (int64_t j = 0; j < kBlock; j++) flags[j] = flag(p[j]);
  for (int64_t j = 0; j < kBlock / 8; j++) out[j] = gather8(flags + 8 * j);
  if (!kNan) return false;
  uint8_t any = 0;
  for (int64_t j = 0; j < kBlock; j++) {
    const compute_t<T> v = static_cast<compute_t<T>>(p[j]);
    any |= static_cast<uint8_t>(v != v);
  }
  return any != 0;
}

// Packs `n` elements at `x` (in storage order) into `out`, flag(x[i]) giving bit i. With
// kNan, also reports whether any element is NaN.
template <bool kNan, typename T, typename Flag>
bool pack_raw(const T* x, uint8_t* out, int64_t n, Flag flag) {
  std::atomic<bool> saw_nan{false};
  const int64_t full = n / kBlock;
  at::parallel_for(0, full, kGrainBlocks, [&](int64_t b0, int64_t b1) {
    bool nan = false;
    for (int64_t b = b0; b < b1; b++) nan |= pack_block<kNan>(x + b * kBlock, out + b * (kBlock / 8), flag);
    if (nan) saw_nan.store(true, std::memory_order_relaxed);
  });
  const int64_t rest = n - full * kBlock;
  if (rest > 0) {
    // The partial block, on a copy padded with its own first element; its padding bits are
    // cleared, and only the bytes that hold elements are written.
    T tail[kBlock];
    const T* p = x + full * kBlock;
    std::copy(p, p + rest, tail);
    std::fill(tail + rest, tail + kBlock, p[0]);
    uint8_t bytes[kBlock / 8];
    if (pack_block<kNan>(tail, bytes, flag)) saw_nan.store(true, std::memory_order_relaxed);
    const int64_t nbytes = (rest + 7) / 8;
    if (rest % 8) bytes[nbytes - 1] &= static_cast<uint8_t>((1u << (rest % 8)) - 1);
    std::memcpy(out + full * (kBlock / 8), bytes, nbytes);
  }
  return saw_nan.load(std::memory_order_relaxed);
}

// One full block: kBlock / 8 bytes at `bits` -> kBlock elements at `out`: `set` where the
// bit is set, else `unset`. U is the unsigned integer of the element's size, so the select
// is a plain blend.
template <typename U>
inline void unpack_block(const uint8_t* bits, U* out, U set, U unset) {
  alignas(64) uint8_t flags[kBlock];
  for (int64_t j = 0; j < kBlock / 8; j++) {
    const uint64_t lanes = spread8(bits[j]);
    std::memcpy(flags + 8 * j, &lanes, 8);
  }
  for (int64_t j = 0; j < kBlock; j++) out[j] = flags[j] ? set : unset;
}

// Writes `n` elements at `out` (in storage order) from the bits at `bits`.
template <typename U>
void unpack_raw(const uint8_t* bits, U* out, int64_t n, U set, U unset) {
  const int64_t full = n / kBlock;
  at::parallel_for(0, full, kGrainBlocks, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; b++) unpack_block(bits + b * (kBlock / 8), out + b * kBlock, set, unset);
  });
  const int64_t rest = n - full * kBlock;
  if (rest > 0) {
    uint8_t bytes[kBlock / 8] = {};
    std::memcpy(bytes, bits + full * (kBlock / 8), (rest + 7) / 8);
    U tail[kBlock];
    unpack_block(bytes, tail, set, unset);
    std::copy(tail, tail + rest, out + full * kBlock);
  }
}

template <typename T, typename U>
U raw_value(double v) {
  T t;
  if constexpr (std::is_same<T, bool>::value) {
    t = v != 0;
  } else if constexpr (std::is_same<T, uint8_t>::value) {
    t = static_cast<uint8_t>(v);
  } else {
    using C = compute_t<T>;
    const double top = static_cast<double>(std::numeric_limits<T>::max());
    // Saturate like bound_as, so that out-of-range values do not overflow the cast.
    const C c = std::isnan(v) ? std::numeric_limits<C>::quiet_NaN()
                : v > top     ? std::numeric_limits<C>::infinity()
                : v < -top    ? -std::numeric_limits<C>::infinity()
                              : static_cast<C>(v);
    t = static_cast<T>(c);
  }
  U u;
  static_assert(sizeof(T) == sizeof(U), "raw_value: size mismatch");
  std::memcpy(&u, &t, sizeof u);
  return u;
}

template <typename T, typename U>
void unpack_as(const uint8_t* bits, void* out, int64_t n, double set, double unset) {
  unpack_raw(bits, static_cast<U*>(out), n, raw_value<T, U>(set), raw_value<T, U>(unset));
}

bool cpu_raw_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
    case at::kDouble:
    case at::kBFloat16:
    case at::kHalf:
      return true;
    default:
      return false;
  }
}

// Traced (Note [Compiled autograd] in node.h) the tensors are fakes: tensor ops only.
bool use_raw_path(const at::Tensor& t) {
  return !g_force_tensor_ops.load(std::memory_order_relaxed) && !tracing() && t.is_cpu() &&
         t.is_non_overlapping_and_dense();
}

// A sufficient test that no two elements of `t` share memory: sorted by stride, each
// dimension steps over the whole extent of the smaller ones.
bool no_overlap(const at::Tensor& t) {
  if (t.is_non_overlapping_and_dense()) return true;
  std::vector<std::pair<int64_t, int64_t>> dims;  // (stride, size) of dimensions with size > 1
  for (int64_t d = 0; d < t.dim(); d++)
    if (t.size(d) > 1) dims.emplace_back(t.stride(d), t.size(d));
  std::sort(dims.begin(), dims.end());
  int64_t extent = 1;  // elements spanned by the dimensions so far
  for (const auto& [stride, size] : dims) {
    if (stride < extent) return false;
    extent = stride * (size - 1) + extent;
  }
  return true;
}

// Bit i of byte k of the tensor-op path: the weights 1, 2, 4, ... 128 on `device`.
at::Tensor bit_weights(const at::Device& device) {
  const auto opts = at::TensorOptions().dtype(at::kByte).device(device);
  return at::bitwise_left_shift(at::ones({8}, opts), at::arange(8, opts));
}

// The mask's flags, one bool per element, in the mask's memory order (Note [Mask layout]).
at::Tensor flags_in_order(const at::Tensor& bits, at::IntArrayRef sizes, at::IntArrayRef order, int64_t numel) {
  std::vector<int64_t> permuted(order.size()), back(order.size());
  for (size_t i = 0; i < order.size(); i++) {
    permuted[i] = sizes[order[i]];
    back[order[i]] = static_cast<int64_t>(i);
  }
  return bits.unsqueeze(1).bitwise_and(bit_weights(bits.device())).ne(0).view(-1).narrow(0, 0, numel)
      .view(permuted).permute(back);
}

#if MEMSAVE_COMPILE_TRACING
// memsave::mask_flags (Note [Traced mask] in bitmask.h), CompositeExplicitAutograd: CPU, CUDA
// and meta alike.
at::Tensor mask_flags_kernel(const at::Tensor& bits, const at::Tensor& like, at::IntArrayRef like_strides,
                             at::IntArrayRef sizes, at::IntArrayRef order, int64_t numel) {
  at::Tensor flags = flags_in_order(bits, sizes, order, numel);
  if (like.strides() != like_strides && like.sizes() == sizes) return flags.contiguous(like.suggest_memory_format());
  return flags;
}

using MaskFlagsFn = at::Tensor(const at::Tensor&, const at::Tensor&, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef,
                               int64_t);
std::atomic<bool> g_mask_flags_op{false};
#endif

}  // namespace

#if MEMSAVE_COMPILE_TRACING
void register_mask_flags_op() {
  // Never destroyed, as the Registrar's libraries (init.cpp); flexible_layout as for
  // memsave::stand_in_like (core/standin.cpp).
  auto* lib = new torch::Library(torch::Library::FRAGMENT, "memsave", c10::nullopt, __FILE__, __LINE__);
  lib->def("mask_flags(Tensor bits, Tensor like, int[] like_stride, int[] size, int[] order, int numel) -> Tensor",
           {at::Tag::flexible_layout});
  lib->impl("mask_flags", c10::DispatchKey::CompositeExplicitAutograd, TORCH_FN(mask_flags_kernel));
  lib->impl("mask_flags", c10::DispatchKey::Autograd, torch::CppFunction::makeFallthrough());
  g_mask_flags_op.store(true);
}
#else
void register_mask_flags_op() {}
#endif

bool BitMask::keeps_strides(const at::Tensor& t) { return no_overlap(t); }

void BitMask::force_tensor_ops(bool on) { g_force_tensor_ops.store(on, std::memory_order_relaxed); }

void BitMask::set_layout(const at::Tensor& like) {
  sizes_ = like.sizes().vec();
  strides_ = like.strides().vec();
  numel_ = like.numel();
  dense_ = like.is_non_overlapping_and_dense();
  exact_ = no_overlap(like);
  order_.resize(like.dim());
  std::iota(order_.begin(), order_.end(), 0);
  if (!exact_) return;  // row-major order; unpacks contiguous
  // Dimensions of size > 1 by decreasing stride (distinct, as nothing overlaps), then the
  // size-1 dimensions, which do not change the order of elements.
  std::stable_sort(order_.begin(), order_.end(), [&](int64_t a, int64_t b) {
    const bool a1 = sizes_[a] == 1, b1 = sizes_[b] == 1;
    if (a1 || b1) return !a1 && b1;
    return strides_[a] > strides_[b];
  });
}

void BitMask::pack_tensor_ops(const at::Tensor& pred) {
  at::Tensor flags = pred.scalar_type() == at::kBool ? pred : pred.ne(0);
  flags = flags.permute(order_).contiguous().view(-1).to(at::kByte);
  const int64_t padded = (numel_ + 7) / 8 * 8;
  if (padded != numel_) flags = at::constant_pad_nd(flags, {0, padded - numel_}, 0);
  bits_ = flags.view({-1, 8}).mul(bit_weights(pred.device())).sum(1, /*keepdim=*/false, at::kByte);
}

BitMask::BitMask(const at::Tensor& pred) : BitMask(pred, pred) {}

BitMask::BitMask(const at::Tensor& pred, const at::Tensor& like) {
  TORCH_CHECK(pred.sizes() == like.sizes(), "BitMask: expected a predicate of sizes ", like.sizes(), ", got ",
              pred.sizes());
  set_layout(like);
  const bool same_layout = pred.strides() == like.strides();
  if (!(same_layout && use_raw_path(pred))) {
    pack_tensor_ops(pred);
    return;
  }
  bits_ = at::empty({(numel_ + 7) / 8}, pred.options().dtype(at::kByte));
  uint8_t* out = bits_.data_ptr<uint8_t>();
  switch (pred.scalar_type()) {
    case at::kBool:
    case at::kByte:
      pack_raw<false>(static_cast<const uint8_t*>(pred.data_ptr()), out, numel_, [](uint8_t v) -> uint8_t { return v != 0; });
      return;
    case at::kFloat:
      pack_raw<false>(pred.data_ptr<float>(), out, numel_, [](float v) -> uint8_t { return v != 0; });
      return;
    case at::kDouble:
      pack_raw<false>(pred.data_ptr<double>(), out, numel_, [](double v) -> uint8_t { return v != 0; });
      return;
    default:
      bits_.reset();
      pack_tensor_ops(pred);
  }
}

namespace {

// The raw CPU path of the fused constructor, for one element type.
template <typename T>
bool pack_test(const at::Tensor& t, uint8_t* out, BitMask::Test test, double a, double b, bool want_nan) {
  using C = compute_t<T>;
  const T* x = static_cast<const T*>(t.data_ptr());
  const int64_t n = t.numel();
  const C lo = bound_as<T>(a), hi = bound_as<T>(b);
  auto run = [&](auto flag) { return want_nan ? pack_raw<true>(x, out, n, flag) : pack_raw<false>(x, out, n, flag); };
  switch (test) {
    case BitMask::Test::kGreater: return run(Greater<T>{lo});
    case BitMask::Test::kNotAtMost: return run(NotAtMost<T>{lo});
    case BitMask::Test::kInside: return run(Inside<T>{lo, hi});
  }
  return false;
}

}  // namespace

BitMask::BitMask(const at::Tensor& t, Test test, double a, double b, bool* saw_nan) {
  set_layout(t);
  if (use_raw_path(t) && cpu_raw_dtype(t.scalar_type())) {
    bits_ = at::empty({(numel_ + 7) / 8}, t.options().dtype(at::kByte));
    uint8_t* out = bits_.data_ptr<uint8_t>();
    const bool want = saw_nan != nullptr;
    bool nan = false;
    switch (t.scalar_type()) {
      case at::kFloat: nan = pack_test<float>(t, out, test, a, b, want); break;
      case at::kDouble: nan = pack_test<double>(t, out, test, a, b, want); break;
      case at::kBFloat16: nan = pack_test<c10::BFloat16>(t, out, test, a, b, want); break;
      default: nan = pack_test<c10::Half>(t, out, test, a, b, want); break;
    }
    if (saw_nan) *saw_nan = nan;
    return;
  }
  at::Tensor pred;
  switch (test) {
    case Test::kGreater: pred = t.gt(a); break;
    case Test::kNotAtMost: pred = t.le(a).logical_not_(); break;
    case Test::kInside: pred = t.le(a).logical_or_(t.ge(b)).logical_not_(); break;
  }
  pack_tensor_ops(pred);
  if (saw_nan) *saw_nan = at::isnan(t).any().item<bool>();
}

at::Tensor BitMask::unpack_bits(const at::Tensor& bits, at::ScalarType dtype, double set, double unset,
                                const at::Tensor& like) const {
  // Traced, the bits' sizes may be symbolic (Note [Compiled autograd] in node.h).
  TORCH_INTERNAL_ASSERT(bits.defined() && (tracing() || bits.numel() == (numel_ + 7) / 8),
                        "BitMask: bits do not fit the layout");
  const auto opts = bits.options().dtype(dtype);
  // The bits as one bool per element, in the mask's memory order, with tensor operations.
  const auto flags = [&] {
    return bits.unsqueeze(1).bitwise_and(bit_weights(bits.device())).ne(0).view(-1).narrow(0, 0, numel_);
  };
  if (tracing()) {
    // Note [Compiled autograd] (node.h): in-place writes into a tensor made while tracing
    // go missing from compiled autograd's graph (its dead-code pass drops them and keeps the
    // empty tensor: first seen as dropout gradients read from an uninitialised tensor, then
    // as leaky_relu_backward reading an empty_strided proxy, with the bits unused). So the
    // traced path returns the values built out of place, in the mask's memory order: the
    // same sizes and the same order of strides as `out` (dense where `out` is; a layout with
    // gaps gets its dense counterpart, which orders a TensorIterator's result the same way).
    // Note [Traced mask] (bitmask.h): with `like`, the flags come from memsave::mask_flags.
    at::Tensor in_order;
#if MEMSAVE_COMPILE_TRACING
    // Not with symbolic sizes (compiled autograd lifts the bits with dynamic sizes): the
    // operator's kernel runs on concrete ones only.
    if (like.defined() && g_mask_flags_op.load() && !like.unsafeGetTensorImpl()->has_symbolic_sizes_strides() &&
        !bits.unsafeGetTensorImpl()->has_symbolic_sizes_strides()) {
      static const auto op =
          c10::Dispatcher::singleton().findSchemaOrThrow("memsave::mask_flags", "").typed<MaskFlagsFn>();
      in_order = op.call(bits, like, like.strides(), sizes_, order_, numel_);
    }
#endif
    if (!in_order.defined()) in_order = flags_in_order(bits, sizes_, order_, numel_);
    return at::where(in_order, at::scalar_tensor(set, opts), at::scalar_tensor(unset, opts));
  }
  at::Tensor out = exact_ ? at::empty_strided(sizes_, strides_, opts) : at::empty(sizes_, opts);
  if (dense_ && use_raw_path(out)) {
    const uint8_t* in = bits.data_ptr<uint8_t>();
    void* o = out.data_ptr();
    switch (dtype) {
      case at::kFloat: unpack_as<float, uint32_t>(in, o, numel_, set, unset); return out;
      case at::kDouble: unpack_as<double, uint64_t>(in, o, numel_, set, unset); return out;
      case at::kBFloat16: unpack_as<c10::BFloat16, uint16_t>(in, o, numel_, set, unset); return out;
      case at::kHalf: unpack_as<c10::Half, uint16_t>(in, o, numel_, set, unset); return out;
      case at::kBool: unpack_as<bool, uint8_t>(in, o, numel_, set, unset); return out;
      case at::kByte: unpack_as<uint8_t, uint8_t>(in, o, numel_, set, unset); return out;
      default: break;
    }
  }
  at::Tensor view = out.permute(order_);
  view.fill_(unset);
  view.masked_fill_(flags().view(view.sizes()), set);
  return out;
}

bool BitMask::can_unpack_range(const at::Tensor& bits, at::ScalarType dtype) const {
  return dense_ && bits.defined() && bits.is_cpu() && cpu_raw_dtype(dtype) &&
         !g_force_tensor_ops.load(std::memory_order_relaxed) && !tracing();
}

void BitMask::unpack_range(const at::Tensor& bits, int64_t start, const at::Tensor& out, double set,
                           double unset) const {
  const int64_t n = out.numel();
  TORCH_INTERNAL_ASSERT(can_unpack_range(bits, out.scalar_type()) && bits.numel() == (numel_ + 7) / 8 &&
                            start >= 0 && start % 8 == 0 && start + n <= numel_ && out.dim() == 1 &&
                            out.is_contiguous() && out.is_cpu(),
                        "BitMask::unpack_range: bad range or output");
  const uint8_t* in = bits.data_ptr<uint8_t>() + start / 8;
  void* o = out.data_ptr();
  switch (out.scalar_type()) {
    case at::kFloat: unpack_as<float, uint32_t>(in, o, n, set, unset); return;
    case at::kDouble: unpack_as<double, uint64_t>(in, o, n, set, unset); return;
    case at::kBFloat16: unpack_as<c10::BFloat16, uint16_t>(in, o, n, set, unset); return;
    case at::kHalf: unpack_as<c10::Half, uint16_t>(in, o, n, set, unset); return;
    default: TORCH_INTERNAL_ASSERT(false, "BitMask::unpack_range: dtype");
  }
}

std::vector<int64_t> BitMask::strides() const {
  if (exact_) return strides_;
  std::vector<int64_t> s(sizes_.size(), 1);
  for (int64_t d = static_cast<int64_t>(sizes_.size()) - 2; d >= 0; d--) s[d] = s[d + 1] * std::max<int64_t>(sizes_[d + 1], 1);
  return s;
}

uint64_t BitMask::nbytes() const { return bits_.defined() ? static_cast<uint64_t>(bits_.numel()) : 0; }

}  // namespace memsave
