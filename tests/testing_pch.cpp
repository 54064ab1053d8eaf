// SPDX-License-Identifier: MIT
// testing_pch.cpp: the file memsave_test_pch compiles, so that CMake builds the tests'
// precompiled headers once (Note [Precompiled headers] in CMakeLists.txt).
