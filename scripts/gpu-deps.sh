#!/usr/bin/env bash
# Runs HERE (a Debian machine with network access): downloads the .deb files that the GPU machine
# lacks into .deps/ (git-ignored), for scripts/gpu-check.sh to unpack there with dpkg -x. The GPU
# machine has PyTorch (libtorch, its CMake config, NCCL from nvidia-nccl-cu13), nvcc, CMake and
# ninja, but none of thinwire's Debian build dependencies:
#   Open MPI 4.1 (headers, libmpi and the libraries it loads), yaml-cpp, Boost headers (Asio),
#   GoogleTest, zlib headers, and the fortunes corpus that examples/text_llama.yaml trains on.
# The total stays far below the 64 MiB a device call may carry (about 16 MB).
#   scripts/gpu-deps.sh [directory]      default .deps
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-.deps}
packages=(
  libopenmpi-dev libopenmpi3 libhwloc15 libevent-core-2.1-7 libevent-pthreads-2.1-7
  libyaml-cpp-dev libyaml-cpp0.7
  libboost1.74-dev
  libgtest-dev
  zlib1g-dev zlib1g
  fortunes fortunes-min
)
mkdir -p "$dir"
cd "$dir"
rm -f ./*.deb
if ! apt-get download "${packages[@]}"; then
  echo "gpu-deps.sh: apt-get download failed; run apt-get update first" >&2
  exit 1
fi
total=$(du -cb ./*.deb | tail -1 | cut -f1)
echo "gpu-deps.sh: $(ls ./*.deb | wc -l) packages, $((total / 1024 / 1024)) MiB in $dir"
if (( total > 48 * 1024 * 1024 )); then
  echo "gpu-deps.sh: more than 48 MiB: the working tree and .deps must stay under 64 MiB" >&2
  exit 1
fi
