# SPDX-License-Identifier: MIT
# TorchStandard.cmake: the C++ standard of every C++ target, chosen from the Torch that was
# found (Debian's or a pip package's). PyTorch 2.14 (pytorch#178150) made its public headers
# (ATen/ATen.h, torch/all.h) reject anything before C++20 with an #error; earlier releases
# build with C++17. We read that requirement from ATen/ATen.h itself, not from the version
# number, so a release that moves it again is followed. MEMSAVE_CXX_STANDARD overrides.
set(MEMSAVE_CXX_STANDARD "" CACHE STRING "C++ standard for the hooks and tests (17, 20); empty: what Torch requires")
if(NOT MEMSAVE_CXX_STANDARD)
  find_file(MEMSAVE_ATEN_HEADER ATen/ATen.h PATHS ${TORCH_INCLUDE_DIRS} "${TORCH_INSTALL_PREFIX}/include"
            NO_DEFAULT_PATH)
  if(NOT MEMSAVE_ATEN_HEADER)
    find_file(MEMSAVE_ATEN_HEADER ATen/ATen.h)
  endif()
  set(_std 17)
  if(MEMSAVE_ATEN_HEADER)
    file(STRINGS "${MEMSAVE_ATEN_HEADER}" _cplusplus REGEX "__cplusplus *< *20[0-9]+L")
    if(_cplusplus MATCHES "__cplusplus *< *202002L")
      set(_std 20)
    endif()
  else()
    message(WARNING "libmemsave: ATen/ATen.h not found next to Torch; assuming C++17 (set MEMSAVE_CXX_STANDARD)")
  endif()
  set(MEMSAVE_CXX_STANDARD_USED ${_std})
else()
  set(MEMSAVE_CXX_STANDARD_USED ${MEMSAVE_CXX_STANDARD})
endif()
set(CMAKE_CXX_STANDARD ${MEMSAVE_CXX_STANDARD_USED})
set(CMAKE_CXX_STANDARD_REQUIRED ON)
message(STATUS "libmemsave: C++${CMAKE_CXX_STANDARD} (${MEMSAVE_ATEN_HEADER}${MEMSAVE_CXX_STANDARD})")
