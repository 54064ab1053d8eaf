# SPDX-License-Identifier: MIT
# TorchFromPython.cmake: build against the torch that a Python imports (MEMSAVE_TORCH_PYTHON,
# the interpreter's path): a virtual environment's pip torch, or a distribution's. pip's build
# (pyproject.toml, scikit-build-core) sets it to the Python that runs pip;
# scripts/build-for-python.sh to the one it is given.
#
# It asks that torch for its package folder and C++ ABI and uses the folder as it is
# (cmake/TorchPackage.cmake: include/ and lib/, as both pip wheels and Debian's python3-torch
# lay them out), not Torch's CMake config: for a CUDA wheel that config wants a CUDA toolkit,
# which the hooks do not need. The C++ standard then comes from that torch's own ATen/ATen.h
# (cmake/TorchStandard.cmake). Sets MEMSAVE_TORCH_PACKAGE, MEMSAVE_TORCH_CXX11_ABI and
# MEMSAVE_TORCH_VERSION (torch.__version__) and MEMSAVE_TORCH_DISTRIBUTION (the version pip
# knows the torch distribution by, or empty when it has no metadata).
execute_process(
  COMMAND "${MEMSAVE_TORCH_PYTHON}" -c [=[
import os, torch
try:
    from importlib.metadata import version
    dist = version("torch")
except Exception:
    dist = ""
print(torch.__version__, os.path.dirname(torch.__file__), int(torch.compiled_with_cxx11_abi()), dist or "-", sep=";")
]=]
  RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _err OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT _rc EQUAL 0)
  string(REGEX REPLACE ".*\n([^\n]+)\n?$" "\\1" _last "${_err}")
  message(FATAL_ERROR "libmemsave: ${MEMSAVE_TORCH_PYTHON} cannot import torch (${_last}).\n"
          "libmemsave is built against the torch of the Python that builds it. Install torch in "
          "that environment first, then run `pip install --no-build-isolation .` there: without "
          "--no-build-isolation pip builds in a fresh environment that has no torch.")
endif()
list(GET _out 0 MEMSAVE_TORCH_VERSION)
list(GET _out 1 MEMSAVE_TORCH_PACKAGE)
list(GET _out 2 MEMSAVE_TORCH_CXX11_ABI)
list(GET _out 3 MEMSAVE_TORCH_DISTRIBUTION)
if(MEMSAVE_TORCH_DISTRIBUTION STREQUAL "-")
  set(MEMSAVE_TORCH_DISTRIBUTION "")
endif()
message(STATUS "libmemsave: torch ${MEMSAVE_TORCH_VERSION} from ${MEMSAVE_TORCH_PYTHON} "
        "(${MEMSAVE_TORCH_PACKAGE}, C++11 ABI ${MEMSAVE_TORCH_CXX11_ABI})")
include(cmake/TorchPackage.cmake)
