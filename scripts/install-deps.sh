#!/usr/bin/env bash
# Installs every Debian package thinwire needs, idempotently: packages already present are not
# touched, and apt-get runs only when something is missing. Needs root (or sudo) for installs.
#
#   scripts/install-deps.sh            build + run + test dependencies
#   THINWIRE_DEPS_EXTRA="pkg ..." scripts/install-deps.sh   add more packages
set -euo pipefail

packages=(
  cmake ninja-build g++ pkg-config
  libtorch-dev                         # libtorch 1.13, CPU
  libopenblas0-openmp                  # the BLAS libtorch calls; the OpenMP variant honours
                                       # torch::set_num_threads (the pthread one oversubscribes)
  libopenmpi-dev openmpi-bin           # MPI backend and mpirun
  libyaml-cpp-dev                      # experiment configs
  libboost-dev                         # Boost.Asio control plane
  zlib1g-dev                           # gzip-compressed IDX files
  libgtest-dev libgmock-dev            # tests
  libbenchmark-dev                     # micro-benchmarks
  dataset-fashion-mnist                # /usr/share/datasets/fashion-mnist
  fortunes                             # plain text for the language-model workload
  xz-utils                             # the xz -9e baseline of the language-model workload
  iproute2                             # network emulation for benchmarks (ip, tc)
  python3-torch python3-matplotlib     # benchmark peer (PyTorch DDP), reports and plots
  clang libclang-rt-14-dev             # libFuzzer and the sanitizers of the fuzz tier (fuzz/)
  ${THINWIRE_DEPS_EXTRA:-}
)

missing=()
for p in "${packages[@]}"; do
  [[ -z $p ]] && continue
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ $status == "install ok installed" ]] || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    sudo=sudo
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q
  $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all ${#packages[@]} packages present"
fi

# libtorch resolves libblas.so.3 through Debian's alternatives: make sure it is OpenBLAS-OpenMP.
blas=/usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3
lapack=/usr/lib/x86_64-linux-gnu/openblas-openmp/liblapack.so.3
if [[ -e $blas && $(readlink -f /etc/alternatives/libblas.so.3-x86_64-linux-gnu 2>/dev/null) != "$blas" ]]; then
  ${sudo:-} update-alternatives --set libblas.so.3-x86_64-linux-gnu "$blas" || true
fi
if [[ -e $lapack && $(readlink -f /etc/alternatives/liblapack.so.3-x86_64-linux-gnu 2>/dev/null) != "$lapack" ]]; then
  ${sudo:-} update-alternatives --set liblapack.so.3-x86_64-linux-gnu "$lapack" || true
fi
