// SPDX-License-Identifier: MIT
// init.cpp: memsave_hooks_init, the one extern "C" entry point the shim calls, and the
// registration of the families' kernels.
#include <torch/version.h>

#include <cstdio>
#include <string>
#include <exception>

#include "bitmask.h"
#include "internal.h"
#include "standin.h"
#include "kernel.h"

namespace memsave {

Registrar::Registrar()
    : cpu_(new torch::Library(torch::Library::IMPL, "aten", c10::DispatchKey::AutogradCPU, __FILE__, __LINE__)),
      cuda_(new torch::Library(torch::Library::IMPL, "aten", c10::DispatchKey::AutogradCUDA, __FILE__, __LINE__)) {
  // The libraries are never destroyed: the registrations must outlive every tensor and
  // node of the host, and the dispatcher may run during static destruction.
}

void Registrar::impl(const char* name, torch::CppFunction (*make)()) {
  cpu_->impl(name, make());
  cuda_->impl(name, make());
}

bool Registrar::has_stock_node(const char* name) {
  std::string full = std::string("aten::") + name;
  const size_t dot = full.find('.');
  const std::string overload = dot == std::string::npos ? "" : full.substr(dot + 1);
  if (dot != std::string::npos) full.resize(dot);
  const auto op = c10::Dispatcher::singleton().findSchema({full, overload});
  return op.has_value() && !op->hasKernelForDispatchKey(c10::DispatchKey::CompositeImplicitAutograd);
}

namespace {
// Filled by the FamilyRegistration objects of the family files at load time.
void (*g_families[MEMSAVE_FAMILY_SLOTS])(Registrar&);
unsigned g_also[MEMSAVE_FAMILY_SLOTS];

// The family table's names (shim/memsave.h), for the hooks' own messages.
const char* const kFamilyNames[] = {
#define XX(id, name, on, doc) #name,
    MEMSAVE_FAMILY_MAP(XX)
#undef XX
};
}  // namespace

FamilyRegistration::FamilyRegistration(memsave_family_t family, void (*fn)(Registrar&), unsigned also) {
  g_families[family] = fn;
  g_also[family] = also;
}

}  // namespace memsave

extern "C" __attribute__((visibility("default"))) int memsave_hooks_init(struct memsave_shared* shared) {
  using namespace memsave;
  if (!shared || shared->abi_version != MEMSAVE_HOOKS_ABI_VERSION) return MEMSAVE_EVERSION;
  try {
    set_shared(shared);
    std::snprintf(shared->torch_version, sizeof shared->torch_version, "%s", TORCH_VERSION);
    const unsigned asked = shared->opts.ops_mask;
    shared->families_unavailable = 0;
    for (int f = 0; f < MEMSAVE_FAMILY_COUNT; f++) {
      if (!(asked & (1u << f)) || g_families[f]) continue;
      shared->families_unavailable |= 1u << f;
      shared->log(MEMSAVE_LOG_INFO, "family %s is not available in this build; stock is used for it", kFamilyNames[f]);
    }
    install_counting_allocator();
    cuda_install_snapshot();
    if (!shared->opts.enable) return 0;
    set_poison(shared->opts.poison);  // Note [Poisoned stand-in] (standin.h)
    if (shared->opts.poison) shared->poisoned = poisoned_count();
    if (shared->opts.trace > 0) trace_init();
    register_stand_in_op();
    register_mask_flags_op();
    static Registrar registrar;  // constructed once; init is called once by the shim
    for (int f = 0; f < MEMSAVE_FAMILY_COUNT; f++) {
      if (!g_families[f] || !(asked & ((1u << f) | g_also[f]))) continue;
      g_families[f](registrar);
      if (asked & (1u << f)) shared->families_registered |= 1u << f;
    }
    return 0;
  } catch (const std::exception& e) {
    shared->log(0, "warning: the hooks failed to register: %s", e.what());
    return MEMSAVE_EINTERNAL;
  } catch (...) {
    return MEMSAVE_EINTERNAL;
  }
}
