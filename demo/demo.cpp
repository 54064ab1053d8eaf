// SPDX-License-Identifier: MIT
// memsave-demo: selective-differentiation workloads for A/B runs with and without
// libmemsave. Deterministic: fixed seed, synthetic data, one loss line per step. It does not
// link libmemsave: it is an unmodified LibTorch host.
//
//   memsave-demo [--scenario NAME] [--model NAME] [--batch N] [--size S] [--steps K]
//                [--threads T] [--list]
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "models.h"
#include "scenarios.h"

namespace {

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
    std::vector<double> losses = memsave_demo::run_scenario(o);
    for (size_t i = 0; i < losses.size(); i++) std::printf("step %zu loss %.17g\n", i, losses[i]);  // every bit of the double
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "memsave-demo: %s\n", e.what_without_backtrace());
    return 1;
  }
  return 0;
}
