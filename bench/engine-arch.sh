#!/usr/bin/env bash
# Native engine against sentence-transformers (PyTorch, CPU) for one model
# directory or architecture, side by side in one run: the same texts,
# threads, batch size and truncation, rounds alternating between the two.
# Prints texts/s of each side (best and median over rounds), their ratio,
# each side's peak RSS, the token counts and the cosine between the two
# sides' vectors (the check that both computed the same model).
#
#   bench/engine-arch.sh --arch NAME [--n 64] [--threads 2] [--batch-size 32]
#                        [--max-length 256] [--rounds 2] [--warmup 32]
#                        [--precision float32|bfloat16|int8]
#   bench/engine-arch.sh --model DIR ...
#   bench/engine-arch.sh --long 8192 --arch modernbert-base [--n 2] [--batch-size 1]
#
# --arch: minilm (all-MiniLM-L6-v2) and mpnet (all-mpnet-base-v2) are the
# real checkpoints (scripts/fetch-model.sh, scripts/fetch-mpnet.sh); the
# other names (bench/make_scaled.py --list) are random-weight checkpoints
# with the real model's layer shapes, made once into
# $CARGO_TARGET_DIR/scaled/NAME (a few hundred MB each; delete when done).
# --precision: what papersys computes in (sentence-transformers stays
# fp32, the reference); the cosine line then measures the reduced
# precision's fidelity.
# --long N: each text is shared records joined until it has at least N
# tokens (then truncated to N): time per batch and peak memory at N tokens.
#
# EMBED_BENCH=PATH runs that embed_bench binary instead of building one
# (to compare a saved build before a change with one after).
#
# Texts: the first N records of ../shared/data/arxiv-real/records.jsonl
# (title + "\n\n" + abstract), as bench/engine.sh.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
arch="" model="" n=64 threads=2 batch=32 max_length=256 rounds=2 warmup=32 long=0 precision=float32
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch="$2"; shift 2 ;;
    --model) model="$2"; shift 2 ;;
    --n) n="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --batch-size) batch="$2"; shift 2 ;;
    --max-length) max_length="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --long) long="$2"; shift 2 ;;
    --precision) precision="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$arch" ] && [ -z "$model" ]; then
  echo "give --arch NAME or --model DIR" >&2
  exit 2
fi
if [ "$long" != 0 ]; then
  max_length="$long"
  warmup=0
fi

export HF_HUB_OFFLINE=1
py="$("$repo/scripts/python-env.sh" --full)"
target="${CARGO_TARGET_DIR:-$repo/target}"
hub_snapshot() {
  "$py" - "$1" <<'PY'
import os, sys
cache = os.environ.get("HF_HUB_CACHE") or os.path.join(os.environ.get("HF_HOME") or os.path.expanduser("~/.cache/huggingface"), "hub")
repo = os.path.join(cache, "models--sentence-transformers--" + sys.argv[1])
print(os.path.join(repo, "snapshots", open(os.path.join(repo, "refs", "main")).read().strip()))
PY
}
case "$arch" in
  "") ;;
  minilm) "$repo/scripts/fetch-model.sh" >&2; model="$(hub_snapshot all-MiniLM-L6-v2)" ;;
  mpnet) "$repo/scripts/fetch-mpnet.sh" >&2; model="$(hub_snapshot all-mpnet-base-v2)" ;;
  *)
    model="$target/scaled/$arch"
    if [ ! -f "$model/model.safetensors" ]; then
      "$py" "$repo/bench/make_scaled.py" --arch "$arch" --out "$model" >&2
    fi
    ;;
esac

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
texts="$work/texts.jsonl"
"$py" - "$repo" "$n" "$texts" "$long" "$model" <<'PY'
import json, os, sys
repo, n, out, long, model = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
records = os.path.join(repo, "..", "shared", "data", "arxiv-real", "records.jsonl")
if not os.path.exists(records):
    sys.exit(f"{records} is missing: the shared real records are the benchmark's texts")
rows = []
with open(records, encoding="utf-8") as fh:
    for line in fh:
        r = json.loads(line)
        rows.append((r["title"] + "\n\n" + r["abstract"]).strip())
        if len(rows) >= (n if not long else 4000):
            break
if long:
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(model, "tokenizer.json"))
    texts, at = [], 0
    for _ in range(n):
        parts, count = [], 0
        while count < long + 16:
            if at >= len(rows):
                sys.exit(f"not enough records for {n} texts of {long} tokens")
            parts.append(rows[at])
            count += len(tok.encode(rows[at], add_special_tokens=False).ids)
            at += 1
        texts.append("\n\n".join(parts))
    rows = texts
with open(out, "w", encoding="utf-8") as fh:
    for t in rows:
        fh.write(json.dumps({"text": t}) + "\n")
print(f"{len(rows)} texts", file=sys.stderr)
PY

