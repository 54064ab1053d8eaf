// SPDX-License-Identifier: MIT
// torchscript.h: a saved TorchScript module (traced or scripted image classifier taking
// (N, 3, S, S)) as a demo model.
#pragma once

#include "models.h"

namespace memsave_demo {

// Loads it with torch::jit::load; throws c10::Error when the file is not a TorchScript
// module or its last layer is not a linear classifier.
std::shared_ptr<Model> load_torchscript_model(const std::string& path);

}  // namespace memsave_demo
