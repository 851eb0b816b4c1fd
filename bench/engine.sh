#!/usr/bin/env bash
# Native engine against sentence-transformers (PyTorch, CPU) on the same
# texts, threads, batch size and truncation, alternating runs in one
# invocation. Prints texts/s of each side, their ratio, each side's fraction
# of the fp32 GEMM bound (FLOPs per text from the token counts, GEMM rate
# measured now) and peak memory.
#
#   bench/engine.sh [--texts FILE.jsonl] [--n 512] [--threads 2] [--batch-size 32] [--rounds 3]
#                   [--bf16] [--no-st]
#
# --bf16 adds papersys with precision = "bfloat16" to every round: its
# texts/s beside papersys fp32, the ratio, the path it ran on (AVX512-BF16
# or the fp32 fallback) and the cosine of its vectors to papersys fp32 and
# to sentence-transformers fp32 (min, mean) on the same texts.
# --no-st leaves sentence-transformers out (then no cosine to it).
#
# Default texts: the first N records of ../shared/data/arxiv-real/records.jsonl
# (real abstracts, prepared as title + "\n\n" + abstract), else the texts of
# the engine's parity fixture.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo/bench/lib.sh"
texts="" n=512 threads=2 batch=32 rounds=3 bf16=0 st=1
while [ $# -gt 0 ]; do
  case "$1" in
    --texts) texts="$2"; shift 2 ;;
    --n) n="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --batch-size) batch="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --bf16) bf16=1; shift ;;
    --no-st) st=0; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

export HF_HUB_OFFLINE=1
"$repo/scripts/fetch-model.sh"
py="$("$repo/scripts/python-env.sh" --full)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [ -z "$texts" ]; then
  texts="$work/texts.jsonl"
  if [ -f "$repo/../shared/data/arxiv-real/records.jsonl" ]; then
    shared_texts "$py" "$n" "$texts"
  else
    "$py" - "$repo" "$n" "$texts" <<'PY'
import json, os, sys
repo, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
fixture = os.path.join(repo, "backends", "native", "tests", "fixtures", "minilm", "texts.jsonl")
with open(fixture, encoding="utf-8") as fh:
    rows = [json.loads(line)["text"] for line in fh][:n]
with open(out, "w", encoding="utf-8") as fh:
    for t in rows:
        fh.write(json.dumps({"text": t}) + "\n")
print(f"{len(rows)} fixture texts (no shared records)", file=sys.stderr)
PY
  fi
fi

model_dir="$("$py" -c '
import os
cache = os.environ.get("HF_HUB_CACHE") or os.path.join(os.environ.get("HF_HOME") or os.path.expanduser("~/.cache/huggingface"), "hub")
repo = os.path.join(cache, "models--sentence-transformers--all-MiniLM-L6-v2")
print(os.path.join(repo, "snapshots", open(os.path.join(repo, "refs", "main")).read().strip()))')"

(cd "$repo" && cargo build --quiet --release -p papersys-backend-native --example embed_bench)
bench="${CARGO_TARGET_DIR:-$repo/target}/release/examples/embed_bench"

results="$work/results.jsonl"
for r in $(seq 1 "$rounds"); do
  # The GEMM rate is measured every round too: the best one bounds both sides.
  "$bench" --gemm --threads "$threads" >>"$results"
  [ "$st" = 1 ] && "$py" "$repo/bench/engine_st.py" --gemm --threads "$threads" >>"$results"
  echo "round $r/$rounds: papersys" >&2
  "$bench" --texts "$texts" --threads "$threads" --batch-size "$batch" --runs 1 --max-length 256 \
    --save-f32 "$work/fp32.f32" >>"$results"
  if [ "$bf16" = 1 ]; then
    echo "round $r/$rounds: papersys bfloat16" >&2
    "$bench" --texts "$texts" --threads "$threads" --batch-size "$batch" --runs 1 --max-length 256 \
      --precision bfloat16 --save-f32 "$work/bf16.f32" >>"$results"
  fi
  if [ "$st" = 1 ]; then
    echo "round $r/$rounds: sentence-transformers" >&2
    "$py" "$repo/bench/engine_st.py" --model "$model_dir" --texts "$texts" --threads "$threads" \
      --batch-size "$batch" --runs 1 --max-seq-length 256 --save-f32 "$work/st.f32" 2>/dev/null >>"$results"
  fi
