# SPDX-License-Identifier: MIT
# TorchPackage.cmake: LibTorch from a pip torch package directory (MEMSAVE_TORCH_PACKAGE, the
# directory of torch/__init__.py), without its TorchConfig.cmake. For a CUDA build that
# config looks for a CUDA toolkit (nvcc), which a machine with only pip's runtime libraries
# lacks; libmemsave needs none of it: the hooks use the CPU libraries, and the test programs
# only need libtorch_cuda loaded so that tensors can live on the GPU.
#
# Sets what find_package(Torch) sets for our use: TORCH_INSTALL_PREFIX, TORCH_LIBRARIES and
# TORCH_CXX_FLAGS (the ABI only).
# MEMSAVE_TORCH_CXX11_ABI (0 or 1) must be torch.compiled_with_cxx11_abi().
set(TORCH_INSTALL_PREFIX "${MEMSAVE_TORCH_PACKAGE}")
if(NOT DEFINED MEMSAVE_TORCH_CXX11_ABI)
  message(FATAL_ERROR "MEMSAVE_TORCH_PACKAGE needs MEMSAVE_TORCH_CXX11_ABI (torch.compiled_with_cxx11_abi())")
endif()
foreach(lib torch torch_cpu c10)
  find_library(MEMSAVE_LIB_${lib} ${lib} PATHS "${TORCH_INSTALL_PREFIX}/lib" NO_DEFAULT_PATH REQUIRED)
endforeach()
add_library(memsave_torch INTERFACE)
target_include_directories(memsave_torch SYSTEM INTERFACE "${TORCH_INSTALL_PREFIX}/include"
                           "${TORCH_INSTALL_PREFIX}/include/torch/csrc/api/include")
target_compile_definitions(memsave_torch INTERFACE _GLIBCXX_USE_CXX11_ABI=${MEMSAVE_TORCH_CXX11_ABI})
target_link_libraries(memsave_torch INTERFACE ${MEMSAVE_LIB_torch} ${MEMSAVE_LIB_torch_cpu} ${MEMSAVE_LIB_c10})
# The CUDA libraries are linked even though nothing names their symbols: loading them
# registers the CUDA kernels and hooks.
find_library(MEMSAVE_LIB_torch_cuda torch_cuda PATHS "${TORCH_INSTALL_PREFIX}/lib" NO_DEFAULT_PATH)
find_library(MEMSAVE_LIB_c10_cuda c10_cuda PATHS "${TORCH_INSTALL_PREFIX}/lib" NO_DEFAULT_PATH)
if(MEMSAVE_LIB_torch_cuda AND MEMSAVE_LIB_c10_cuda)
  target_link_libraries(memsave_torch INTERFACE "-Wl,--push-state,--no-as-needed" ${MEMSAVE_LIB_torch_cuda}
                        ${MEMSAVE_LIB_c10_cuda} "-Wl,--pop-state")
endif()
set(TORCH_LIBRARIES memsave_torch)
set(TORCH_CXX_FLAGS "-D_GLIBCXX_USE_CXX11_ABI=${MEMSAVE_TORCH_CXX11_ABI}")
message(STATUS "libmemsave: LibTorch from the package ${TORCH_INSTALL_PREFIX} (CXX11 ABI ${MEMSAVE_TORCH_CXX11_ABI}; "
               "CUDA libraries: ${MEMSAVE_LIB_torch_cuda})")
