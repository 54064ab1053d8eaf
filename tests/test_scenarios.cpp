// SPDX-License-Identifier: MIT
// test_scenarios: the demo's workloads on small sizes, stock versus libmemsave in one
// process. Losses must be identical (bitwise, as doubles) and libmemsave's peak CPU tensor
// bytes at most stock's, strictly lower where the analysis in README says they must be,
// and under the ratio bounds.
//
// Note [Scenario memory on 2.x]: the tests turn mkldnn off on LibTorch 2.x (Note [mkldnn off
// on 2.x] in testing.h), but users run with it on, and the convolution backends' buffers are
// part of the peak: slow_conv2d's column buffer for the stem's input gradient alone puts
// ResNet-18's adversarial ratio near 0.5. So on 2.x each case also runs with mkldnn on, as
// users do, and the peaks come from those runs; the losses are compared in the mkldnn-off
// runs, where stock is deterministic on every CPU.
#include <cstdio>
#include <cstring>

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

void check(const Case& c, int64_t batch, int64_t size) {
  memsave_demo::ScenarioOptions o;
  o.model = c.model, o.scenario = c.scenario, o.batch = batch, o.size = size, o.steps = 2;
  const Outcome stock = run(o, false), ours = run(o, true);
  ASSERT_EQ(stock.losses.size(), ours.losses.size());
  for (size_t i = 0; i < stock.losses.size(); i++)
    EXPECT_EQ(std::memcmp(&stock.losses[i], &ours.losses[i], sizeof(double)), 0)
        << c.model << " " << c.scenario << " step " << i << ": " << stock.losses[i] << " vs " << ours.losses[i];
  uint64_t stock_peak = stock.peak, ours_peak = ours.peak;
#if TORCH_VERSION_MAJOR >= 2
  {  // Note [Scenario memory on 2.x]
    memsave_test::MkldnnGuard mkldnn(true);
    stock_peak = run(o, false).peak, ours_peak = run(o, true).peak;
  }
#endif
  const double ratio = static_cast<double>(ours_peak) / static_cast<double>(stock_peak);
  std::printf("%-12s %-18s %3lldx%-3lld peak stock %10llu memsave %10llu ratio %.3f\n", c.model, c.scenario,
              (long long)batch, (long long)size, (unsigned long long)stock_peak, (unsigned long long)ours_peak, ratio);
  EXPECT_LE(ours_peak, stock_peak) << c.model << " " << c.scenario;
  if (c.strictly_lower) EXPECT_LT(ours_peak, stock_peak) << c.model << " " << c.scenario;
  EXPECT_LE(ratio, c.max_ratio) << c.model << " " << c.scenario;
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
// in any real workload (README's table shows the ratios at the benchmark's sizes).
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

}  // namespace
