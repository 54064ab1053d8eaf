// SPDX-License-Identifier: MIT
// testing.h: the harness of the in-process hooks tests: bitwise comparison (NaN and -0.0
// aware) with a count of what was compared, error-substring checks, the test device
// (MEMSAVE_TEST_DEVICE), input layouts, requires_grad patterns, one stock-versus-ours runner
// that captures gradients before AccumulateGrad (single and double backward), special
// values, and measured steps for the memory tests.
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/function.h>
#include <torch/version.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <strings.h>
#include <functional>
#include <initializer_list>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "memsave.h"

// Note [CUDA peak in tests]: on CUDA the memory tests read the CUDA caching allocator's
// allocated bytes (current and peak, the figures of torch.cuda.memory_allocated and
// max_memory_allocated) through c10/cuda's header, which needs the CUDA runtime's headers and
// libc10_cuda. tests/CMakeLists.txt defines MEMSAVE_TEST_CUDA_STATS when it finds both (a
// CUDA LibTorch with a CUDA toolkit); otherwise those tests are skipped on CUDA, saying why.
#if MEMSAVE_TEST_CUDA_STATS
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace memsave_test {

// How many tensor pairs bitwise_equal compared (at least one side defined): the coverage
// figure printed after each test and at the end of the program.
inline std::atomic<long> compared_tensors{0};

// Equal as stored bytes: same defined-ness, dtype, sizes, strides and every byte of the
// elements. NaN payloads, -0.0 and +-inf are compared as bits.
inline ::testing::AssertionResult bitwise_equal(const at::Tensor& a, const at::Tensor& b) {
  if (a.defined() || b.defined()) compared_tensors++;
  if (a.defined() != b.defined())
    return ::testing::AssertionFailure() << "defined " << a.defined() << " vs " << b.defined();
  if (!a.defined()) return ::testing::AssertionSuccess();
  if (a.scalar_type() != b.scalar_type())
    return ::testing::AssertionFailure() << "dtype " << a.scalar_type() << " vs " << b.scalar_type();
  if (a.device() != b.device()) return ::testing::AssertionFailure() << "device " << a.device() << " vs " << b.device();
  if (a.sizes() != b.sizes()) return ::testing::AssertionFailure() << "sizes " << a.sizes() << " vs " << b.sizes();
  if (a.strides() != b.strides())
    return ::testing::AssertionFailure() << "strides " << a.strides() << " vs " << b.strides();
  at::Tensor ca = a.detach().cpu().contiguous(), cb = b.detach().cpu().contiguous();
  // An empty tensor may have no data pointer, which memcmp must not get (UBSan).
  if (ca.numel() > 0 && std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.numel() * ca.element_size()) != 0) {
    at::Tensor diff = (ca.to(at::kDouble) - cb.to(at::kDouble)).abs();
    return ::testing::AssertionFailure() << "values differ; max |diff| " << diff.max().item<double>();
  }
  return ::testing::AssertionSuccess();
}

// Runs `fn` with substitution switched on or off, restoring the previous state.
template <class Fn>
auto with_memsave(bool on, Fn&& fn) -> decltype(fn()) {
  struct Restore {
    int prev;
    ~Restore() { memsave_set_enabled(prev); }
  } restore{memsave_set_enabled(on)};
  return fn();
}

// The message of the exception `fn` throws, without the C++ backtrace (whose frames differ
// between stock and libmemsave), or "" when it does not throw.
inline std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

inline std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

inline std::string grad_fn_name(const at::Tensor& t) {
  return t.grad_fn() ? t.grad_fn()->name() : std::string("(none)");
}

inline memsave_stats stats() {
  memsave_stats st;
  memsave_get_stats(&st, sizeof st);
  return st;
}

// The device of the equality tests: MEMSAVE_TEST_DEVICE (cpu, cuda, cuda:1), default cpu.
// scripts/gpu-check.sh sets it to cuda. Data is drawn on the CPU and then moved, so that a
// CUDA run compares the same values as a CPU run.
inline at::Device test_device() {
  const char* d = std::getenv("MEMSAVE_TEST_DEVICE");
  return at::Device(std::string(d && *d ? d : "cpu"));
}

