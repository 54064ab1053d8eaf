// SPDX-License-Identifier: MIT
// memsave-demo: selective-differentiation workloads for A/B runs with and without
// libmemsave. Deterministic: fixed seed, synthetic data, one loss line per step. It does not
// link libmemsave: it is an unmodified LibTorch host. When libmemsave is in the process
// (preloaded, with MEMSAVE=0 too) it also asks it, through the C ABI found with dlsym, for
// the peak of the steps alone (Steps peak below), which the benchmark reports.
//
//   memsave-demo [--scenario NAME] [--model NAME | --torchscript FILE] [--batch N] [--size S]
//                [--steps K] [--threads T] [--list]
//
// Each step prints its loss (every bit of the double) and a digest of the gradients' bytes,
// so that `memsave ab --check-output` compares gradients bit for bit. --torchscript trains a
// module saved by torch.jit.save (traced or scripted image classifier) instead of a built-in
// model, loaded with torch::jit::load as a LibTorch program would.
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "../shim/memsave.h"
#include "models.h"
#include "scenarios.h"

namespace {

// FNV-1a over the gradients' bytes (contiguous copies), and their sizes: equal digests mean
// bitwise-equal gradients, as far as a 64-bit hash can tell.
uint64_t digest(const std::vector<torch::Tensor>& grads) {
  uint64_t h = 1469598103934665603ULL;
  auto mix = [&h](const unsigned char* p, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ULL;
  };
  for (const torch::Tensor& g : grads) {
    const int64_t numel = g.defined() ? g.numel() : -1;
    mix(reinterpret_cast<const unsigned char*>(&numel), sizeof numel);
    if (numel <= 0) continue;
    const torch::Tensor c = g.detach().contiguous().cpu();
    mix(static_cast<const unsigned char*>(c.data_ptr()), static_cast<size_t>(c.nbytes()));
  }
  return h;
}

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
               "usage: memsave-demo [--scenario NAME] [--model NAME | --torchscript FILE] [--batch N] [--size S]\n"
               "                    [--steps K] [--threads T]\n       memsave-demo --list\n");
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
    else if (!std::strcmp(a, "--torchscript")) o.torchscript = v;
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
    std::printf("scenario %s model %s batch %lld size %lld\n", o.scenario.c_str(),
                o.torchscript.empty() ? o.model.c_str() : o.torchscript.c_str(), (long long)o.batch, (long long)o.size);
    StepsPeak steps_peak;
    o.before_first_step = [&] { steps_peak.before_first_step(); };
    std::vector<uint64_t> digests;
    o.after_backward = [&](const std::vector<torch::Tensor>& grads) { digests.push_back(digest(grads)); };
    std::vector<double> losses = memsave_demo::run_scenario(o);
    for (size_t i = 0; i < losses.size(); i++)  // every bit of the double
      std::printf("step %zu loss %.17g gradients %016llx\n", i, losses[i],
                  i < digests.size() ? (unsigned long long)digests[i] : 0ULL);
    steps_peak.print();
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "memsave-demo: %s\n", e.what_without_backtrace());
    return 1;
  }
  return 0;
}
