# SPDX-License-Identifier: MIT
# Package.cmake: the Debian package of the install rules (CPack's DEB generator;
# scripts/package.sh runs it): libmemsave_<version>_<arch>.deb, pinned to the exact LibTorch
# runtime package the hooks were linked against, so that apt refuses a mismatch instead of
# the shim refusing the hooks at run time (shim/loader.c).

# The Debian package that holds the libtorch_cpu the hooks link, and its version.
set(MEMSAVE_DEB_TORCH "")
find_program(MEMSAVE_DPKG_QUERY dpkg-query)
if(MEMSAVE_DPKG_QUERY)
  get_filename_component(_torch_real "${MEMSAVE_TORCH_CPU}" REALPATH)
  execute_process(COMMAND ${MEMSAVE_DPKG_QUERY} -S "${_torch_real}" OUTPUT_VARIABLE _owner
                  ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE)
  string(REGEX MATCH "^[^:, ]+" _pkg "${_owner}")  # "libtorch1.13:amd64: /usr/lib/..." -> libtorch1.13
  if(_pkg)
    execute_process(COMMAND ${MEMSAVE_DPKG_QUERY} -W -f=\${Version} ${_pkg} OUTPUT_VARIABLE _version
                    ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE)
    if(_version)
      set(MEMSAVE_DEB_TORCH "${_pkg} (= ${_version})")
    endif()
  endif()
endif()
if(MEMSAVE_DEB_TORCH)
  message(STATUS "libmemsave: the Debian package will depend on ${MEMSAVE_DEB_TORCH}")
else()
  message(STATUS "libmemsave: ${MEMSAVE_TORCH_CPU} is not from a Debian package; scripts/package.sh will refuse")
endif()

# prerm removes what Python compiled from memsave.py, which dpkg does not know about.
set(MEMSAVE_DEB_PREFIX /usr)
configure_file(${CMAKE_CURRENT_LIST_DIR}/prerm.in ${CMAKE_BINARY_DIR}/deb/prerm @ONLY)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME libmemsave)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "cut PyTorch autograd memory in selective differentiation (LD_PRELOAD)")
set(CPACK_PACKAGE_DESCRIPTION "libmemsave.so, preloaded into an unmodified LibTorch or PyTorch program, \
substitutes autograd nodes that keep only what backward needs when only some tensors need \
gradients (frozen layers, adversarial inputs). Outputs and gradients are bitwise those of stock. \
Ships the memsave command, the C ABI (memsave.h, CMake package, pkg-config) and the memsave \
Python module.")
set(CPACK_PACKAGE_CONTACT "libmemsave developers <libmemsave@invalid>")
set(CPACK_PACKAGING_INSTALL_PREFIX ${MEMSAVE_DEB_PREFIX})
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # libmemsave_<version>_<arch>.deb
set(CPACK_DEBIAN_PACKAGE_SECTION devel)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)  # libc6, libstdc++6, libunwind8, ... from dpkg-shlibdeps
set(CPACK_DEBIAN_PACKAGE_DEPENDS "${MEMSAVE_DEB_TORCH}")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS python3-torch)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA ${CMAKE_BINARY_DIR}/deb/prerm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_OUTPUT_FILE_PREFIX ${CMAKE_BINARY_DIR})
# cpack installs what is built; it must not build every test first (scripts/package.sh
# builds the installed targets only).
set(CMAKE_SKIP_INSTALL_ALL_DEPENDENCY ON)
include(CPack)