inline bool on_cuda() { return test_device().is_cuda(); }

// `t` on the test device with the same sizes and strides (Tensor::to would make a
// non-dense tensor contiguous); on the CPU, `t` itself.
inline at::Tensor to_test_device(const at::Tensor& t) {
  if (!t.defined() || t.device() == test_device()) return t;
  return at::empty_strided(t.sizes(), t.strides(), t.options().device(test_device())).copy_(t);
}

// For tests of CPU-only behaviour (CPU kernels' NaN handling, chunked CPU loops, the CPU
// allocator's counters): skipped, with the reason, when the tests run on CUDA.
#define MEMSAVE_CPU_ONLY(why)                                                                        \
  do {                                                                                               \
    if (::memsave_test::on_cuda()) GTEST_SKIP() << "CPU only (MEMSAVE_TEST_DEVICE=cuda): " << (why); \
  } while (0)

// Input layouts. kStrided: every other element of the last dimension; kTransposed: the last
// two dimensions swapped in memory; kChannelsLast: 4-D and 5-D only (otherwise contiguous);
// kExpanded: the first dimension broadcast (stride 0) from one row.
enum class Layout { kContiguous, kChannelsLast, kStrided, kTransposed, kExpanded };

inline const char* layout_name(Layout l) {
  switch (l) {
    case Layout::kContiguous: return "contig";
    case Layout::kChannelsLast: return "cl";
    case Layout::kStrided: return "strided";
    case Layout::kTransposed: return "transposed";
    case Layout::kExpanded: return "expanded";
  }
  return "?";
}

// `dense` (any layout) rearranged into `layout` with the same sizes and values (kExpanded:
// the values of its first row), on the device of `dense`.
inline at::Tensor with_layout(const at::Tensor& dense, Layout layout) {
  const int64_t d = dense.dim();
  switch (layout) {
    case Layout::kContiguous: return dense.contiguous();
    case Layout::kChannelsLast:
      if (d == 4) return dense.contiguous(at::MemoryFormat::ChannelsLast);
      if (d == 5) return dense.contiguous(at::MemoryFormat::ChannelsLast3d);
      return dense.contiguous();
    case Layout::kStrided: {
      if (d == 0) return dense.clone();
      std::vector<int64_t> wide = dense.sizes().vec();
      wide.back() *= 2;
      at::Tensor w = at::zeros(wide, dense.options());
      at::Tensor view = w.slice(-1, 0, wide.back(), 2);
      view.copy_(dense);
      return view;
    }
    case Layout::kTransposed:
      if (d < 2) return dense.clone();
      return dense.transpose(-1, -2).contiguous().transpose(-1, -2);
    case Layout::kExpanded:
      if (d == 0) return dense.clone();
      return dense.narrow(0, 0, 1).clone().expand(dense.sizes());
  }
  return dense;
}

// A copy with the same strides as `t` (clone keeps only dense layouts). Broadcast
// dimensions (stride 0) are copied once and expanded again.
inline at::Tensor same_layout_copy(const at::Tensor& t) {
  if (!t.defined()) return t;
  at::Tensor one = t;
  for (int64_t d = 0; d < t.dim(); d++)
    if (t.stride(d) == 0 && t.size(d) > 1) one = one.narrow(d, 0, 1);
  at::Tensor copy;
  {
    at::NoGradGuard no_grad;
    copy = at::empty_strided(one.sizes(), one.strides(), one.options()).copy_(one);
  }
  return one.sizes() == t.sizes() ? copy : copy.expand(t.sizes());
}

// requires_grad patterns: every subset of `n` differentiable arguments as a bit mask (bit i:
// argument i requires grad), leaving out those that ask a gradient of an argument marked
// absent in `present` (an undefined bias) and, unless `with_none`, the empty one.
inline std::vector<unsigned> requires_grad_patterns(int n, unsigned present = ~0u, bool with_none = true) {
  std::vector<unsigned> out;
  for (unsigned p = with_none ? 0 : 1; p < (1u << n); p++)
    if ((p & ~present) == 0) out.push_back(p);
  return out;
}

