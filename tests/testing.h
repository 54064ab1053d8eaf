// SPDX-License-Identifier: MIT
// testing.h: helpers shared by the in-process hooks tests: bitwise comparison (NaN and -0.0
// aware), error-substring checks, and running the same code with and without libmemsave.
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
#include <functional>
#include <string>

#include "memsave.h"

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
  if (a.sizes() != b.sizes()) return ::testing::AssertionFailure() << "sizes " << a.sizes() << " vs " << b.sizes();
  if (a.strides() != b.strides())
    return ::testing::AssertionFailure() << "strides " << a.strides() << " vs " << b.strides();
  at::Tensor ca = a.detach().cpu().contiguous(), cb = b.detach().cpu().contiguous();
  if (std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.numel() * ca.element_size()) != 0) {
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

// The message of the exception `fn` throws, or "" when it does not throw.
inline std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

inline std::string grad_fn_name(const at::Tensor& t) {
  return t.grad_fn() ? t.grad_fn()->name() : std::string("(none)");
}

inline memsave_stats stats() {
  memsave_stats st;
  memsave_get_stats(&st, sizeof st);
  return st;
}

// The device of the equality tests that support one: MEMSAVE_TEST_DEVICE (cpu, cuda, cuda:1),
// default cpu. scripts/gpu-check.sh sets it to cuda.
inline at::Device test_device() {
  const char* d = std::getenv("MEMSAVE_TEST_DEVICE");
  return at::Device(std::string(d && *d ? d : "cpu"));
}

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

}  // namespace memsave_test
