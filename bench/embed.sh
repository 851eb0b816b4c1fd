#!/usr/bin/env bash
# Benchmarks of `papersys embed` (issue: the embed pipeline). Prints figures;
# asserts nothing. Each part compares two things measured in the same run.
#
#   bench/embed.sh [--part e2e|daily|backfill|all] [--papers 2000] [--corpus 100000]
#                  [--new 500] [--backfill 100000] [--rounds 2]
#                  [--engine native|instant]
#
#   e2e       `papersys embed` over N new real papers, against the engine's raw
#             throughput on the same texts (embed_bench: same batch, threads,
#             length sorting), alternating; goal: >= 95%.
#   daily     a corpus of CORPUS embedded papers plus NEW new ones, against
#             embedding the NEW alone on an empty tree; goal: within 10%.
#   backfill  peak memory (and bytes written) while backfilling BACKFILL papers
#             at three sizes; goal: < 1 GB and flat. With --engine native
#             (the default) the real model embeds them: slow (about 25 min
#             for the three sizes up to 100,000 on 2 cores), so not part of "all". With --engine
#             instant a loopback server in its own process answers at once
#             (backends/remote/examples/instant_server): the same pipeline,
#             store and checkpoints, in a minute, without the model's memory.
#
# Texts are real arXiv records: ../shared/data/arxiv-real/records.jsonl when
# present (2,694), else the bundled examples/data (400), repeated under new
# ids when more are needed.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
part=all papers=2000 corpus=100000 new=500 backfill=100000 rounds=2 engine=native
while [ $# -gt 0 ]; do
  case "$1" in
    --part) part="$2"; shift 2 ;;
    --papers) papers="$2"; shift 2 ;;
    --corpus) corpus="$2"; shift 2 ;;
    --new) new="$2"; shift 2 ;;
    --backfill) backfill="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --engine) engine="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
cd "$repo"
scripts/fetch-model.sh
cargo build --release --locked -q --bin papersys --example make_big_tree
cargo build --release --locked -q -p papersys-backend-native --example embed_bench
cargo build --release --locked -q -p papersys-backend-remote --example instant_server
bin="$repo/target/release/papersys"
work="$(mktemp -d /tmp/papersys-bench-embed.XXXXXX)"
server_pid=""
trap '[ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"' EXIT
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