inline bool wants_grad(unsigned pattern, size_t i) { return pattern >> i & 1; }

inline std::string pattern_name(unsigned pattern, int n) {
  std::string s = " rg";
  for (int i = 0; i < n; i++) s += wants_grad(pattern, i) ? '1' : '0';
  return s;
}

// One forward and backward. `outs[0]` is the tensor backward starts from; the forward may
// add more outputs to compare (indices, a random draw after the call). `grads[i]` is the
// gradient of argument i as the graph produced it, undefined where i needs none; `leaves`
// are the arguments as the forward saw them (buffers it updated in place, e.g.).
struct Run {
  std::vector<at::Tensor> outs, grads, leaves;
  std::string grad_fn, error;
};

using Forward = std::function<std::vector<at::Tensor>(std::vector<at::Tensor>& leaves)>;
// The incoming gradient for the output `y`.
using GradOut = std::function<at::Tensor(const at::Tensor& y)>;

// A random incoming gradient (seeded, drawn on the CPU) with the output's memory format, or
// contiguous.
inline GradOut random_grad(uint64_t seed = 99, bool output_format = false) {
  return [=](const at::Tensor& y) {
    at::manual_seed(seed);
    at::Tensor go = at::randn(y.sizes(), y.options().device(at::kCPU)).to(y.device());
    return output_format ? go.contiguous(y.suggest_memory_format()) : go;
  };
}

// The gradient y.sum().backward() sends: an expanded (stride 0) one.
inline at::Tensor sum_grad(const at::Tensor& y) { return at::ones({}, y.options()).expand(y.sizes()); }

// Runs `forward` on copies of `args` with their strides (undefined stay undefined), argument
// i requiring grad where `pattern` says so, then backward from outs[0] with `grad_out`. The
// gradients are captured with autograd::grad, as the nodes produced them: AccumulateGrad
// would restride a leaf's .grad to the leaf's layout and hide a gradient computed in
// another one. An exception from the forward or backward is kept in `error`.
// Copies of `args` with their strides (undefined stay undefined), argument i requiring grad
// where `pattern` says so; and those that require grad, with their positions.
inline std::vector<at::Tensor> make_leaves(const std::vector<at::Tensor>& args, unsigned pattern) {
  std::vector<at::Tensor> leaves;
  for (size_t i = 0; i < args.size(); i++) {
    leaves.push_back(same_layout_copy(args[i]));
    if (args[i].defined() && wants_grad(pattern, i)) leaves.back().requires_grad_(true);
  }
  return leaves;
}

inline std::vector<size_t> needing_grad(const std::vector<at::Tensor>& leaves, std::vector<at::Tensor>* inputs) {
  std::vector<size_t> slots;
  for (size_t i = 0; i < leaves.size(); i++)
    if (leaves[i].defined() && leaves[i].requires_grad()) inputs->push_back(leaves[i]), slots.push_back(i);
  return slots;
}

// Runs `forward` on make_leaves(args, pattern), then backward from outs[0] with `grad_out`.
// The gradients are captured with autograd::grad, as the nodes produced them: AccumulateGrad
// would restride a leaf's .grad to the leaf's layout and hide a gradient computed in another
// one. An exception from the forward or backward is kept in `error`.
inline Run run_once(bool on, const Forward& forward, const std::vector<at::Tensor>& args, unsigned pattern,
                    const GradOut& grad_out) {
  return with_memsave(on, [&] {
    Run r;
    r.leaves = make_leaves(args, pattern);
    r.grads.assign(args.size(), at::Tensor());
    r.error = error_of([&] {
      r.outs = forward(r.leaves);
      const at::Tensor& y = r.outs.at(0);
      r.grad_fn = grad_fn_name(y);
      if (!y.requires_grad()) return;
      std::vector<at::Tensor> inputs;
      const std::vector<size_t> slots = needing_grad(r.leaves, &inputs);
      auto grads = torch::autograd::grad({y}, inputs, {grad_out(y)}, c10::nullopt, false, /*allow_unused=*/true);
      for (size_t k = 0; k < grads.size(); k++) r.grads[slots[k]] = grads[k];
    });
    return r;
  });
}

