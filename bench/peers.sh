#!/usr/bin/env bash
# Python's safetensors.numpy.save_file + fsync against ckpt's synchronous save, on the same
# tensor shapes, interleaved (A B A B ...) in the same folder, each side in a warm process;
# prints the medians and the ratio as one JSON line. Installs what it needs in .venv-bench.
#
#   bench/peers.sh                     # 1024 MiB in 64 float32 tensors, 5 runs each
#   SIZE_MIB=256 RUNS=9 DIR=/mnt/x bench/peers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-1024}
TENSORS=${TENSORS:-64}
RUNS=${RUNS:-5}
DIR=${DIR:-.}

if [ ! -x .venv-bench/bin/python ]; then
  python3 -m venv .venv-bench
fi
.venv-bench/bin/python -m pip install --quiet --disable-pip-version-check safetensors numpy
cargo build --quiet --release -p ckpt
exec target/release/ckpt bench --only peers-python --python .venv-bench/bin/python \
  --size-mib "$SIZE_MIB" --tensors "$TENSORS" --runs "$RUNS" --dir "$DIR"
