// SPDX-License-Identifier: MIT
// test_batchnorm: batch norm with libmemsave against stock, bit for bit (outputs, gradients,
// running statistics), over shapes, layouts, dtypes, modes and every requires_grad pattern
// (run and compared by tests/testing.h); what is special to batch norm; the memory saved.
// The node contract is in test_contract.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/function.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>
#include <sstream>

#include "testing.h"

namespace {

using namespace memsave_test;  // the harness: tests/testing.h

constexpr auto F = MEMSAVE_FAMILY_BATCHNORM;

struct BnCase {
  int input_dim = 4;  // 2 and 3: BatchNorm1d; 4: BatchNorm2d; 5: BatchNorm3d
  bool training = false;
  bool running_stats = true;
  bool affine = true;
  bool channels_last = false;
  at::ScalarType dtype = at::kFloat;
  int batch = 3;

  std::string str() const {
    std::ostringstream s;
    s << input_dim << "-D " << (training ? "train" : "eval") << (running_stats ? " stats" : " nostats")
      << (affine ? " affine" : "") << (channels_last ? " cl" : "") << " " << dtype << " N" << batch;
    return s.str();
  }
};

struct Data {
  at::Tensor x, w, b, rm, rv, go;
};

Data make_data(const BnCase& c) {
  at::manual_seed(4321);
  const int64_t channels = 5;
  std::vector<int64_t> xs{c.batch, channels};
  for (int i = 2; i < c.input_dim; i++) xs.push_back(i == 2 ? 6 : 4);
  auto opts = at::TensorOptions().dtype(c.dtype);
  Data d;
  d.x = with_layout(at::randn(xs, opts) * 3 + 1, c.channels_last ? Layout::kChannelsLast : Layout::kContiguous);
  if (c.affine) {
    d.w = at::rand({channels}, opts) + 0.5;
    d.b = at::randn({channels}, opts);
  }
  if (c.running_stats) {
    d.rm = at::randn({channels}, opts);
    d.rv = at::rand({channels}, opts) + 0.5;
  }
  d.go = at::randn(xs, opts);
  for (at::Tensor* t : {&d.x, &d.w, &d.b, &d.rm, &d.rv, &d.go}) *t = to_test_device(*t);
  return d;
}

at::Tensor bn(const BnCase& c, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, const at::Tensor& rm,
              const at::Tensor& rv) {
  return at::batch_norm(x, w, b, rm, rv, c.training, /*momentum=*/0.1, /*eps=*/1e-5, /*cudnn_enabled=*/true);
}

// The harness's forward over {x, w, b, running mean, running var}: the statistics are
// buffers it updates in place (training), compared after the call.
Forward forward(const BnCase& c) {
  return [c](std::vector<at::Tensor>& a) { return std::vector<at::Tensor>{bn(c, a[0], a[1], a[2], a[3], a[4])}; };
}
const std::vector<size_t> kStats{3, 4};

// Whether libmemsave builds its node for this pattern (the rule of hooks/ops/batchnorm.cpp).
bool ours_expected(const BnCase& c, bool rx, bool rw, bool rb) {
  if (!(rx || rw || rb)) return false;
  return c.training ? !(rx || rw) : !rw;
}

// Compares every requires_grad pattern of (input, weight, bias); returns how many ran.
// `grad_like_output` backpropagates d.go (contiguous); otherwise what y.sum() sends (an
// expanded gradient).
int check_case(const BnCase& c, const Data& d, bool grad_like_output = true) {
  int ran = 0;
  for (unsigned p : requires_grad_patterns(3, c.affine ? 7 : 1)) {
    bool rx = p & 1, rw = p & 2, rb = p & 4;
    const std::string where = c.str() + pattern_name(p, 3);
    auto before = stats();
    auto r = compare_with_stock(
        forward(c), {d.x, d.w, d.b, d.rm, d.rv}, p, where,
        grad_like_output ? GradOut([&](const at::Tensor&) { return d.go; }) : sum_grad,
        kStats);
    auto after = stats();
    const bool expect_ours = ours_expected(c, rx, rw, rb);
    EXPECT_EQ(r.ours.grad_fn, expect_ours ? "MemsaveBatchNormBackward" : r.stock.grad_fn) << where;
    EXPECT_EQ(after.substituted[F] - before.substituted[F], expect_ours ? 1u : 0u) << where;
    ran++;
  }
  return ran;
}

int check_case(const BnCase& c, bool grad_like_output = true) { return check_case(c, make_data(c), grad_like_output); }

TEST(BatchNorm, EqualityGrid) {
  int ran = 0;
  for (int dim : {2, 3, 4, 5})
    for (bool training : {false, true})
      for (bool running_stats : {true, false})
        for (bool affine : {true, false})
          for (at::ScalarType dtype : {at::kFloat, at::kDouble}) {
            if (!training && !running_stats) continue;  // eval needs running statistics
            BnCase c;
            c.input_dim = dim, c.training = training, c.running_stats = running_stats, c.affine = affine;
            c.dtype = dtype;
            ran += check_case(c);
          }
  // Per dim and dtype: 3 (mode, stats) combinations x (8 affine + 2 non-affine) patterns.
  EXPECT_EQ(ran, 4 * 2 * 3 * 10);
}

TEST(BatchNorm, ChannelsLast) {
  int ran = 0;
  for (int dim : {4, 5})
    for (bool training : {false, true})
      for (at::ScalarType dtype : {at::kFloat, at::kDouble}) {
        BnCase c;
        c.input_dim = dim, c.training = training, c.channels_last = true, c.dtype = dtype;
        ran += check_case(c);
      }
  EXPECT_EQ(ran, 2 * 2 * 2 * 8);
}

// y.sum() gives an expanded (stride 0) gradient, which cannot serve as the stand-in: the
// uninitialised stand-in of the recorded geometry is used instead.
TEST(BatchNorm, ExpandedIncomingGradient) {
  int ran = 0;
  for (int dim : {2, 4})
    for (bool training : {false, true})
      for (bool channels_last : {false, true}) {
        if (channels_last && dim != 4) continue;
        BnCase c;
        c.input_dim = dim, c.training = training, c.channels_last = channels_last;
        ran += check_case(c, /*grad_like_output=*/false);
      }
  EXPECT_EQ(ran, 6 * 8);
}

TEST(BatchNorm, BatchOneAndBFloat16) {
  int ran = 0;
  for (bool training : {false, true}) {
    BnCase c;
    c.training = training, c.batch = 1, c.input_dim = 3;
    ran += check_case(c);
    c.batch = 2, c.input_dim = 4, c.dtype = at::kBFloat16;
    ran += check_case(c);
  }
  EXPECT_EQ(ran, 4 * 8);
}

TEST(BatchNorm, SpecialValues) {
  for (bool training : {false, true}) {
    BnCase c;
    c.training = training;
    Data d = make_data(c);
    put_values(d.x, {{0, kNaN}, {7, kInf}, {11, -kInf}, {13, -0.0}});
    put_values(d.go, {{3, -0.0}, {4, kNaN}});
    put_values(d.w, {{1, -0.0}});
    EXPECT_EQ(check_case(c, d), 8);
  }
}

// The claim our node rests on (Note [Batch norm stand-in] in hooks/ops/batchnorm.cpp): for the
// masks it uses, native_batch_norm_backward gives the same bits, strides included, with a
// NaN-filled stand-in of the input's geometry as with the input itself. Returns how many
// (mask) comparisons ran for one configuration. grad_kind: 0 contiguous, 1 expanded, 2 permuted.
int compare_with_nan_stand_in(const BnCase& c, int grad_kind) {
  Data d = make_data(c);
  auto fwd = at::native_batch_norm(d.x, d.w, d.b, d.rm.clone(), d.rv.clone(), c.training, 0.1, 1e-5);
  const auto opts = d.x.options();
  std::vector<int64_t> perm(d.x.dim());
  std::iota(perm.rbegin(), perm.rend(), 0);  // reversed dimensions
  at::Tensor g = grad_kind == 0   ? d.go
                 : grad_kind == 1 ? at::ones({}, opts).expand(d.x.sizes())
                                  : d.go.permute(perm).contiguous().permute(perm);
  at::Tensor nan = at::empty_strided(d.x.sizes(), d.x.strides(), opts).fill_(NAN);
  int compared = 0;
  using Mask = std::array<bool, 3>;
  for (Mask mask : {Mask{false, false, true}, Mask{true, false, false}, Mask{true, false, true}}) {
    if (c.training && mask[0]) continue;  // the training input gradient reads the input: stock keeps it
    auto ref = at::native_batch_norm_backward(g, d.x, d.w, d.rm, d.rv, std::get<1>(fwd), std::get<2>(fwd),
                                              c.training, 1e-5, mask);
    auto got = at::native_batch_norm_backward(g, nan, d.w, d.rm, d.rv, std::get<1>(fwd), std::get<2>(fwd),
                                              c.training, 1e-5, mask);
    EXPECT_TRUE(bitwise_equal(std::get<0>(ref), std::get<0>(got))) << c.str() << " grad kind " << grad_kind;
    EXPECT_TRUE(bitwise_equal(std::get<2>(ref), std::get<2>(got))) << c.str() << " grad kind " << grad_kind;
    compared++;
  }
  return compared;
}

TEST(BatchNorm, BackwardNeverReadsInputValuesForOurMasks) {
  int compared = 0;
  for (int dim : {2, 3, 4, 5})
    for (bool channels_last : {false, true})
      for (bool training : {false, true})
        for (at::ScalarType dtype : {at::kFloat, at::kDouble})
          for (int grad_kind = 0; grad_kind < 3; grad_kind++) {
            if (channels_last && dim < 4) continue;
            BnCase c;
            c.input_dim = dim, c.channels_last = channels_last, c.training = training, c.dtype = dtype;
            c.batch = dim == 4 ? 16 : 3;  // one larger case for the vectorised loops
            compared += compare_with_nan_stand_in(c, grad_kind);
          }
  // (4 dims + 2 channels_last) x 2 dtypes x 3 gradients x (3 eval masks + 1 training mask)
  EXPECT_EQ(compared, 6 * 2 * 3 * 4);
}

// Double backward through our node, against stock, for the patterns our node takes in both
// modes (the contract's row: eval, input only).
TEST(BatchNorm, DoubleBackwardOverModesAndPatterns) {
  int ran = 0;
  for (bool training : {false, true})
    for (unsigned pattern : {1u, 4u, 5u}) {  // input, bias, input and bias
      if (training && (pattern & 1)) continue;  // stock's node (the input is kept)
      BnCase c;
      c.training = training;
      Data d = make_data(c);
      const std::string where = c.str() + pattern_name(pattern, 3);
      EXPECT_TRUE(compare_double_backward(forward(c), {d.x, d.w, d.b, d.rm, d.rv}, pattern, where));
      ran++;
    }
  EXPECT_EQ(ran, 4);
}

// The running statistics our node keeps, changed in place (the weight: test_contract).
// `which`: 1 running mean, 2 running var.
std::string modify_kept_tensor(bool on, int which) {
  return with_memsave(on, [&] {
    BnCase c;
    Data d = make_data(c);
    at::Tensor x = d.x.clone().requires_grad_(true);
    at::Tensor rm = d.rm.clone(), rv = d.rv.clone();
    at::Tensor s = bn(c, x, d.w, d.b, rm, rv).sum();
    (which == 1 ? rm : rv).add_(1.0);
    return error_of([&] { s.backward(); });
  });
}

TEST(BatchNorm, KeptStatisticsModifiedInPlaceRaiseStockError) {
  for (int which : {1, 2}) {
    std::string stock = modify_kept_tensor(false, which), ours = modify_kept_tensor(true, which);
    EXPECT_NE(stock.find("modified by an inplace operation"), std::string::npos) << which << ": " << stock;
    EXPECT_NE(ours.find("modified by an inplace operation"), std::string::npos) << which << ": " << ours;
  }
}

// Training mode updates the running statistics in place without bumping their version
// (stock's kernel writes them directly), so a second forward before backward is no error.
TEST(BatchNorm, TrainingUpdatesRunningStatsLikeStock) {
  auto once = [] {
    BnCase c;
    c.training = true;
    Data d = make_data(c);
    at::Tensor b = d.b.clone().requires_grad_(true);
    at::Tensor rm = d.rm.clone(), rv = d.rv.clone();
    const auto v0 = rm._version();
    at::Tensor s = bn(c, d.x, d.w, b, rm, rv).sum() + bn(c, d.x * 2, d.w, b, rm, rv).sum();
    EXPECT_EQ(rm._version(), v0);
    s.backward();
    return std::make_tuple(rm, rv, b.grad());
  };
  auto stock = with_memsave(false, once), ours = with_memsave(true, once);
  EXPECT_TRUE(bitwise_equal(std::get<0>(stock), std::get<0>(ours)));
  EXPECT_TRUE(bitwise_equal(std::get<1>(stock), std::get<1>(ours)));
  EXPECT_TRUE(bitwise_equal(std::get<2>(stock), std::get<2>(ours)));
}

// On CUDA, batch norm reaches cudnn_batch_norm where cuDNN is on and native_batch_norm where
// it is off (MEMSAVE_TEST_CUDNN=0 runs every test so): every pattern, train and eval, equals
// stock through both, and ours is built where the rule says (issue 14). Stock's node names
// which operator ran; with cuDNN off it must be native_batch_norm's.
TEST(BatchNorm, CudaThroughCudnnAndNative) {
  if (!on_cuda()) GTEST_SKIP() << "CUDA only: cudnn_batch_norm against native_batch_norm";
  struct CudnnGuard {
    bool prev = at::globalContext().userEnabledCuDNN();
    explicit CudnnGuard(bool on) { at::globalContext().setUserEnabledCuDNN(on); }
    ~CudnnGuard() { at::globalContext().setUserEnabledCuDNN(prev); }
  };
  for (bool cudnn : {true, false}) {
    CudnnGuard guard(cudnn);
    for (bool training : {true, false})
      for (bool channels_last : {false, true}) {
        BnCase c;
        c.training = training, c.channels_last = channels_last;
        EXPECT_EQ(check_case(c), 8) << c.str();
        Data d = make_data(c);
        at::Tensor x = d.x.clone().requires_grad_(true);
        const std::string stock_node =
            grad_fn_name(with_memsave(false, [&] { return bn(c, x, d.w, d.b, d.rm.clone(), d.rv.clone()); }));
        std::printf("cuDNN %s, %s: stock's node %s\n", cudnn ? "on" : "off", c.str().c_str(), stock_node.c_str());
        if (!cudnn) EXPECT_EQ(stock_node, "NativeBatchNormBackward0") << c.str();
      }
  }
}

// A trainable weight needs the input: stock is already minimal.
TEST(BatchNorm, TrainableWeightIsPassthrough) {
  BnCase c;
  Data d = make_data(c);
  at::Tensor x = d.x.clone().requires_grad_(true);
  at::Tensor w = d.w.clone().requires_grad_(true);
  auto before = stats();
  at::Tensor y = with_memsave(true, [&] { return bn(c, x, w, d.b, d.rm.clone(), d.rv.clone()); });
  auto after = stats();
  if (!on_cuda()) {
    EXPECT_EQ(grad_fn_name(y), "NativeBatchNormBackward0");
  }
  EXPECT_EQ(after.passthrough[F], before.passthrough[F] + 1);
}

// Running statistics that require grad: stock raises its own error; counted as a fallback.
// (Forward-mode AD: test_contract.)
TEST(BatchNorm, RunningStatsRequiringGradFallBack) {
  BnCase c;
  Data d = make_data(c);
  at::Tensor rm = d.rm.clone().requires_grad_(true);
  auto xs = d.x.clone().requires_grad_(true);
  std::string stock = with_memsave(false, [&] { return error_of([&] { bn(c, xs, d.w, d.b, rm, d.rv.clone()); }); });
  auto before = stats();
  std::string ours = with_memsave(true, [&] { return error_of([&] { bn(c, xs, d.w, d.b, rm, d.rv.clone()); }); });
  auto after = stats();
  EXPECT_NE(stock.find("not differentiable with respect to argument 'running_mean'"), std::string::npos) << stock;
  EXPECT_EQ(ours.substr(0, ours.find('\n')), stock.substr(0, stock.find('\n')));
  EXPECT_EQ(after.fallbacks[F], before.fallbacks[F] + 1);
}

TEST(BatchNorm, CountsSubstitutionsAndBytes) {
  BnCase c;
  Data d = make_data(c);
  at::Tensor x = d.x.clone().requires_grad_(true);
  auto before = stats();
  with_memsave(true, [&] { return bn(c, x, d.w, d.b, d.rm.clone(), d.rv.clone()); });
  auto after = stats();
  EXPECT_EQ(after.substituted[F], before.substituted[F] + 1);
  // Eval: weight, running mean and var kept (save_mean/save_invstd are empty); stock adds the input.
  const uint64_t params = 3 * 5 * 4, xb = x.numel() * 4;
  EXPECT_EQ(after.bytes_kept - before.bytes_kept, params);
  EXPECT_EQ(after.bytes_stock - before.bytes_stock, params + xb);
}

// Memory. Eval: a stack of frozen batch norms whose input requires grad; stock keeps every
// intermediate activation, libmemsave none. Training with only the biases trainable: the
// input of a batch norm needs no gradient only before the first trainable layer (every
// later input requires grad, and the training input gradient reads the input), so one
// batch norm on an intermediate that does not require grad, followed by ops that keep
// nothing; stock keeps that intermediate, libmemsave does not.
struct Peak {
  int64_t peak;
  uint64_t kept, stock;
};

Peak step_peak(bool on, bool training, int depth, bool sum_loss) {
  at::manual_seed(0);
  const int64_t channels = 16;
  std::vector<at::Tensor> w, b, rm, rv;
  for (int i = 0; i < depth; i++) {
    w.push_back(to_test_device(at::rand({channels}) + 0.5));
    b.push_back(to_test_device(at::randn({channels})).requires_grad_(training));
    rm.push_back(to_test_device(at::zeros({channels})));
    rv.push_back(to_test_device(at::ones({channels})));
  }
  at::Tensor x = to_test_device(at::randn({4, channels, 32, 32})).requires_grad_(!training);
  at::Tensor go = to_test_device(at::randn({4, channels, 32, 32}));
  return with_memsave(on, [&] {
    const int64_t base = step_start();
    const auto before = stats();
    {
      at::Tensor h = x * 2;  // an intermediate, as in a network
      for (int i = 0; i < depth; i++) {
        h = at::batch_norm(h, w[i], b[i], rm[i], rv[i], training, 0.1, 1e-5, true);
        if (training) h = h * 3;  // MulBackward1 keeps nothing
      }
      if (sum_loss)
        h.sum().backward();
      else
        h.backward(go);
    }
    const auto after = stats();
    return Peak{peak_since(base), after.bytes_kept - before.bytes_kept, after.bytes_stock - before.bytes_stock};
  });
}

void check_memory(bool training, int depth) {
  const int64_t activation = 4 * 16 * 32 * 32 * 4;
  for (bool sum_loss : {false, true}) {
    auto stock = step_peak(false, training, depth, sum_loss);
    auto ours = step_peak(true, training, depth, sum_loss);
    std::printf("batch norm x%d, %s (%s loss): peak stock %lld, memsave %lld (ratio %.3f); kept %llu vs stock %llu\n",
                depth, training ? "train, biases only" : "eval, input only", sum_loss ? "sum" : "grad_output",
                (long long)stock.peak, (long long)ours.peak, (double)ours.peak / (double)stock.peak,
                (unsigned long long)ours.kept, (unsigned long long)ours.stock);
    // Our nodes keep no activation: the per-layer parameters and statistics only.
    EXPECT_LT(ours.kept, static_cast<uint64_t>(activation) / 16);
    EXPECT_EQ(ours.stock - ours.kept, static_cast<uint64_t>(depth * activation));
    // Stock keeps the input of every layer: at the peak, depth - 1 activations more (at least
    // one; a few statistics bytes aside).
    if (peaks_are_a_runs()) EXPECT_GE(stock.peak - ours.peak, std::max(depth - 1, 1) * activation - activation / 16);
  }
}

TEST(BatchNorm, MemoryEvalFrozenStackKeepsNoInput) {
  MEMSAVE_NEEDS_PEAK();
  check_memory(/*training=*/false, 8);
}

TEST(BatchNorm, MemoryTrainingBiasOnlyKeepsNoInput) {
  MEMSAVE_NEEDS_PEAK();
  check_memory(/*training=*/true, 1);
}

}  // namespace
