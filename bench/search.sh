#!/usr/bin/env bash
# `papersys search` / `similar` on a large tree, beside numpy over the very
# same memory-mapped f32 vectors (the cache's f32 sections), in one run.
# Prints: building the cache from nothing, end-to-end time of one search
# process (warm page cache), 1,000 queries in one call (papersys's one pass
# over the matrix per block of queries vs numpy's `matrix @ Q` GEMM), scan
# time of one query (papersys vs numpy `matrix @ q` + `argpartition`), the
# cache after a day's 1,000 new papers, and memory (resident besides the map).
#
#   bench/search.sh [--tree DIR] [--work DIR] [--rows N] [--queries N] [--numpy-queries N] [--bin PATH]
#
# --tree is only read: the benchmark runs on a work tree (--work, default
# /tmp/search-bench-work) of hard links to its metadata CSVs and year files,
# with copies of the newest year's (the ones the "new papers" steps change);
# the cache is built there. --bin uses an already built papersys (the tree
# must exist) instead of a release build.
#
# The tree defaults to /tmp/papersys-big (2.8M papers, 95% embedded with
# random unit vectors), made by `make_big_tree` when missing, as
# bench/backlog.sh does; a tree made by ../shared/bench/make_big.py works too.
# Queries are embedded by the real all-MiniLM-L6-v2 (scripts/fetch-model.sh).
# The new papers are added by `examples/bench_daily_embed.rs` (rows appended
# to the newest metadata CSV, vectors merged with the library's
# `year_file::merge`, as `embed` does): day 1 is the first papersys merge
# into that year (a file written by another tool is rewritten in papersys's
# row groups, so its segment is rebuilt), days 2 and 3 the everyday case (a
# delta segment beside the year's).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tree=/tmp/papersys-big
work_tree=/tmp/search-bench-work
rows=2800000
queries=1000
numpy_queries=20
alias=jasper_v1
bin=""
while [ $# -gt 0 ]; do
  case "$1" in
    --tree) tree="$2"; shift 2 ;;
    --work) work_tree="$2"; shift 2 ;;
    --rows) rows="$2"; shift 2 ;;
    --queries) queries="$2"; shift 2 ;;
    --numpy-queries) numpy_queries="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

cd "$repo"
examples="$repo/target/release/examples"
if [ -z "$bin" ]; then
  cargo build --release -q --bin papersys --example make_big_tree --example bench_daily_embed
  bin="$repo/target/release/papersys"
elif [ -d "$(dirname "$bin")/examples" ]; then
  examples="$(dirname "$bin")/examples"
fi
if [ ! -d "$tree/metadata" ]; then
  echo "generating $tree ($rows papers)..." >&2
  "$examples/make_big_tree" --out "$tree" --rows "$rows" --coverage 0.95 --alias "$alias"
fi
# The work tree: links to the source's files, copies of the newest year's.
rm -rf "$work_tree"
mkdir -p "$work_tree/metadata" "$work_tree/embeddings/$alias"
newest=$(ls "$tree"/metadata/metadata-*.csv | sort | tail -1)
newest_year=$(basename "$newest" .csv | sed 's/metadata-//')
for f in "$tree"/metadata/metadata-*.csv; do
  if [ "$f" = "$newest" ]; then cp "$f" "$work_tree/metadata/"; else ln "$f" "$work_tree/metadata/"; fi
