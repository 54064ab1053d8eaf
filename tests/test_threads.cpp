// SPDX-License-Identifier: MIT
// test_threads: 8 threads build and run substituted graphs at once while another thread
// toggles memsave_set_enabled (issue 15). Each thread trains its own small conv, batch
// norm, ReLU-family, max pool, dropout, linear network with its own frozen parts; its
// gradients must equal, bit for bit, those of the same steps run beforehand as stock on one
// thread. Counters must be exact: whatever the toggling, every call builds exactly one node,
// ours or stock's, and the substituted counter of each family equals the number of our
// nodes found in all the graphs; without toggling, 8 threads hammering one family count
// every call (substituted, passthrough and fallback counters alike).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/function.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "testing.h"

namespace {

using namespace memsave_test;  // the harness: tests/testing.h

constexpr int kThreads = 8, kSteps = 25;
// The families of the network, in the order of its layers.
constexpr memsave_family_t kFamilies[] = {MEMSAVE_FAMILY_CONV,    MEMSAVE_FAMILY_BATCHNORM, MEMSAVE_FAMILY_RELU,
                                          MEMSAVE_FAMILY_POOL,    MEMSAVE_FAMILY_DROPOUT,   MEMSAVE_FAMILY_LINEAR};
constexpr int kLayers = 6;

// The family of a node of the network, ours or stock's (-1: another node). Stock's dropout
// on the CPU is a multiplication by the noise and stock's linear an addmm; the network has
// no other multiplication or addmm.
int family_of(const std::string& name, bool* ours) {
  static const std::pair<const char*, int> names[] = {
      {"MemsaveConvolutionBackward", 0}, {"ConvolutionBackward0", 0}, {"MemsaveBatchNormBackward", 1},
      {"NativeBatchNormBackward0", 1},   {"MemsaveReluBackward", 2},  {"ReluBackward0", 2},
      {"MemsaveLeakyReluBackward", 2},   {"LeakyReluBackward0", 2},   {"MemsaveHardtanhBackward", 2},
      {"HardtanhBackward0", 2},          {"MemsaveThresholdBackward", 2}, {"ThresholdBackward0", 2},
      {"MemsaveMaxPool2DBackward", 3},   {"MaxPool2DWithIndicesBackward0", 3}, {"MemsaveDropoutBackward", 4},
      {"MulBackward0", 4},               {"MemsaveLinearBackward", 5}, {"AddmmBackward0", 5}};
  for (const auto& [n, f] : names)
    if (name == n) {
      *ours = name.rfind("Memsave", 0) == 0;
      return f;
    }
  return -1;
}

// Our nodes and stock's per layer, in one graph.
struct NodeCount {
  int ours[kLayers] = {}, stock[kLayers] = {};
};

NodeCount count_nodes(const at::Tensor& out) {
  NodeCount c;
  std::vector<torch::autograd::Node*> todo{out.grad_fn().get()};
  std::set<torch::autograd::Node*> seen;
  while (!todo.empty()) {
    torch::autograd::Node* n = todo.back();
    todo.pop_back();
    if (!n || !seen.insert(n).second) continue;
    bool ours = false;
    const int f = family_of(n->name(), &ours);
    if (f >= 0) (ours ? c.ours : c.stock)[f]++;
    for (const auto& e : n->next_edges()) todo.push_back(e.function.get());
  }
  return c;
}

// One thread's network. Its frozen parts and options come from its index: the input, the
// convolution weight, the batch-norm affine parameters and the linear weight each need a
// gradient in some threads only; batch norm trains in half of them (with the input
// needing a gradient, training batch norm is stock's, counted as passthrough); each thread
// has its own ReLU-family activation. The convolution bias always trains, so every layer
// builds a node.
struct Net {
  int id;
  at::Tensor cw, cb, bw, bb, rm, rv, lw, lb;
  std::vector<at::Tensor> inputs, grads_out;

  explicit Net(int t) : id(t) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(1000 + t);
    auto randn = [&](at::IntArrayRef s) { return at::randn(s, gen) * 0.5; };
    cw = randn({4, 3, 3, 3}).requires_grad_(t & 2);
    cb = randn({4}).requires_grad_(true);
    bw = (randn({4}) + 1).requires_grad_(t & 4);
    bb = randn({4}).requires_grad_(t & 4);
    rm = randn({4}), rv = at::rand({4}, gen) + 0.5;
    lw = randn({5, 64}).requires_grad_(t != 3);
    lb = randn({5}).requires_grad_(t % 3 == 0);
    for (int s = 0; s < kSteps; s++) {
      inputs.push_back(randn({2, 3, 8, 8}).requires_grad_(t & 1));
      grads_out.push_back(randn({2, 5}));
    }
  }

  bool trains_bn() const { return id % 2 == 0; }

