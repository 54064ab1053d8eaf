// SPDX-License-Identifier: MIT
// fork_host parent-first|child-first: an unmodified LibTorch program that forks after
// LibTorch is loaded and used (issue 15). The parent runs a frozen convolution whose input
// requires grad, forks, and parent and child each run it again and print their role, pid,
// the grad_fn's name and a checksum of the input gradient. parent-first: the child waits
// until the parent has exited (its atexit handlers have run) and then exits through exit();
// child-first: the parent waits for the child before it exits.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/function.h>
#include <torch/version.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

// One convolution and, unless `forward_only`, its backward.
void conv_step(const char* role, bool forward_only = false) {
  at::manual_seed(0);
  at::Tensor x = at::randn({2, 3, 16, 16}).requires_grad_(true);
  at::Tensor w = at::randn({8, 3, 3, 3});
  at::Tensor y = at::conv2d(x, w, {}, 1, 1);
  if (forward_only) {
    std::printf("%s pid %ld grad_fn %s\n", role, (long)getpid(), y.grad_fn()->name().c_str());
    std::fflush(stdout);
    return;
  }
  y.pow(2).sum().backward();
  at::Tensor g = x.grad().contiguous();
  uint64_t h = 1469598103934665603ull;  // FNV-1a over the gradient's bytes
  const auto* p = static_cast<const unsigned char*>(g.data_ptr());
  for (int64_t i = 0; i < g.numel() * 4; i++) h = (h ^ p[i]) * 1099511628211ull;
  std::printf("%s pid %ld grad_fn %s checksum %016llx\n", role, (long)getpid(), y.grad_fn()->name().c_str(),
              (unsigned long long)h);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
#if TORCH_VERSION_MAJOR >= 2
  at::globalContext().setUserEnabledMkldnn(false);  // as preload_host: deterministic stock on 2.x
#endif
  const bool parent_first = argc > 1 && std::strcmp(argv[1], "parent-first") == 0;
  // LibTorch in use before the fork, without a backward: since 2.x a process whose autograd
  // engine has started cannot run backward in a forked child, stock or not ("Unable to
  // handle autograd's threading in combination with fork-based multiprocessing").
  conv_step("before", /*forward_only=*/true);
  int gate[2];
  if (pipe(gate) != 0) return 2;
  pid_t child = fork();
  if (child < 0) return 2;
  if (child == 0) {
    close(gate[1]);
    conv_step("child");
    char c;
    if (parent_first)
      while (read(gate[0], &c, 1) > 0) {
      }  // EOF: the parent has exited
    std::exit(0);
  }
  close(gate[0]);
  conv_step("parent");
  int status = 0;
  if (!parent_first && (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0)) return 3;
  return 0;  // parent-first: the gate closes when this process is gone
}