done

"$py" - "$results" "$work" <<'PY'
import json, os, statistics, sys
import numpy as np
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
work = sys.argv[2]
gemm = {}
for r in rows:
    if "gemm_gflops" in r:
        gemm[r["engine"]] = max(gemm.get(r["engine"], 0.0), r["gemm_gflops"])
ours = [r for r in rows if r["engine"] == "papersys-native" and r.get("precision", "auto") == "auto"]
bf16 = [r for r in rows if r["engine"] == "papersys-native" and r.get("precision") == "bfloat16"]
st = [r for r in rows if r["engine"] == "sentence-transformers"]
tokens = ours[0]["tokens"]
d, f, layers = 384, 1536, 6
flops = statistics.fmean(layers * (8 * L * d * d + 4 * L * d * f + 4 * L * L * d) for L in tokens)
rate = max(gemm.values())
bound = rate * 1e9 / flops
def side(rs):
    v = [r["texts_per_s_best"] for r in rs]
    return max(v), statistics.median(v), max(r["peak_rss_mib"] for r in rs)
o_best, o_med, o_rss = side(ours)
s_best, s_med, s_rss = side(st) if st else (float("nan"),) * 3
summary = {
    "texts": ours[0]["n_texts"], "threads": ours[0]["threads"], "batch_size": ours[0]["batch_size"],
    "max_tokens": ours[0]["max_tokens"], "tokens_mean": round(statistics.fmean(tokens), 1),
    "gflop_per_text": round(flops / 1e9, 3),
    "gemm_gflops": {k: round(v, 1) for k, v in gemm.items()}, "bound_texts_per_s": round(bound, 1),
    "papersys_texts_per_s": {"best": round(o_best, 2), "median": round(o_med, 2), "runs": [round(r["texts_per_s_best"], 2) for r in ours]},
    "st_texts_per_s": {"best": round(s_best, 2), "median": round(s_med, 2), "runs": [round(r["texts_per_s_best"], 2) for r in st]},
    "ratio_best": round(o_best / s_best, 3), "ratio_median": round(o_med / s_med, 3),
    "papersys_fraction_of_bound": round(o_best / bound, 3), "st_fraction_of_bound": round(s_best / bound, 3),
    "papersys_effective_gflops": round(o_best * flops / 1e9, 1), "st_effective_gflops": round(s_best * flops / 1e9, 1),
    "papersys_peak_rss_mib": round(o_rss, 1), "st_peak_rss_mib": round(s_rss, 1),
    "cpu_simd": sorted({f for f in open("/proc/cpuinfo").read().split() if f in ("avx2", "fma", "avx512f")}),
    "loadavg_after": open("/proc/loadavg").read().split()[:3],
}
def vectors(name):
    path = os.path.join(work, name)
    return np.fromfile(path, dtype="<f4").reshape(-1, 384).astype(np.float64) if os.path.exists(path) else None
def cos(a, b):
    c = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return {"min": round(float(c.min()), 7), "mean": round(float(c.mean()), 8)}
fp32_v, bf16_v, st_v = vectors("fp32.f32"), vectors("bf16.f32"), vectors("st.f32")
if st_v is not None:
    summary["cosine_papersys_fp32_to_st"] = cos(fp32_v, st_v)
if bf16:
    b_best, b_med, b_rss = side(bf16)
    summary["cpu_bf16"] = sorted({f for f in open("/proc/cpuinfo").read().split() if f in ("avx512_bf16", "amx_bf16", "amx_tile")})
    summary["papersys_bf16_compute"] = bf16[0].get("compute")
    summary["papersys_bf16_texts_per_s"] = {"best": round(b_best, 2), "median": round(b_med, 2), "runs": [round(r["texts_per_s_best"], 2) for r in bf16]}
    summary["bf16_over_fp32_best"] = round(b_best / o_best, 3)
    summary["bf16_over_fp32_median"] = round(b_med / o_med, 3)
    summary["papersys_bf16_peak_rss_mib"] = round(b_rss, 1)
    summary["cosine_bf16_to_papersys_fp32"] = cos(bf16_v, fp32_v)
    if st_v is not None:
        summary["cosine_bf16_to_st"] = cos(bf16_v, st_v)
print(json.dumps(summary, indent=2))
PY
