#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a trained model: installs what is missing,
# builds, and runs the default experiment (examples/fmnist_mlp.yaml: 4 ranks with mpirun on this
# machine, Fashion-MNIST, the 784-2048-2048-10 MLP). Ends with `final test_acc=<value>`.
#   scripts/quickstart.sh [--set path=value]...     e.g. --set train.steps=500
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
echo "quickstart: building (first build takes a few minutes)"
scripts/build.sh release thinwire
exec build/release/bin/thinwire launch examples/fmnist_mlp.yaml --set train.resume=never "$@"
