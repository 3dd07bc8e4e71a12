#!/usr/bin/env bash
# Configures and builds thinwire with a CMake preset (default: release) into build/<preset>.
#   scripts/build.sh [preset] [ninja targets...]
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-release}
shift || true
extra=()
[[ ${CI:-} == true ]] && extra+=(-DTHINWIRE_WERROR=ON)
cmake --preset "$preset" "${extra[@]}" >/dev/null
jobs=${THINWIRE_BUILD_JOBS:-$(nproc)}
cmake --build --preset "$preset" -j "$jobs" ${1:+--target "$@"}