# real_papers OUT_CSV N [ID_PREFIX]: N real records as a metadata CSV (and
# OUT_CSV.jsonl with their prepared texts, for embed_bench).
real_papers() {
  python3 - "$repo" "$1" "$2" "${3:-}" <<'PY'
import csv, json, os, sys
repo, out, n, prefix = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
records = os.path.join(repo, "..", "shared", "data", "arxiv-real", "records.jsonl")
rows = []
if os.path.exists(records):
    with open(records, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    rows = [(r["paper_id"], r["title"], r["abstract"]) for r in rows]
else:
    for name in sorted(os.listdir(os.path.join(repo, "examples/data/metadata"))):
        with open(os.path.join(repo, "examples/data/metadata", name), newline="", encoding="utf-8") as fh:
            rows += [(r["paper_id"], r["title"], r["abstract"]) for r in csv.DictReader(fh)]
out_rows = []
i = 0
while len(out_rows) < n:
    pid, title, abstract = rows[i % len(rows)]
    lap = i // len(rows)
    # Repeats get a distinct title, so their vectors differ as real ones do
    # (identical vectors would compress away and flatter the bytes figures).
    out_rows.append((f"{prefix}{pid}" + (f"v{lap}" if lap else ""), title + (f" ({lap})" if lap else ""), abstract))
    i += 1
with open(out, "w", newline="", encoding="utf-8") as fh:
    w = csv.writer(fh)
    w.writerow(["paper_id", "title", "abstract"])
    w.writerows(out_rows)
with open(out + ".jsonl", "w", encoding="utf-8") as fh:
    for _, t, a in out_rows:
        fh.write(json.dumps({"text": (t + "\n\n" + a).strip()}) + "\n")
PY
}

# append_in_layout NEW_CSV CSV: appends NEW_CSV's rows (paper_id, title,
# abstract) to CSV in CSV's own columns, the others left empty.
append_in_layout() {
  python3 - "$1" "$2" <<'PY'
import csv, sys
new, target = sys.argv[1], sys.argv[2]
with open(target, newline="", encoding="utf-8") as fh:
    header = next(csv.reader(fh))
with open(new, newline="", encoding="utf-8") as fh:
    rows = list(csv.DictReader(fh))
with open(target, "a", newline="", encoding="utf-8") as fh:
    w = csv.DictWriter(fh, fieldnames=header, restval="")
    w.writerows(rows)
PY
}

config() {  # config DIR CHECKPOINT [BASE_URL]: BASE_URL makes it a remote model
  cat > "$1/papersys.toml" <<EOF
[embedding]
checkpoint_interval = $2
[[embedding.models]]
alias = "jasper_v1"
name = "sentence-transformers/all-MiniLM-L6-v2"
dimension = 384
batch_size = 32
EOF
  if [ -n "${3:-}" ]; then
    printf 'backend = "openai"\nbase_url = "%s"\nrequest_batch_size = 128\nmax_concurrency = 8\n' "$3" \
      >> "$1/papersys.toml"
  fi
}

# run_embed DIR -> "wall_s peak_MB written_MB embedded pipeline_s"
run_embed() {
  local stats="$work/time.txt" json="$work/out.json"
  /usr/bin/time -o "$stats" -f '%e %M %O' "$bin" -q --config "$1/papersys.toml" embed --json >"$json"
  python3 - "$stats" "$json" <<'PY'
import json, sys
wall, peak_kb, blocks = open(sys.argv[1]).read().split()[-3:]
m = json.load(open(sys.argv[2]))["models"][0]
print(f"{float(wall):.2f} {int(peak_kb)/1024:.0f} {int(blocks)*512/1e6:.1f} {m['embedded']} {m['elapsed_s']:.2f}")
PY
}

if [ "$part" = e2e ] || [ "$part" = all ]; then
  echo
  echo "== e2e: papersys embed over $papers new papers vs the engine's raw throughput =="
  mkdir -p "$work/e2e/metadata"
  real_papers "$work/e2e/metadata/metadata-2024.csv" "$papers"
  config "$work/e2e" 1000
  for round in $(seq "$rounds"); do
    raw=$(target/release/examples/embed_bench --texts "$work/e2e/metadata/metadata-2024.csv.jsonl" \
          --threads "$(nproc)" --batch-size 32 --runs 1 --warmup 64 2>/dev/null \
          | python3 -c 'import json, sys; print("%.1f" % json.load(sys.stdin)["texts_per_s_best"])')
    rm -rf "$work/e2e/embeddings"
    read -r wall peak written embedded pipeline <<<"$(run_embed "$work/e2e")"
    whole=$(awk "BEGIN{printf \"%.1f\", $embedded/$wall}")
    inner=$(awk "BEGIN{printf \"%.1f\", $embedded/$pipeline}")
    echo "round $round: engine raw $raw texts/s | papersys embed: $whole papers/s whole process ($wall s), $inner papers/s inside the run | ratio whole/raw $(awk "BEGIN{printf \"%.3f\", $whole/$raw}"), run/raw $(awk "BEGIN{printf \"%.3f\", $inner/$raw}") | peak ${peak} MB"
  done
fi

if [ "$part" = daily ] || [ "$part" = all ]; then
  echo
  echo "== daily: $corpus embedded papers + $new new, vs the $new alone =="
  target/release/examples/make_big_tree --out "$work/daily" --rows "$corpus" --coverage 1.0 >/dev/null 2>&1
  config "$work/daily" 1000
  newest=$(ls "$work/daily/metadata/"metadata-*.csv | sort | tail -1)
  year=$(basename "$newest" .csv | cut -d- -f2)
  real_papers "$work/new.csv" "$new" "new-"
  cp "$newest" "$work/newest.orig"
  mkdir -p "$work/alone/metadata"
  config "$work/alone" 1000
  "$bin" -q --config "$work/daily/papersys.toml" backlog >/dev/null   # caches as a daily user has them
  for round in $(seq "$rounds"); do
    # The corpus tree: restore its year file and CSV, then append the new papers.
    cp "$work/newest.orig" "$newest"
    append_in_layout "$work/new.csv" "$newest"
    rm -rf "$work/alone/embeddings"
    cp "$work/new.csv" "$work/alone/metadata/metadata-$year.csv"
    read -r a_wall a_peak _ a_n _ <<<"$(run_embed "$work/alone")"
    cp "$work/daily/embeddings/jasper_v1/$year.parquet" "$work/year.bak"
    read -r d_wall d_peak _ d_n _ <<<"$(run_embed "$work/daily")"
    # Undo for the next round: the year file without the new papers.
    cp "$work/year.bak" "$work/daily/embeddings/jasper_v1/$year.parquet"
    "$bin" -q --config "$work/daily/papersys.toml" backlog >/dev/null 2>&1 || true
    echo "round $round: $new alone ${a_wall} s ($a_n embedded, peak ${a_peak} MB) | corpus of $corpus + $new: ${d_wall} s ($d_n embedded, peak ${d_peak} MB) | overhead $(awk "BEGIN{printf \"%+.1f%%\", ($d_wall/$a_wall-1)*100}")"
  done
fi

if [ "$part" = backfill ]; then
  echo
  echo "== backfill: peak memory and bytes written by papersys embed ($engine engine) =="
  url=""
  if [ "$engine" = instant ]; then
    "$repo/target/release/examples/instant_server" --dim 384 --batch 128 >"$work/url" &
    server_pid=$!
    for _ in $(seq 1 50); do [ -s "$work/url" ] && break; sleep 0.1; done
    url="$(head -n 1 "$work/url")"
  fi
  for n in $((backfill / 10)) $((backfill / 3)) "$backfill"; do
    dir="$work/backfill-$n"
    mkdir -p "$dir/metadata"
    real_papers "$dir/metadata/metadata-2024.csv" "$n"
    config "$dir" 1000 "$url"
    read -r wall peak written embedded _ <<<"$(run_embed "$dir")"
    final=$(du -cb "$dir"/embeddings/jasper_v1/*.parquet | tail -1 | cut -f1)
    echo "$n papers: ${wall} s, $embedded embedded, peak ${peak} MB, wrote ${written} MB for $(awk "BEGIN{printf \"%.1f\", $final/1e6}") MB of year files ($(awk "BEGIN{printf \"%.2f\", $written*1e6/$final}")x)"
    rm -rf "$dir"
  done
fi
