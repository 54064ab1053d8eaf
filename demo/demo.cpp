// SPDX-License-Identifier: MIT
// memsave-demo: selective-differentiation workloads for A/B runs with and without
// libmemsave. Deterministic: fixed seed, synthetic data, one loss line per step. It does not
// link libmemsave: it is an unmodified LibTorch host. When libmemsave is in the process
// (preloaded, with MEMSAVE=0 too) it also asks it, through the C ABI found with dlsym, for
// the peak of the steps alone (Steps peak below), which the benchmark reports.
//
//   memsave-demo [--scenario NAME] [--model NAME] [--batch N] [--size S] [--steps K]
//                [--threads T] [--list]
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "../shim/memsave.h"
#include "models.h"
#include "scenarios.h"

namespace {

// Steps peak: the CPU tensor bytes alive just before the first step (parameters, data,
// optimiser state: the same with and without libmemsave) and the peak of the steps above
// them, which is what the scenario's activations cost. Printed on stderr, so that `memsave
// ab --check-output` compares the losses only.
class StepsPeak {
 public:
  StepsPeak()
      : get_stats_(reinterpret_cast<int (*)(memsave_stats*, size_t)>(dlsym(RTLD_DEFAULT, "memsave_get_stats"))),
        reset_peak_(reinterpret_cast<void (*)()>(dlsym(RTLD_DEFAULT, "memsave_reset_peak"))) {}

  void before_first_step() {
    memsave_stats st{};
    if (!get_stats_ || !reset_peak_ || get_stats_(&st, sizeof st) != 0) return;
    reset_peak_();
    base_ = st.cpu_current_bytes;
    marked_ = true;
  }

  void print() const {
    memsave_stats st{};
    if (!marked_ || get_stats_(&st, sizeof st) != 0) return;
    std::fprintf(stderr, "memsave-demo: CPU tensor bytes before the first step %llu, steps peak above them %llu\n",
                 (unsigned long long)base_, (unsigned long long)(st.cpu_peak_bytes - base_));
  }

 private:
  int (*get_stats_)(memsave_stats*, size_t);
  void (*reset_peak_)();
  uint64_t base_ = 0;
  bool marked_ = false;
};

void usage(FILE* f) {
  std::fprintf(f,
               "usage: memsave-demo [--scenario NAME] [--model NAME] [--batch N] [--size S] [--steps K] "
               "[--threads T]\n       memsave-demo --list\n");
}

}  // namespace

int main(int argc, char** argv) {
  memsave_demo::ScenarioOptions o;
  int64_t threads = 0;
  for (int i = 1; i < argc; i++) {
    const char* a = argv[i];
    if (!std::strcmp(a, "--list")) {
      std::printf("scenarios:");
      for (const auto& s : memsave_demo::scenario_names()) std::printf(" %s", s.c_str());
      std::printf("\nmodels:");
      for (const auto& m : memsave_demo::model_names()) std::printf(" %s", m.c_str());
      std::printf("\n");
      return 0;
    }
    if (!std::strcmp(a, "--help") || !std::strcmp(a, "-h")) {
      usage(stdout);
      return 0;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "memsave-demo: %s needs a value\n", a);
      usage(stderr);
      return 2;
    }
    const char* v = argv[++i];
    if (!std::strcmp(a, "--scenario")) o.scenario = v;
    else if (!std::strcmp(a, "--model")) o.model = v;
    else if (!std::strcmp(a, "--batch")) o.batch = std::atoll(v);
    else if (!std::strcmp(a, "--size")) o.size = std::atoll(v);
    else if (!std::strcmp(a, "--steps")) o.steps = std::atoll(v);
    else if (!std::strcmp(a, "--threads")) threads = std::atoll(v);
    else {
      std::fprintf(stderr, "memsave-demo: unknown option %s\n", a);
      usage(stderr);
      return 2;
    }
  }
  if (threads > 0) torch::set_num_threads(static_cast<int>(threads));
  try {
    std::printf("scenario %s model %s batch %lld size %lld\n", o.scenario.c_str(), o.model.c_str(),
                (long long)o.batch, (long long)o.size);
    StepsPeak steps_peak;
    o.before_first_step = [&] { steps_peak.before_first_step(); };
    std::vector<double> losses = memsave_demo::run_scenario(o);
    for (size_t i = 0; i < losses.size(); i++) std::printf("step %zu loss %.17g\n", i, losses[i]);  // every bit of the double
    steps_peak.print();
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "memsave-demo: %s\n", e.what_without_backtrace());
    return 1;
  }
  return 0;
}
