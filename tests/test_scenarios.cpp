// SPDX-License-Identifier: MIT
// test_scenarios: the demo's workloads on small sizes, stock versus libmemsave in one
// process. Losses must be identical (bitwise, as doubles) and libmemsave's peak CPU tensor
// bytes at most stock's, strictly lower where the analysis in docs/substituted.md says they
// must be, and under the ratio bounds.
//
// Note [Scenario memory on 2.x]: the tests turn mkldnn off on LibTorch 2.x (Note [mkldnn off
// on 2.x] in testing.h), but users run with it on, and the convolution backends' buffers are
// part of the peak: slow_conv2d's column buffer for the stem's input gradient alone puts
// ResNet-18's adversarial ratio near 0.5. So on 2.x each case also runs with mkldnn on, as
// users do, and the peaks come from those runs; the losses are compared in the mkldnn-off
// runs, where stock is deterministic on every CPU.
//
// Note [mkldnn probe]: on some AVX-512 CPUs Debian 13's oneDNN kills the process in stock's
// ConvolutionBackward0 (SIGFPE, an integer division by zero in
// dnnl_convolution_backward_data_primitive_desc_create, seen on an AMD EPYC). So before a
// case's mkldnn-on runs, the same stock run goes first in a child process (this program
// again, test Probe.Mkldnn); when the child dies, the case's peaks come from the mkldnn-off
// runs, which have other backends' buffers, and its ratio bound is not checked (printed).
#include <spawn.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "scenarios.h"
#include "testing.h"

namespace {

using memsave_test::with_memsave;

struct Outcome {
  std::vector<double> losses;
  uint64_t peak;
};

Outcome run(const memsave_demo::ScenarioOptions& o, bool on) {
  return with_memsave(on, [&] {
    // Peak above what exists before the first step (model, data, optimiser): what
    // training adds, activations first of all.
    uint64_t base = 0;
    memsave_demo::ScenarioOptions opts = o;
    opts.before_first_step = [&] {
      memsave_reset_peak();
      base = memsave_test::stats().cpu_current_bytes;
    };
    Outcome out;
    out.losses = memsave_demo::run_scenario(opts);
    out.peak = memsave_test::stats().cpu_peak_bytes - base;
    return out;
  });
}

struct Case {
  const char* model;
  const char* scenario;
  bool strictly_lower;  // the analysis says libmemsave must keep less
  double max_ratio;     // upper bound on peak(memsave) / peak(stock)
};

#if TORCH_VERSION_MAJOR >= 2
extern "C" char** environ;

// Note [mkldnn probe]: whether stock's run of this case with mkldnn on survives, in a child.
bool mkldnn_survives(const Case& c, int64_t batch, int64_t size) {
  std::vector<std::string> env;
  for (char** e = environ; *e; e++) env.emplace_back(*e);
  env.push_back(std::string("MEMSAVE_PROBE_CASE=") + c.model + " " + c.scenario + " " + std::to_string(batch) + " " +
                std::to_string(size));
  std::vector<char*> envp;
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  char arg0[] = "test_scenarios", arg1[] = "--gtest_filter=Probe.Mkldnn";
  char* argv[] = {arg0, arg1, nullptr};
  pid_t pid;
  if (posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv, envp.data()) != 0) return false;
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return false;
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}
#endif

void check(const Case& c, int64_t batch, int64_t size) {
  memsave_demo::ScenarioOptions o;
  o.model = c.model, o.scenario = c.scenario, o.batch = batch, o.size = size, o.steps = 2;
  const Outcome stock = run(o, false), ours = run(o, true);
  ASSERT_EQ(stock.losses.size(), ours.losses.size());
  for (size_t i = 0; i < stock.losses.size(); i++)
    EXPECT_EQ(std::memcmp(&stock.losses[i], &ours.losses[i], sizeof(double)), 0)
        << c.model << " " << c.scenario << " step " << i << ": " << stock.losses[i] << " vs " << ours.losses[i];
  uint64_t stock_peak = stock.peak, ours_peak = ours.peak;
  bool check_bound = true;
#if TORCH_VERSION_MAJOR >= 2
  if (mkldnn_survives(c, batch, size)) {  // Note [Scenario memory on 2.x]
    memsave_test::MkldnnGuard mkldnn(true);
    stock_peak = run(o, false).peak, ours_peak = run(o, true).peak;
  } else {  // Note [mkldnn probe]
    check_bound = false;
    std::printf("%s %s: stock dies with mkldnn on this CPU; peaks with mkldnn off, ratio bound not checked\n",
                c.model, c.scenario);
  }
#endif
  const double ratio = static_cast<double>(ours_peak) / static_cast<double>(stock_peak);
  std::printf("%-12s %-18s %3lldx%-3lld peak stock %10llu memsave %10llu ratio %.3f\n", c.model, c.scenario,
              (long long)batch, (long long)size, (unsigned long long)stock_peak, (unsigned long long)ours_peak, ratio);
  EXPECT_LE(ours_peak, stock_peak) << c.model << " " << c.scenario;
  if (c.strictly_lower) EXPECT_LT(ours_peak, stock_peak) << c.model << " " << c.scenario;
  if (check_bound) EXPECT_LE(ratio, c.max_ratio) << c.model << " " << c.scenario;
}

