#!/usr/bin/env bash
# End-to-end check of the remote backend against a real embedding server:
# installs Infinity (infinity-emb, with PyTorch: several GB, minutes) into a
# venv, serves all-MiniLM-L6-v2 from local files on a free loopback port,
# embeds the shared real arXiv records through papersys' remote client and
# compares the vectors with sentence-transformers' (cosine >= 0.999).
# Opt-in: not part of CI.
#
#   scripts/e2e-infinity.sh [--model-dir DIR] [--records FILE] [--out DIR]
#                           [--batch N] [--concurrency N] [--limit N]
#
#   --model-dir   the sentence-transformers model directory (default: the HF
#                 cache snapshot scripts/fetch-model.sh installs)
#   --records     records.jsonl (default: shared/data/arxiv-real beside the repo)
#   --out         where vectors, texts, the reference and the server log go
#                 (default: target/e2e-infinity)
# Environment: PAPERSYS_INFINITY_VENV (default .venv-infinity in the repo),
# PAPERSYS_PYTHON (a python with sentence-transformers for the reference;
# default: scripts/python-env.sh --full), CARGO_TARGET_DIR as usual.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

hub="${HF_HUB_CACHE:-${HF_HOME:-$HOME/.cache/huggingface}/hub}"
model_dir=""
records="$repo/../shared/data/arxiv-real/records.jsonl"
out="$repo/target/e2e-infinity"
batch=32
concurrency=4
limit=""
while [ $# -gt 0 ]; do
  case "$1" in
    --model-dir) model_dir="$2"; shift 2 ;;
    --records) records="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --batch) batch="$2"; shift 2 ;;
    --concurrency) concurrency="$2"; shift 2 ;;
    --limit) limit="$2"; shift 2 ;;
    *) echo "e2e-infinity: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$model_dir" ]; then
  model_dir="$(ls -d "$hub"/models--sentence-transformers--all-MiniLM-L6-v2/snapshots/*/ 2>/dev/null | head -n 1 || true)"
fi
if [ -z "$model_dir" ] || [ ! -f "$model_dir/config.json" ]; then
  echo "e2e-infinity: no all-MiniLM-L6-v2 model directory; run scripts/fetch-model.sh or pass --model-dir" >&2
  exit 1
fi
[ -f "$records" ] || { echo "e2e-infinity: $records not found; pass --records" >&2; exit 1; }
mkdir -p "$out"
model_dir="$(cd "$model_dir" && pwd)"

# Infinity, in its own venv: it pins numpy<2 and sentence-transformers<4.
venv="${PAPERSYS_INFINITY_VENV:-$repo/.venv-infinity}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
if ! "$venv/bin/python" -c 'import infinity_emb' 2>/dev/null; then
  echo "installing infinity-emb into $venv (PyTorch included; this takes a while)" >&2
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q 'infinity-emb[server,torch]==0.0.78'
fi

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
url="http://127.0.0.1:$port"
log="$out/infinity.log"
# Offline and without telemetry: everything comes from local files.
HF_HUB_OFFLINE=1 DO_NOT_TRACK=1 INFINITY_ANONYMOUS_USAGE_STATS=0 \
  "$venv/bin/infinity_emb" v2 --model-id "$model_dir" \
  --served-model-name sentence-transformers/all-MiniLM-L6-v2 \
  --url-prefix /v1 --host 127.0.0.1 --port "$port" --engine torch --device cpu >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT

echo "waiting for Infinity at $url (log: $log)" >&2
ready=0
for _ in $(seq 1 300); do
  if ! kill -0 "$server" 2>/dev/null; then
    echo "e2e-infinity: Infinity exited; last lines of $log:" >&2
    tail -n 30 "$log" >&2
    exit 1
  fi
  if python3 -c "import urllib.request; urllib.request.urlopen('$url/v1/models', timeout=2)" 2>/dev/null; then
    ready=1
    break
  fi
  sleep 1
done
[ "$ready" = 1 ] || { echo "e2e-infinity: Infinity not ready after 300 s; see $log" >&2; exit 1; }

cargo build -q --release -p papersys-backend-remote --example infinity_parity
target="${CARGO_TARGET_DIR:-$repo/target}"
"$target/release/examples/infinity_parity" --base-url "$url" --records "$records" --out "$out" \
  --batch "$batch" --concurrency "$concurrency" ${limit:+--limit "$limit"}

py="${PAPERSYS_PYTHON:-$("$repo/scripts/python-env.sh" --full)}"
"$py" "$repo/scripts/compare-embeddings.py" --model-dir "$model_dir" --texts "$out/texts.jsonl" \
  --vectors "$out/vectors.f32" --dim 384 --reference "$out/reference-$(cat "$out/texts.jsonl" "$model_dir/model.safetensors" | sha256sum | cut -c1-16).npy"
