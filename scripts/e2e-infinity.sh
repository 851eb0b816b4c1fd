#!/usr/bin/env bash
# End-to-end check of `papersys embed` against a real embedding server:
# installs Infinity (infinity-emb, with PyTorch: several GB, minutes) into a
# venv unless one is given, serves all-MiniLM-L6-v2 from local files on a
# free loopback port, builds a data tree from the shared real arXiv records,
# and embeds it twice through the papersys binary:
#
#   infinity_v1   backend = "infinity", base_url = the local Infinity
#   native_v1     the native engine, same model files
#
# then compares the two stores paper by paper (cosine; min/mean and how many
# below 0.999) and prints both runs' papers/s from `embed --json`.
# Opt-in: not part of CI. Exits 1 when the stores differ.
#
#   scripts/e2e-infinity.sh [--model-dir DIR] [--records FILE] [--out DIR]
#                           [--batch N] [--concurrency N] [--limit N]
#
#   --model-dir   the sentence-transformers model directory (default: the HF
#                 cache snapshot scripts/fetch-model.sh installs)
#   --records     records.jsonl (default: shared/data/arxiv-real beside the
#                 repo; when that is absent, the repo's examples/data CSVs)
#   --out         where the data tree, run reports and the server log go
#                 (default: target/e2e-infinity; the tree is rebuilt each run)
#   --batch       request_batch_size of the Infinity model (default 32)
#   --concurrency max_concurrency of the Infinity model (default 4)
#   --limit       only the first N records
# Environment: PAPERSYS_INFINITY_VENV (a venv with infinity-emb; default
# .venv-infinity in the repo, created when missing), PAPERSYS_VENV (the
# pyarrow + numpy venv of scripts/python-env.sh), CARGO_TARGET_DIR as usual.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

hub="${HF_HUB_CACHE:-${HF_HOME:-$HOME/.cache/huggingface}/hub}"
model_dir=""
records="$repo/../shared/data/arxiv-real/records.jsonl"
records_given=0
out="$repo/target/e2e-infinity"
batch=32
concurrency=4
limit=0
while [ $# -gt 0 ]; do
  case "$1" in
    --model-dir) model_dir="$2"; shift 2 ;;
    --records) records="$2"; records_given=1; shift 2 ;;
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
model_dir="$(cd "$model_dir" && pwd)"
if [ ! -f "$records" ]; then
  if [ "$records_given" = 1 ]; then
    echo "e2e-infinity: $records not found" >&2
    exit 1
  fi
  echo "e2e-infinity: $records not found; using the repo's examples/data instead" >&2
  records=""
fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"
tree="$out/tree"
rm -rf "$tree"
mkdir -p "$tree/metadata"

# The data tree: one metadata CSV per year, as the data contract has them
# (`;`-joined categories and authors, every other field as arXiv has it).
if [ -n "$records" ]; then
  python3 - "$records" "$tree/metadata" "$limit" <<'PY'
import csv, json, sys
from collections import defaultdict
from pathlib import Path

COLUMNS = ["paper_id", "title", "abstract", "categories", "primary_category", "authors",
           "published_at", "updated_at", "doi", "comment", "journal_ref", "license", "source"]
records_path, out, limit = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
by_year = defaultdict(list)
with open(records_path, encoding="utf-8") as fh:
    for n, line in enumerate(fh):
        if limit and n >= limit:
            break
        if line.strip():
            r = json.loads(line)
            by_year[r["published_at"][:4]].append(r)
for year, rows in sorted(by_year.items()):
    with open(out / f"metadata-{year}.csv", "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for r in sorted(rows, key=lambda r: r["paper_id"]):
            categories = r["categories"].split()
            writer.writerow([
                r["paper_id"], r["title"], r["abstract"], ";".join(categories),
                categories[0] if categories else "", ";".join(a.strip() for a in r["authors"].split(", ")),
                r["published_at"], r["updated_at"], r["doi"], r["comment"], r["journal_ref"],
                r["license"], "arxiv",
            ])
print(f"data tree: {sum(map(len, by_year.values()))} records in {len(by_year)} year files "
      f"({', '.join(f'{y}: {len(v)}' for y, v in sorted(by_year.items()))})", file=sys.stderr)
PY
else
  cp "$repo"/examples/data/metadata/metadata-*.csv "$tree/metadata/"
fi

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
# Offline and without telemetry: everything comes from local files. Run from
# $out so Infinity's cache directory lands there, not in the repo.
(cd "$out" && HF_HUB_OFFLINE=1 DO_NOT_TRACK=1 INFINITY_ANONYMOUS_USAGE_STATS=0 \
  exec "$venv/bin/infinity_emb" v2 --model-id "$model_dir" \
  --served-model-name sentence-transformers/all-MiniLM-L6-v2 \
  --url-prefix /v1 --host 127.0.0.1 --port "$port" --engine torch --device cpu) >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT

cargo build -q --release --bin papersys
bin="${CARGO_TARGET_DIR:-$repo/target}/release/papersys"
py="$("$repo/scripts/python-env.sh")"

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

cat >"$tree/papersys.toml" <<EOF
data_root = "."

[embedding]
checkpoint_interval = 1000

[[embedding.models]]
alias = "infinity_v1"
name = "sentence-transformers/all-MiniLM-L6-v2"
dimension = 384
backend = "infinity"
base_url = "$url"
request_batch_size = $batch
max_concurrency = $concurrency
timeout_s = 300

[[embedding.models]]
alias = "native_v1"
name = "sentence-transformers/all-MiniLM-L6-v2"
dimension = 384
batch_size = 32
model_path = "$model_dir"
EOF

echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for alias in infinity_v1 native_v1; do
  echo "papersys embed --model $alias ..." >&2
  "$bin" --config "$tree/papersys.toml" --json embed --model "$alias" >"$out/$alias.json" 2>"$out/$alias.log" \
    || { echo "e2e-infinity: papersys embed --model $alias failed:" >&2; tail -n 20 "$out/$alias.log" >&2; exit 1; }
done
python3 - "$out/infinity_v1.json" "$out/native_v1.json" <<'PY'
import json, sys
for path in sys.argv[1:]:
    m = json.load(open(path))["models"][0]
    print(f"{m['alias']:<12} embedded {m['embedded']}, failed {m['failed']}, "
          f"{m['elapsed_s']:.1f} s, {m['papers_per_s']:.1f} papers/s")
PY
"$py" "$repo/scripts/compare-embeddings.py" --stores "$tree/embeddings/infinity_v1" "$tree/embeddings/native_v1"
