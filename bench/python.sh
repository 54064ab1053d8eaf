#!/bin/sh
# SPDX-License-Identifier: MIT
# bench/python.sh [-n RUNS] [--quick]: the benchmark table for torchvision's models on the
# Python host (/usr/bin/python3, unmodified under the preload): bench/results-python.md.
exec "$(dirname "$0")/run.sh" --python "$@"
