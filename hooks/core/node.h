// SPDX-License-Identifier: MIT
// node.h: the base of every node we build. It owns what all of them do alike: the lock, the
// one incoming gradient, "backward through the graph a second time", unpacking what was kept
// in stock's order before anything else, and the early return when no gradient is wanted.
#pragma once

#include <torch/csrc/autograd/function.h>

#include <mutex>

namespace memsave {

// `Saved` is what a node's unpack returns: the tensors it kept, unpacked (a tensor, a struct
// of them, or an empty struct for nodes that keep geometry only).
//
// Stock's node unpacks its SavedVariables first, so a second backward (or a version
// mismatch) raises even when the incoming gradient is undefined or no gradient is wanted;
// so does apply() here. A node without SavedVariables raises stock's message from the
// released flag.
template <class Saved>
class MemsaveNode : public torch::autograd::Node {
 public:
  void release_variables() final {
    std::lock_guard<std::mutex> lock(mutex_);
    released_ = true;
    release();
  }

  torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) final {
    std::lock_guard<std::mutex> lock(mutex_);
    TORCH_INTERNAL_ASSERT(grads.size() == 1, name(), ": expected 1 gradient, got ", grads.size());
    TORCH_CHECK(!released_, torch::autograd::ERR_BACKWARD_TWICE);
    const Saved saved = unpack();
    torch::autograd::variable_list out(num_outputs());
    bool wanted = false;
    for (size_t i = 0; i < out.size(); i++) wanted = wanted || task_should_compute_output(i);
    if (!wanted || !grads[0].defined()) return out;
    backward(grads[0], saved, out);
    return out;
  }

 protected:
  // Unpacks what the node kept, in stock's order (called with the lock held).
  virtual Saved unpack() = 0;
  // Drops what the node kept (release_variables, with the lock held).
  virtual void release() {}
  // Fills the wanted entries of `out` (task_should_compute_output) from the incoming
  // gradient, which is defined, with stock's backward kernel.
  virtual void backward(const at::Tensor& grad, const Saved& saved, torch::autograd::variable_list& out) = 0;

 private:
  bool released_ = false;
};

// Saved of a node that keeps geometry and arguments only.
struct Nothing {};

// release() of a node that keeps these SavedVariables.
template <class... Saved>
void reset_data(Saved&... saved) {
  (saved.reset_data(), ...);
}

}  // namespace memsave