bench="${EMBED_BENCH:-}"
if [ -z "$bench" ]; then
  (cd "$repo" && cargo build --quiet --release -p papersys-backend-native --features candle --example embed_bench)
  bench="$target/release/examples/embed_bench"
fi

results="$work/results.jsonl"
# The two sides' fp32 GEMM rates at the model's feed-forward shape, each
# round: the part of the ratio no engine work can change.
gemm_shape="$("$py" -c 'import json, sys; c = json.load(open(sys.argv[1] + "/config.json")); print("8192x%dx%d" % (c["hidden_size"], c["intermediate_size"]))' "$model")"
uptime >&2
for r in $(seq 1 "$rounds"); do
  "$bench" --gemm --gemm-shape "$gemm_shape" --threads "$threads" >>"$results" 2>/dev/null ||
    echo "$bench: no --gemm-shape (an older build): no GEMM rate" >&2
  "$py" "$repo/bench/engine_st.py" --gemm --gemm-shape "$gemm_shape" --threads "$threads" >>"$results"
  echo "round $r/$rounds: papersys" >&2
  "$bench" --model-path "$model" --texts "$texts" --threads "$threads" --batch-size "$batch" \
    --runs 1 --warmup "$warmup" --max-length "$max_length" --precision "$precision" \
    --save-f32 "$work/ours.f32" >>"$results"
  echo "round $r/$rounds: sentence-transformers" >&2
  "$py" "$repo/bench/engine_st.py" --model "$model" --texts "$texts" --threads "$threads" \
    --batch-size "$batch" --runs 1 --warmup "$warmup" --max-seq-length "$max_length" \
    --document --save-f32 "$work/st.f32" 2>"$work/st.err" >>"$results" || { cat "$work/st.err" >&2; exit 1; }
done
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

"$py" - "$results" "$work" "$model" "$load_after" <<'PY'
import json, os, statistics, sys
import numpy as np
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
work, model, load_after = sys.argv[2:5]
gemm = {}
for r in rows:
    if "gemm_gflops" in r:
        gemm[r["engine"]] = max(gemm.get(r["engine"], 0.0), r["gemm_gflops"])
ours = [r for r in rows if r["engine"] == "papersys-native"]
st = [r for r in rows if r["engine"] == "sentence-transformers"]
def side(rs):
    v = [r["texts_per_s_best"] for r in rs]
    return max(v), statistics.median(v), max(r["peak_rss_mib"] for r in rs)
o_best, o_med, o_rss = side(ours)
s_best, s_med, s_rss = side(st)
n = ours[0]["n_texts"]
cfg = json.load(open(os.path.join(model, "config.json")))
summary = {
    "model": model,
    "model_type": cfg.get("model_type"),
    "papersys_compute": ours[0].get("compute"),
    "shape": {k: cfg.get(k) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                      "num_key_value_heads", "head_dim", "intermediate_size") if cfg.get(k) is not None},
    "texts": n, "threads": ours[0]["threads"], "batch_size": ours[0]["batch_size"],
    "max_tokens": ours[0]["max_tokens"], "tokens_mean": round(ours[0]["tokens_mean"], 1),
    "papersys_texts_per_s": {"best": round(o_best, 3), "median": round(o_med, 3), "runs": [round(r["texts_per_s_best"], 3) for r in ours]},
    "st_texts_per_s": {"best": round(s_best, 3), "median": round(s_med, 3), "runs": [round(r["texts_per_s_best"], 3) for r in st]},
    "ratio_best": round(o_best / s_best, 3), "ratio_median": round(o_med / s_med, 3),
    "papersys_peak_rss_mib": round(o_rss, 1), "st_peak_rss_mib": round(s_rss, 1),
    "loadavg_after": load_after.split(),
}
if gemm:
    summary["gemm_gflops_best"] = {k: round(v, 1) for k, v in gemm.items()}
    summary["gemm_shape"] = next(r["shape"] for r in rows if "gemm_gflops" in r)
if ours[0]["batch_size"] and n:
    batches = -(-n // ours[0]["batch_size"])
    summary["s_per_batch"] = {"papersys": round(n / o_best / batches, 3), "st": round(n / s_best / batches, 3)}
a = np.fromfile(os.path.join(work, "ours.f32"), dtype="<f4").astype(np.float64)
b = np.fromfile(os.path.join(work, "st.f32"), dtype="<f4").astype(np.float64)
if a.size == b.size and a.size % n == 0:
    a, b = a.reshape(n, -1), b.reshape(n, -1)
    c = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    summary["cosine_papersys_to_st"] = {"min": round(float(c.min()), 7), "mean": round(float(c.mean()), 8)}
else:
    summary["cosine_papersys_to_st"] = f"vector sizes differ: {a.size} vs {b.size}"
print(json.dumps(summary, indent=2))
PY