// Compares two runs bit for bit: the error, every output, every gradient, and the leaves
// named in `buffers` (arguments the forward updates in place).
inline void expect_equal_runs(const Run& stock, const Run& ours, const std::string& where,
                              const std::vector<size_t>& buffers = {}) {
  EXPECT_EQ(stock.error, ours.error) << where;
  EXPECT_EQ(stock.outs.size(), ours.outs.size()) << where;
  for (size_t i = 0; i < std::min(stock.outs.size(), ours.outs.size()); i++)
    EXPECT_TRUE(bitwise_equal(stock.outs[i], ours.outs[i])) << where << " output " << i;
  for (size_t i = 0; i < std::min(stock.grads.size(), ours.grads.size()); i++)
    EXPECT_TRUE(bitwise_equal(stock.grads[i], ours.grads[i])) << where << " grad of argument " << i;
  for (size_t i : buffers)
    EXPECT_TRUE(bitwise_equal(stock.leaves.at(i), ours.leaves.at(i))) << where << " buffer " << i;
}

// Whether two runs agree bit for bit, as expect_equal_runs checks, without recording a failure.
inline bool equal_runs(const Run& a, const Run& b, const std::vector<size_t>& buffers = {}) {
  if (a.error != b.error || a.outs.size() != b.outs.size() || a.grads.size() != b.grads.size()) return false;
  for (size_t i = 0; i < a.outs.size(); i++)
    if (!bitwise_equal(a.outs[i], b.outs[i])) return false;
  for (size_t i = 0; i < a.grads.size(); i++)
    if (!bitwise_equal(a.grads[i], b.grads[i])) return false;
  for (size_t i : buffers)
    if (!bitwise_equal(a.leaves.at(i), b.leaves.at(i))) return false;
  return true;
}

// Stock's and libmemsave's runs of one case; false when stock itself rejected the call.
struct Pair {
  Run stock, ours;
  bool ran = false;
  explicit operator bool() const { return ran; }
};

// Stock, then libmemsave, on the same arguments, compared bit for bit. Where stock itself
// rejects the call (a dtype without a CPU kernel), libmemsave must raise the same error, and
// the pair is false: the caller counts what ran.
inline Pair compare_with_stock(const Forward& forward, const std::vector<at::Tensor>& args, unsigned pattern,
                               const std::string& where, const GradOut& grad_out = random_grad(),
                               const std::vector<size_t>& buffers = {}) {
  Pair p;
  p.stock = run_once(false, forward, args, pattern, grad_out);
  p.ours = run_once(true, forward, args, pattern, grad_out);
  expect_equal_runs(p.stock, p.ours, where, buffers);
  p.ran = p.stock.error.empty();
  return p;
}

// Double backward: with create_graph, the gradients g of (y * y * w).sum() (w a fixed ramp),
// or of y.sum() when not `through_output`, for every argument that requires grad; then the
// gradients of the sum of their squares. Stock against libmemsave, errors included (where
// stock cannot, ours must fail alike). Returns whether stock could.
inline Run double_backward_run(bool on, const Forward& forward, const std::vector<at::Tensor>& args, unsigned pattern,
                              bool through_output = true) {
  return with_memsave(on, [&] {
    Run r;  // grads: first order, then second order
    r.leaves = make_leaves(args, pattern);
    r.error = error_of([&] {
      const at::Tensor y = forward(r.leaves).at(0);
      at::Tensor w = at::linspace(-2, 2, y.numel(), y.options()).view(y.sizes());
      std::vector<at::Tensor> inputs;
      needing_grad(r.leaves, &inputs);
      auto g = torch::autograd::grad({through_output ? (y * y * w).sum() : y.sum()}, inputs, {},
                                     /*retain_graph=*/true, /*create_graph=*/true, /*allow_unused=*/true);
      at::Tensor second = at::zeros({}, y.options());
      for (const auto& t : g)
        if (t.defined()) second = second + t.pow(2).sum();
      for (const auto& t : g) r.grads.push_back(t.defined() ? t.detach() : t);
      for (const auto& t : torch::autograd::grad({second}, inputs, {}, c10::nullopt, false, /*allow_unused=*/true))
        r.grads.push_back(t);
    });
    return r;
  });
}

