// SPDX-License-Identifier: MIT
// fields.h: a visitor over what a node keeps, for compiled autograd (Note [Compiled autograd]
// in core/node.h).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/TensorOptions.h>
#include <torch/csrc/autograd/saved_variable.h>

#include <cstdint>
#include <vector>

namespace memsave {

struct Geometry;

// A node's fields() calls these for everything its backward depends on: each SavedVariable
// (compiled autograd lifts it into the graph as an input) and every other value (which it
// specializes on: two nodes of one class whose values differ get different graphs). A value
// left out lets a graph traced for one node run for another.
class Fields {
 public:
  virtual void saved(torch::autograd::SavedVariable& v, bool is_output) = 0;
  virtual void ints(const std::vector<int64_t>& v) = 0;
  virtual void integer(int64_t v) = 0;
  virtual void real(double v) = 0;
  virtual void flag(bool v) = 0;
  virtual void options(const at::TensorOptions& o) = 0;
  // The recorded sizes, strides and options of a tensor not kept.
  void geometry(const Geometry& g);
  void optional_ints(const c10::optional<std::vector<int64_t>>& v) {
    flag(v.has_value());
    if (v) ints(*v);
  }

 protected:
  ~Fields() = default;
};

}  // namespace memsave