  at::Tensor activation(const at::Tensor& h) const {
    switch (id % 4) {
      case 0: return at::relu(h);
      case 1: return at::leaky_relu(h, 0.1);
      case 2: return at::hardtanh(h, -0.5, 0.5);
      default: return at::threshold(h, 0.1, -1.0);
    }
  }

  // Step `s`: forward, the nodes it built, the gradients of what trains, then SGD on them.
  std::vector<at::Tensor> step(int s, std::mutex& rng_lock, NodeCount* nodes) {
    const at::Tensor& x = inputs[s];
    at::Tensor h = at::convolution(x, cw, cb, {1, 1}, {1, 1}, {1, 1}, false, {0, 0}, 1);
    h = at::batch_norm(h, bw, bb, rm, rv, trains_bn(), 0.1, 1e-5, false);
    h = at::max_pool2d(activation(h), {2, 2});
    {
      // The default generator is the process's: seeded and drawn under one lock, so that
      // each step's noise is the same whatever the other threads do.
      std::lock_guard<std::mutex> lock(rng_lock);
      at::manual_seed(7000 + 100 * id + s);
      h = at::dropout(h, 0.3, true);
    }
    at::Tensor out = at::linear(h.flatten(1), lw, lb);
    *nodes = count_nodes(out);
    std::vector<at::Tensor> leaves;
    for (const at::Tensor& t : {x, cw, cb, bw, bb, lw, lb})
      if (t.requires_grad()) leaves.push_back(t);
    std::vector<at::Tensor> g = torch::autograd::grad({out}, leaves, {grads_out[s]});
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < leaves.size(); i++)
      if (!leaves[i].is_same(x)) leaves[i].sub_(g[i] * 0.1);
    g.push_back(rm.clone()), g.push_back(rv.clone());
    return g;
  }
};

// Every step's results of every thread's network, run as stock on this thread.
std::vector<std::vector<std::vector<at::Tensor>>> stock_results() {
  std::mutex rng_lock;
  std::vector<std::vector<std::vector<at::Tensor>>> all;
  with_memsave(false, [&] {
    for (int t = 0; t < kThreads; t++) {
      Net net(t);
      NodeCount nodes;
      all.emplace_back();
      for (int s = 0; s < kSteps; s++) all.back().push_back(net.step(s, rng_lock, &nodes));
    }
    return 0;
  });
  return all;
}