inline bool compare_double_backward(const Forward& forward, const std::vector<at::Tensor>& args, unsigned pattern,
                                    const std::string& where, bool through_output = true) {
  const Run stock = double_backward_run(false, forward, args, pattern, through_output);
  const Run ours = double_backward_run(true, forward, args, pattern, through_output);
  expect_equal_runs(stock, ours, where + " double backward");
  return stock.error.empty();
}

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Writes `values` at flat positions of the dense tensor `t`: NaN, infinities, -0.0.
inline void put_values(const at::Tensor& t, std::initializer_list<std::pair<int64_t, double>> values) {
  at::NoGradGuard no_grad;
  at::Tensor flat = t.view(-1);
  for (const auto& [i, v] : values) flat[i] = v;
}

// A measured training step: the allocator's peak above the bytes alive before the step, the
// bytes alive after its forward, and the results to compare. On the CPU the allocator is
// libmemsave's counting one; on CUDA the caching allocator (Note [CUDA peak in tests]).
struct Step {
  int64_t peak = 0, alive_after_forward = 0;
  std::vector<at::Tensor> results;
};

// Whether the test device's tensor bytes can be measured in this build.
inline bool peak_measurable() {
#if MEMSAVE_TEST_CUDA_STATS
  return true;
#else
  return !on_cuda();
#endif
}

// Note [Poisoned peaks]: under MEMSAVE_POISON a CUDA stand-in is an ordinary allocation
// (Note [Poisoned stand-in] in hooks/core/standin.h; on the CPU it is a mapping outside the
// counted bytes, so CPU peaks stay a run's). There the memory tests still compare their
// results bit for bit but skip their peak checks, and say so once.
inline bool peaks_are_a_runs() {
  const char* p = std::getenv("MEMSAVE_POISON");  // off: unset, empty, or the boolean grammar's off values
  bool poisoned = p && *p;
  for (const char* off : {"0", "off", "no", "false"}) poisoned = poisoned && strcasecmp(p, off) != 0;
  if (!poisoned || !on_cuda()) return true;
  static const bool said = (std::printf("[ poison ] CUDA peaks are not a run's under MEMSAVE_POISON: peak checks skipped\n"), true);
  (void)said;
  return false;
}

// For the memory tests: skipped, with the reason, where the peak cannot be read.
#define MEMSAVE_NEEDS_PEAK()                                                                        \
  do {                                                                                              \
    if (!::memsave_test::peak_measurable())                                                         \
      GTEST_SKIP() << "no CUDA memory statistics in this build (Note [CUDA peak in tests])";        \
  } while (0)

#if MEMSAVE_TEST_CUDA_STATS
inline int cuda_index() { return test_device().has_index() ? test_device().index() : 0; }
#endif

// The tensor bytes alive now on the test device.
inline int64_t current_bytes() {
#if MEMSAVE_TEST_CUDA_STATS
  if (on_cuda()) return c10::cuda::CUDACachingAllocator::getDeviceStats(cuda_index()).allocated_bytes[0].current;
#endif
  return static_cast<int64_t>(stats().cpu_current_bytes);
}