TEST(Scenarios, ResNet18) {
  const Case cases[] = {
      {"resnet18", "full", false, 1.02},        {"resnet18", "head", false, 1.0},
      {"resnet18", "surgical", true, 1.0},      {"resnet18", "bitfit", true, 1.0},
      {"resnet18", "norm", true, 1.0},          {"resnet18", "adversarial_train", true, 1.0},
  };
  for (const Case& c : cases) check(c, 8, 64);
}

// Issue 6's bounds for the adversarial scenario: 0.45 (ResNet-18) and 0.25 (ResNet-50). At
// very small sizes the peak is set by oneDNN's transient copies of the largest weights (9.4 MB
// for a 512x512x3x3 convolution, in stock and libmemsave alike), not by activations: at 8x64
// ResNet-18 measures 0.44 and at 4x64 ResNet-50 0.29. From 8x96 on, activations dominate, as
// in any real workload (bench/results.md, summarised in docs/benchmarks.md, shows the ratios
// at the benchmark's sizes).
TEST(Scenarios, AdversarialBounds) {
  check({"resnet18", "adversarial", true, 0.45}, 8, 96);
  check({"resnet50", "adversarial", true, 0.25}, 8, 96);
}

TEST(Scenarios, OtherModels) {
  const Case cases[] = {
      {"resnet50", "full", false, 1.02},
      {"vgg11", "adversarial", true, 1.0},     {"vgg11", "style", true, 1.0},
      {"mobilenet_v2", "adversarial", true, 0.3}, {"mobilenet_v2", "full", false, 1.02},
      {"transformer", "surgical", true, 1.0},  {"transformer", "full", false, 1.02},
  };
  for (const Case& c : cases) check(c, 4, 64);
}

// The LLaMA-style MLP stack and the GELU encoder (bench/transformer_case.py's models, in C++):
// their torch::nn::Linear takes addmm or matmul (mm of a fold), where the recipe family's
// consumers keep the recipes of SiLU's product, GELU's output and layer norm's output (Note
// [Mm consumer] in hooks/ops/recipe.cpp); "surgical" trains only the embedding, so every
// block's input needs a gradient and its weights none (input-only). Measured at 4x64: llama
// surgical 0.742 (1.13) / 0.782 (2.6, 2.14), full 0.776 / 0.783, gelu_encoder full 0.778 /
// 0.727; without the mm/addmm consumers, full 0.864 (llama) and 0.858 (gelu_encoder) on 1.13.
TEST(Scenarios, TransformerStacks) {
  const Case cases[] = {
      {"llama", "surgical", true, 0.82}, {"llama", "full", true, 0.82}, {"gelu_encoder", "full", true, 0.83},
  };
  for (const Case& c : cases) check(c, 4, 64);
}

// Note [mkldnn probe]: the child's run; skipped unless MEMSAVE_PROBE_CASE names a case.
TEST(Probe, Mkldnn) {
  const char* spec = std::getenv("MEMSAVE_PROBE_CASE");
  if (!spec) GTEST_SKIP() << "run by Note [mkldnn probe] only";
  char model[64], scenario[64];
  long long batch = 0, size = 0;
  ASSERT_EQ(std::sscanf(spec, "%63s %63s %lld %lld", model, scenario, &batch, &size), 4) << spec;
  memsave_demo::ScenarioOptions o;
  o.model = model, o.scenario = scenario, o.batch = batch, o.size = size, o.steps = 1;
  memsave_test::MkldnnGuard mkldnn(true);
  run(o, false);
}

}  // namespace
