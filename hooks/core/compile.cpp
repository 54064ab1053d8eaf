// SPDX-License-Identifier: MIT
// compile.cpp: Note [Compile tracing] (rules.h): whether a call with Python dispatch keys is
// PyTorch's own tracing (torch.compile's AOTAutograd, make_fx), which our kernels serve.
#include "rules.h"

#include "shared.h"

#if MEMSAVE_COMPILE_TRACING
#include <c10/core/impl/PyObjectSlot.h>
#include <dlfcn.h>

#include <cstring>
#endif
#if MEMSAVE_TRACING_MODES
#include <c10/core/impl/TorchDispatchModeTLS.h>
#endif

namespace memsave {

#if MEMSAVE_COMPILE_TRACING
namespace {

// The few CPython functions we need, from the process (a Python host has them; a C++ host
// never reaches here: its tensors have no Python key). Opaque pointers only, no header, so
// nothing depends on the layout of CPython's objects.
struct Python {
  using Obj = void*;
  int (*is_initialized)();
  int (*gil_ensure)();
  void (*gil_release)(int);
  Obj (*type_of)(Obj);
  Obj (*get_attr)(Obj, const char*);
  const char* (*as_utf8)(Obj);
  void (*decref)(Obj);
  void (*clear_error)();
  bool ok = false;

  Python() {
    ok = sym(is_initialized, "Py_IsInitialized") && sym(gil_ensure, "PyGILState_Ensure") &&
         sym(gil_release, "PyGILState_Release") && sym(type_of, "PyObject_Type") &&
         sym(get_attr, "PyObject_GetAttrString") && sym(as_utf8, "PyUnicode_AsUTF8") && sym(decref, "Py_DecRef") &&
         sym(clear_error, "PyErr_Clear");
  }
  template <class F>
  static bool sym(F& f, const char* name) {
    f = reinterpret_cast<F>(dlsym(RTLD_DEFAULT, name));
    return f != nullptr;
  }

  // Whether `attr` of `obj`'s class is the string `want`.
  bool class_attr_is(Obj obj, const char* attr, const char* want) const {
    Obj type = type_of(obj);
    if (!type) {
      clear_error();
      return false;
    }
    Obj value = get_attr(type, attr);
    const char* s = value ? as_utf8(value) : nullptr;
    const bool same = s && std::strcmp(s, want) == 0;
    if (!s) clear_error();
    if (value) decref(value);
    decref(type);
    return same;
  }
};

const Python& python() {
  static const Python p;
  return p;
}

// Whether `t`'s Python object is one of the tensors PyTorch's tracing makes: a FakeTensor or
// a FunctionalTensor (torch._subclasses). Any other class is a subclass of the user's.
bool tracing_tensor(const at::Tensor& t) {
  const Python& py = python();
  if (!py.ok || !py.is_initialized()) return false;
  PyObject* obj = python_object(t.unsafeGetTensorImpl()->pyobj_slot());  // compat.h
  if (!obj) return false;
  const int gil = py.gil_ensure();
  const bool fake = py.class_attr_is(obj, "__module__", "torch._subclasses.fake_tensor") &&
                    py.class_attr_is(obj, "__name__", "FakeTensor");
  const bool functional = !fake && py.class_attr_is(obj, "__module__", "torch._subclasses.functional_tensor") &&
                          py.class_attr_is(obj, "__name__", "FunctionalTensor");
  py.gil_release(gil);
  return fake || functional;
}

}  // namespace

bool compile_tracing() { return tracing_modes(); }

const char* unsupported_traced_tensor(const at::Tensor& t) {
  if (!t.defined()) return nullptr;
  if (t.unsafeGetTensorImpl()->has_symbolic_sizes_strides()) return "compile tracing: symbolic sizes (dynamic shapes)";
  if (t.key_set().has(c10::DispatchKey::Python) && !tracing_tensor(t))
    return "compile tracing: a tensor subclass (not FakeTensor or FunctionalTensor)";
  return nullptr;
}
#else
bool compile_tracing() { return false; }
const char* unsupported_traced_tensor(const at::Tensor&) { return nullptr; }
#endif

// PyTorch's own tracing modes set, and none of the user's.
bool tracing_modes() {
#if MEMSAVE_TRACING_MODES
  using c10::impl::TorchDispatchModeKey;
  using c10::impl::TorchDispatchModeTLS;
  if (TorchDispatchModeTLS::any_modes_set(/*skip_infra_modes=*/true)) return false;  // a user's mode
  return TorchDispatchModeTLS::get_mode(TorchDispatchModeKey::FAKE).has_value() ||
         TorchDispatchModeTLS::get_mode(TorchDispatchModeKey::PROXY).has_value() ||
         TorchDispatchModeTLS::get_mode(TorchDispatchModeKey::FUNCTIONAL).has_value();
#else
  return false;
#endif
}

}  // namespace memsave
