#!/usr/bin/env bash
# What a reduced precision changes in the answers, not only in the vectors:
# embeds the first N shared real records with papersys in float32 and in
# PRECISION (same model, threads, batch, truncation), then prints each
# side's texts/s and model load time, the cosine of the two vectors of every
# text (min, mean) and, using every record as a "similar papers" query
# against all the others, how much of the float32 top-K the other precision
# returns (mean and worst overlap, share of identical top-K sets, share of
# identical nearest neighbours).
#
#   bench/precision-agreement.sh [--precision int8] [--n 2694] [--k 10]
#                                [--model-path DIR] [--max-length 256] [--threads 2]
#
# Default model: all-MiniLM-L6-v2 from the Hugging Face cache
# (scripts/fetch-model.sh). EMBED_BENCH=PATH runs that embed_bench binary
# instead of building one.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo/bench/lib.sh"
precision=int8 n=2694 k=10 model="" max_length=256 threads=2
while [ $# -gt 0 ]; do
  case "$1" in
    --precision) precision="$2"; shift 2 ;;
    --n) n="$2"; shift 2 ;;
    --k) k="$2"; shift 2 ;;
    --model-path) model="$2"; shift 2 ;;
    --max-length) max_length="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
export HF_HUB_OFFLINE=1
py="$("$repo/scripts/python-env.sh")"
target="${CARGO_TARGET_DIR:-$repo/target}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

shared_texts "$py" "$n" "$work/texts.jsonl"

bench="${EMBED_BENCH:-}"
if [ -z "$bench" ]; then
  (cd "$repo" && cargo build --quiet --release -p papersys-backend-native --features candle --example embed_bench)
  bench="$target/release/examples/embed_bench"
fi
model_args=()
if [ -n "$model" ]; then
  model_args=(--model-path "$model")
fi
for p in float32 "$precision"; do
  "$bench" "${model_args[@]}" --texts "$work/texts.jsonl" --threads "$threads" --batch-size 32 \
    --runs 1 --warmup 0 --max-length "$max_length" --precision "$p" --save-f32 "$work/$p.f32" \
    >"$work/$p.json"
done

"$py" - "$work" "$precision" "$k" <<'PY'
import json, os, sys
import numpy as np
work, precision, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
runs = {p: json.load(open(os.path.join(work, p + ".json"))) for p in ("float32", precision)}
n = runs["float32"]["n_texts"]
vecs = {}
for p in runs:
    v = np.fromfile(os.path.join(work, p + ".f32"), dtype="<f4").astype(np.float64).reshape(n, -1)
    vecs[p] = v / np.linalg.norm(v, axis=1, keepdims=True)
a, b = vecs["float32"], vecs[precision]
cos = (a * b).sum(1)
def top(v):
    s = v @ v.T
    np.fill_diagonal(s, -np.inf)
    return np.argsort(-s, axis=1)[:, :k]
ta, tb = top(a), top(b)
overlap = np.array([len(set(x) & set(y)) / k for x, y in zip(ta, tb)])
print(json.dumps({
    "texts": n,
    "k": k,
    "compute": {p: r["compute"] for p, r in runs.items()},
    "texts_per_s": {p: round(r["texts_per_s_best"], 2) for p, r in runs.items()},
    "model_load_s": {p: round(r["model_load_s"], 2) for p, r in runs.items()},
    "cosine_to_float32": {"min": round(float(cos.min()), 7), "mean": round(float(cos.mean()), 8)},
    "top_k_overlap": {"mean": round(float(overlap.mean()), 4), "min": round(float(overlap.min()), 2)},
    "identical_top_k_share": round(float((overlap == 1).mean()), 4),
    "same_nearest_neighbour_share": round(float((ta[:, 0] == tb[:, 0]).mean()), 4),
}, indent=2))
PY
