# SPDX-License-Identifier: MIT
# Wheel.cmake: what `pip install --no-build-isolation .` installs (pyproject.toml). scikit-build-core
# installs into <site-packages>/memsave (wheel.install-dir), so the wheel holds one package:
#   memsave/__init__.py      python/memsave.py, the module (library_path() finds lib/ below)
#   memsave/__main__.py      python/memsave_main.py: the `memsave` command pip puts on PATH,
#                            which checks the torch and runs bin/memsave
#   memsave/_build.py        the torch this copy was built for (python/_build.py.in)
#   memsave/lib/             libmemsave.so, libmemsave_hooks.so (the hooks' RPATH names the
#                            torch they were linked against)
#   memsave/bin/memsave      the C command; it finds the library in ../lib (CMAKE_INSTALL_LIBDIR
#                            and BINDIR are lib and bin here: pyproject.toml)
#   memsave/include/memsave.h
install(TARGETS memsave LIBRARY DESTINATION lib PUBLIC_HEADER DESTINATION include)
install(TARGETS memsave_hooks LIBRARY DESTINATION lib)
install(TARGETS memsave_cli RUNTIME DESTINATION bin)
install(FILES python/memsave.py DESTINATION . RENAME __init__.py)
install(FILES python/memsave_main.py DESTINATION . RENAME __main__.py)
configure_file(python/_build.py.in ${CMAKE_BINARY_DIR}/_build.py @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/_build.py DESTINATION .)