done
for f in "$tree/embeddings/$alias"/*.parquet; do
  if [ "$(basename "$f")" = "$newest_year.parquet" ]; then cp "$f" "$work_tree/embeddings/$alias/"; else ln "$f" "$work_tree/embeddings/$alias/"; fi
done
[ -f "$tree/embeddings/$alias/manifest.json" ] && cp "$tree/embeddings/$alias/manifest.json" "$work_tree/embeddings/$alias/"
source_tree="$tree"
tree="$work_tree"
config="$tree/search.toml"
printf 'data_root = "."\n[embedding]\n[[embedding.models]]\nalias = "%s"\nname = "sentence-transformers/all-MiniLM-L6-v2"\ndimension = 384\n' "$alias" > "$config"
py="$(scripts/python-env.sh)"
model_dir="$tree/embeddings/$alias"
cache="$model_dir/.cache/vectors"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

source "$repo/bench/lib.sh"
# Runs a command; prints its time and peak RSS; its stdout and stderr are
# kept in $work/out and $work/err.
timed() {
  local s m
  read -r s m _ <<<"$(MEASURE_OUT="$work/out" MEASURE_ERR="$work/err" measure "$@")"
  printf '%s s, peak RSS %s MB (mapped pages included)' "$s" "$m"
}
open_line() { grep -o 'cache: [^)]*' "$work/err" | tail -1; }

echo "tree: $source_tree ($(du -shL "$tree/metadata" | cut -f1) CSV, $(du -shL --exclude=.cache "$model_dir" | cut -f1) Parquet), worked on in $tree"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)"

# Queries: titles of papers spread over the corpus.
"$py" - "$tree" "$queries" > "$work/queries.txt" <<'EOF'
import csv, glob, random, sys
csv.field_size_limit(1 << 30)
root, n = sys.argv[1], int(sys.argv[2])
files = sorted(glob.glob(root + "/metadata/metadata-*.csv"))[-6:]
titles = []
for path in files:
    with open(path, newline="") as f:
        for i, row in enumerate(csv.DictReader(f)):
            if i % 97 == 0:
                titles.append(" ".join(row["title"].split()))
random.Random(7).shuffle(titles)
print("\n".join(titles[:n]))
EOF
echo "queries: $(wc -l < "$work/queries.txt") titles"

echo
echo "== cache build from nothing =="
rm -rf "$cache"
echo "first search (builds the cache): $(timed "$bin" --config "$config" search -k 10 "graph neural networks")"
echo "  $(open_line)"
echo "cache size: $(du -sh "$cache" | cut -f1)"

echo
echo "== one search process end to end (warm page cache) =="
for i in 1 2 3; do
  echo "run $i: $(timed "$bin" --config "$config" -v search -k 10 "contrastive learning for sentence embeddings")"
  echo "  $(grep -o 'ready: .*' "$work/err" | tail -1)"
  echo "  $(grep -o 'scan [0-9.]* ms; memory: .*' "$work/err" | tail -1)"
done

echo
echo "== $(wc -l < "$work/queries.txt") queries in one call (--queries) =="
echo "total: $(timed "$bin" --config "$config" search --queries "$work/queries.txt" -k 10)"
grep -o '[0-9]* queries: .*' "$work/err" | tail -1
echo "results: $(wc -l < "$work/out") JSON lines"

echo
echo "== scan alone: papersys vs numpy over the same mapped f32 vectors =="
id=$(head -c 2000 "$work/out" | grep -o '"paper_id":"[^"]*"' | head -1 | cut -d'"' -f4)
timed "$bin" --config "$config" --json similar -k 10 "$id" > /dev/null
cp "$work/out" "$work/similar.json"
"$py" - "$cache" "$numpy_queries" "$id" "$work/similar.json" <<'EOF'
import glob, json, struct, sys, time
import numpy as np
cache, n, given, ours = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.load(open(sys.argv[4]))
mats, ids = [], []
for path in sorted(glob.glob(cache + "/*.seg")):
    with open(path, "rb") as f:
        head = f.read(32)
        at, length = struct.unpack("<QQ", head[8:24])
        f.seek(at)
        footer = json.loads(f.read(length))
    rows, dim = footer["rows"], footer["stamps"]["dimension"]
    off, size, _ = footer["sections"][1]  # the f32 matrix
    mats.append(np.memmap(path, dtype=np.float32, mode="r", offset=off, shape=(rows, dim)))
    o0, l0, _ = footer["sections"][5]  # id offsets, ids
    o1, l1, _ = footer["sections"][6]
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    ends = np.frombuffer(raw[o0:o0 + l0], dtype=np.uint32)
    blob = bytes(raw[o1:o1 + l1])
    ids += [blob[ends[i]:ends[i + 1]].decode() for i in range(rows)]
total = sum(m.shape[0] for m in mats)
rng = np.random.default_rng(1)
def top(q, k=10):
    s = np.concatenate([m @ q for m in mats])
    part = np.argpartition(-s, k)[:k]
    return part[np.argsort(-s[part], kind="stable")], s
for m in mats:  # warm
    m @ np.zeros(m.shape[1], dtype=np.float32)
times = []
for _ in range(n):
    q = rng.standard_normal(mats[0].shape[1]).astype(np.float32)
    q /= np.linalg.norm(q)
    t = time.perf_counter()
    top(q)
    times.append(time.perf_counter() - t)
print(f"numpy (memmap f32 matrix @ q + argpartition, {total:,} x {mats[0].shape[1]}): "
      f"{1e3 * np.mean(times):.1f} ms/query (median {1e3 * np.median(times):.1f}, {n} queries)")
# A block of queries at once: one GEMM per segment, top k per column.
nb = 100
Q = rng.standard_normal((nb, mats[0].shape[1])).astype(np.float32)
Q /= np.linalg.norm(Q, axis=1, keepdims=True)
t = time.perf_counter()
best = np.full((10, nb), -np.inf, dtype=np.float32)
for m in mats:
    for j in range(0, nb, 50):
        S = m @ Q[j:j + 50].T
        kk = min(10, S.shape[0] - 1)
        part = np.argpartition(-S, kk, axis=0)[:10]
        cand = np.concatenate([best[:, j:j + 50], np.take_along_axis(S, part, axis=0)])
        best[:, j:j + 50] = -np.sort(-cand, axis=0)[:10]
elapsed = time.perf_counter() - t
print(f"numpy batch (f32 GEMM matrix @ Q, blocks of 50 queries, top 10 per query): "
      f"{1e3 * elapsed / nb:.1f} ms/query ({nb} queries in {elapsed:.1f} s)")
# The same top 10 as papersys similar, by numpy (cosine of the unit vectors)?
i = ids.index(given)
row = None
start = 0
for m in mats:
    if i < start + m.shape[0]:
        row = np.array(m[i - start], dtype=np.float64)
        break
    start += m.shape[0]
q = (row / np.linalg.norm(row)).astype(np.float64)
scores = np.concatenate([(m @ q.astype(np.float32)).astype(np.float64) / np.linalg.norm(m, axis=1) for m in mats])
scores[i] = -np.inf
order = np.argsort(-scores, kind="stable")[:10]
mine = [r["paper_id"] for r in ours["results"]]
print(f"papersys similar {given}: top 10 equal to numpy's: {mine == [ids[j] for j in order]}")
EOF

echo
echo "== cache after 1,000 new papers in the newest year =="
for day in 1 2 3; do
  "$examples/bench_daily_embed" --tree "$tree" --alias "$alias" --count 1000 --day "$day"
  echo "day $day, next search: $(timed "$bin" --config "$config" -vv search -k 10 "graph neural networks")"
  echo "  $(open_line)"
  grep -o "[0-9]*: refreshed in .*\|[0-9]*: read in .*\|[0-9]*: delta of .*" "$work/err" | tail -2 | sed 's/^/  /'
  echo "  cache files of the year: $(ls -s --block-size=M "$cache" | grep -o "[0-9]*M $newest_year[.a-z]*seg" | tr '\n' ' ')"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