// Starts measuring a step: resets the peak and returns the bytes alive now.
inline int64_t step_start() {
#if MEMSAVE_TEST_CUDA_STATS
  if (on_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(cuda_index());
#endif
  memsave_reset_peak();
  return current_bytes();
}

inline int64_t peak_since(int64_t base) {
#if MEMSAVE_TEST_CUDA_STATS
  if (on_cuda()) return c10::cuda::CUDACachingAllocator::getDeviceStats(cuda_index()).allocated_bytes[0].peak - base;
#endif
  return static_cast<int64_t>(stats().cpu_peak_bytes) - base;
}

// Stock's and libmemsave's run of one step (`step(on)`): results equal bit for bit, `nodes`
// of our nodes built in `family`, and a lower peak. Returns both, for the record.
inline std::pair<Step, Step> expect_step_saves_memory(const std::function<Step(bool on)>& step, int family,
                                                      uint64_t nodes) {
  const auto before = stats();
  Step stock = step(false), ours = step(true);
  const auto after = stats();
  EXPECT_EQ(stock.results.size(), ours.results.size());
  for (size_t i = 0; i < std::min(stock.results.size(), ours.results.size()); i++)
    EXPECT_TRUE(bitwise_equal(stock.results[i], ours.results[i])) << "result " << i;
  EXPECT_EQ(after.substituted[family] - before.substituted[family], nodes);
  if (peaks_are_a_runs()) EXPECT_LT(ours.peak, stock.peak);
  return {stock, ours};
}

// Prints how many tensors each test compared bitwise, and the program's total, so that a
// change of the tests can show that it kept the equality cases ("[ compared ]" lines).
class ComparedTensorsPrinter : public ::testing::EmptyTestEventListener {
 public:
  void OnTestStart(const ::testing::TestInfo&) override { start_ = compared_tensors.load(); }
  void OnTestEnd(const ::testing::TestInfo& info) override {
    const long n = compared_tensors.load() - start_;
    if (n) std::printf("[ compared ] %s.%s: %ld tensors\n", info.test_suite_name(), info.name(), n);
  }
  void OnTestProgramEnd(const ::testing::UnitTest&) override {
    std::printf("[ compared ] total: %ld tensors\n", compared_tensors.load());
  }

 private:
  long start_ = 0;
};
inline const bool compared_tensors_printer_added =
    (::testing::UnitTest::GetInstance()->listeners().Append(new ComparedTensorsPrinter), true);

// Note [mkldnn off on 2.x]: Debian 13's LibTorch 2.6 (oneDNN 3.7) computes wrong fp32
// convolution input gradients with mkldnn on some AVX-512 CPUs, varying from run to run and
// sometimes NaN, in stock itself (issue 7; Conv.StockMkldnnBackwardDataBug shows it where it
// reproduces). A stock result that changes between two runs cannot be compared bitwise, so
// every test program built against LibTorch 2.x runs with mkldnn off, which is correct and
// deterministic. Comparisons are never loosened instead.
class MkldnnOffOn2x : public ::testing::Environment {
 public:
  void SetUp() override {
#if TORCH_VERSION_MAJOR >= 2
    at::globalContext().setUserEnabledMkldnn(false);
#endif
    // On CUDA, stock may pick nondeterministic cuDNN algorithms (atomics), whose results
    // differ between two runs of stock itself; deterministic ones make them comparable.
    if (test_device().is_cuda()) {
      at::globalContext().setDeterministicCuDNN(true);
      at::globalContext().setBenchmarkCuDNN(false);
    }
    // MEMSAVE_TEST_CUDNN=0: the same tests through the native CUDA kernels (convolution's
    // slow paths, native_batch_norm instead of cudnn_batch_norm); scripts/gpu-check.sh runs
    // the suites both ways.
    const char* cudnn = std::getenv("MEMSAVE_TEST_CUDNN");
    if (cudnn && std::strcmp(cudnn, "0") == 0) at::globalContext().setUserEnabledCuDNN(false);
  }
};
inline ::testing::Environment* const mkldnn_off_environment = ::testing::AddGlobalTestEnvironment(new MkldnnOffOn2x);

// Sets whether mkldnn may be used, for one scope.
class MkldnnGuard {
 public:
  explicit MkldnnGuard(bool on) : prev_(at::globalContext().userEnabledMkldnn()) {
    at::globalContext().setUserEnabledMkldnn(on);
  }
  ~MkldnnGuard() { at::globalContext().setUserEnabledMkldnn(prev_); }

 private:
  bool prev_;
};

}  // namespace memsave_test