// Runs `work(thread)` on kThreads threads while another toggles memsave_set_enabled (when
// `toggle`), started together; returns the number of toggles.
long run_threads(bool toggle, const std::function<void(int)>& work) {
  std::atomic<int> ready{0}, done{0};
  std::atomic<long> toggles{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; t++)
    threads.emplace_back([&, t] {
      ready++;
      while (ready.load() < kThreads + 1) std::this_thread::yield();
      work(t);
      done++;
    });
  std::thread toggler([&] {
    ready++;
    while (ready.load() < kThreads + 1) std::this_thread::yield();
    for (int on = 0; toggle && done.load() < kThreads; on ^= 1) {
      memsave_set_enabled(on);
      toggles++;
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  });
  for (auto& th : threads) th.join();
  toggler.join();
  memsave_set_enabled(1);
  return toggles.load();
}

TEST(Threads, TrainingWhileTogglingEqualsStockAndCountsExactly) {
  const auto expected = stock_results();
  std::mutex rng_lock;
  std::vector<Net> nets;
  for (int t = 0; t < kThreads; t++) nets.emplace_back(t);
  std::vector<std::vector<std::vector<at::Tensor>>> got(kThreads);
  std::vector<std::vector<NodeCount>> nodes(kThreads, std::vector<NodeCount>(kSteps));
  const auto before = stats();
  const long toggles = run_threads(true, [&](int t) {
    for (int s = 0; s < kSteps; s++) got[t].push_back(nets[t].step(s, rng_lock, &nodes[t][s]));
  });
  const auto after = stats();
  long ours[kLayers] = {}, stock[kLayers] = {};
  for (int t = 0; t < kThreads; t++)
    for (int s = 0; s < kSteps; s++) {
      const std::string where = "thread " + std::to_string(t) + " step " + std::to_string(s);
      ASSERT_EQ(got[t][s].size(), expected[t][s].size()) << where;
      for (size_t i = 0; i < got[t][s].size(); i++)
        EXPECT_TRUE(bitwise_equal(expected[t][s][i], got[t][s][i])) << where << " result " << i;
      for (int f = 0; f < kLayers; f++) {
        // Exactly one node per call, ours or stock's.
        EXPECT_EQ(nodes[t][s].ours[f] + nodes[t][s].stock[f], 1) << where << " layer " << f;
        ours[f] += nodes[t][s].ours[f], stock[f] += nodes[t][s].stock[f];
      }
    }
  long all_ours = 0, all_stock = 0;
  for (int f = 0; f < kLayers; f++) {
    const memsave_family_t fam = kFamilies[f];
    EXPECT_EQ(after.substituted[fam] - before.substituted[fam], static_cast<uint64_t>(ours[f]))
        << memsave_family_name(fam) << ": substituted counter against our nodes in the graphs";
    // A passthrough is a call that built stock's node while substitution was on.
    EXPECT_LE(after.passthrough[fam] - before.passthrough[fam], static_cast<uint64_t>(stock[f]))
        << memsave_family_name(fam);
    EXPECT_EQ(after.fallbacks[fam], before.fallbacks[fam]) << memsave_family_name(fam);
    std::printf("%s: %ld ours, %ld stock's\n", memsave_family_name(fam), ours[f], stock[f]);
    all_ours += ours[f], all_stock += stock[f];
  }
  std::printf("%d threads x %d steps, %ld toggles\n", kThreads, kSteps, toggles);
  // The toggling reached the graphs: both kinds of nodes were built.
  EXPECT_GT(all_ours, 0);
  EXPECT_GT(all_stock, 0);
}

// kThreads threads call cheap operators in a tight loop, so that the counters are updated
// from several cores at once: a ReLU (our node), a convolution whose weight trains
// (passthrough) and a hardtanh of NaN (fallback: stock's CPU kernel treats NaN differently in
// its vector and scalar loops).
constexpr int kCalls = 10000;

void hammer(int t, long* ours_seen) {
  at::Tensor x = at::randn({1}).requires_grad_(true), nan = at::full({1}, kNaN).requires_grad_(true);
  at::Tensor w = at::randn({1, 1, 1, 1}).requires_grad_(true), img = at::randn({1, 1, 1, 1});
  for (int i = 0; i < kCalls; i++) {
    *ours_seen += grad_fn_name(at::relu(x)) == "MemsaveReluBackward";
    at::convolution(img, w, {}, {1, 1}, {0, 0}, {1, 1}, false, {0, 0}, 1);
    at::hardtanh(nan, -1, 1);
  }
}

TEST(Threads, CountersExactUnderContention) {
  const auto before = stats();
  std::vector<long> seen(kThreads);
  run_threads(false, [&](int t) { hammer(t, &seen[t]); });
  const auto after = stats();
  const uint64_t calls = static_cast<uint64_t>(kThreads) * kCalls;
  EXPECT_EQ(after.substituted[MEMSAVE_FAMILY_RELU] - before.substituted[MEMSAVE_FAMILY_RELU], calls);
  EXPECT_EQ(after.passthrough[MEMSAVE_FAMILY_CONV] - before.passthrough[MEMSAVE_FAMILY_CONV], calls);
  EXPECT_EQ(after.fallbacks[MEMSAVE_FAMILY_RELU] - before.fallbacks[MEMSAVE_FAMILY_RELU], calls);
  long total = 0;
  for (long s : seen) total += s;
  EXPECT_EQ(total, static_cast<long>(calls));
}

// The substituted counter alone, at the highest rate one thread can reach (a ReLU of one
// element per call), so that increments from the two cores meet often: a plain `++` in
// place of the atomic add loses some of them.
TEST(Threads, SubstitutedCounterExactAtFullRate) {
  constexpr int kReluCalls = 40000;
  const auto before = stats();
  run_threads(false, [&](int) {
    at::Tensor x = at::randn({1}).requires_grad_(true);
    for (int i = 0; i < kReluCalls; i++) at::relu(x);
  });
  const auto after = stats();
  EXPECT_EQ(after.substituted[MEMSAVE_FAMILY_RELU] - before.substituted[MEMSAVE_FAMILY_RELU],
            static_cast<uint64_t>(kThreads) * kReluCalls);
}

TEST(Threads, CountersExactWhileToggling) {
  const auto before = stats();
  std::vector<long> seen(kThreads);
  const long toggles = run_threads(true, [&](int t) { hammer(t, &seen[t]); });
  const auto after = stats();
  long total = 0;
  for (long s : seen) total += s;
  std::printf("%ld of %d ReLU nodes ours, %ld toggles\n", total, kThreads * kCalls, toggles);
  EXPECT_EQ(after.substituted[MEMSAVE_FAMILY_RELU] - before.substituted[MEMSAVE_FAMILY_RELU],
            static_cast<uint64_t>(total));
  EXPECT_GT(total, 0);
  EXPECT_LT(total, static_cast<long>(kThreads) * kCalls);
  // Passthroughs and fallbacks happen only while on: at most one per call.
  EXPECT_LE(after.passthrough[MEMSAVE_FAMILY_CONV] - before.passthrough[MEMSAVE_FAMILY_CONV],
            static_cast<uint64_t>(kThreads) * kCalls);
  EXPECT_LE(after.fallbacks[MEMSAVE_FAMILY_RELU] - before.fallbacks[MEMSAVE_FAMILY_RELU],
            static_cast<uint64_t>(kThreads) * kCalls);
}

}  // namespace
