#!/usr/bin/env bash
# Times `papersys ingest --snapshot` beside a polars baseline (read_ndjson,
# mapping to the 13 columns, one CSV per year) on the same generated
# snapshot, in one run; prints seconds, peak memory and the ratio, then
# re-imports the snapshot onto the tree it produced and checks that no byte
# changed.
#
#   bench/ingest.sh [--records N] [--work DIR] [--part snapshot|daily|all] [--no-polars] [--bin PATH]
#
# --bin: time this papersys binary instead of building target/release/papersys.
#
# polars holds the whole snapshot in memory (about 6x the file: ~27 GB at
# full size); --no-polars times papersys alone, for machines that cannot.
#
# --part daily instead times the merge of a daily run: 1,000 new papers
# into a year file of 250,000 rows (an import of that many lines of one
# year, then one of 1,000 more).
#
# --records: snapshot lines (default 2,800,000, Kaggle's size: ~4.7 GB),
# made by bench/make_snapshot.py from the real records in
# ../shared/data/arxiv-real and kept in --work (default
# /tmp/papersys-ingest-bench) for later runs.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
records=2800000
work=/tmp/papersys-ingest-bench
part=all
polars=1
bin=
while [ $# -gt 0 ]; do
  case "$1" in
    --records) records="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --part) part="$2"; shift 2 ;;
    --no-polars) polars=0; shift ;;
    --bin) bin="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

cd "$repo"
if [ -z "$bin" ]; then
  cargo build --release -q --bin papersys
  bin="$repo/target/release/papersys"
fi
py="$(scripts/python-env.sh)"
mkdir -p "$work"
# generate FILE ARGS...: a snapshot-format file, made once.
generate() {
  local file="$1"; shift
  if [ ! -f "$file" ]; then
    echo "generating $file..." >&2
    "$py" bench/make_snapshot.py --out "$file.part" "$@"
    mv "$file.part" "$file"
  fi
}

source "$repo/bench/lib.sh"

# Data rows of CSV files (records, not lines: fields hold newlines).
csv_rows() {
  "$py" -c 'import sys, csv; print(sum(sum(1 for _ in csv.reader(open(f, newline=""))) - 1 for f in sys.argv[1:]))' "$@"
}

echo "machine: $(nproc) CPUs, load before: $(cut -d' ' -f1-3 /proc/loadavg)"

if [ "$part" = daily ] || [ "$part" = all ]; then
  daily="$work/daily"
  rm -rf "$daily"
  mkdir -p "$daily"
  printf '[ingestion]\noutput_dir = "metadata"\n' > "$daily/papersys.toml"
  generate "$work/year2024-250000.json" --records 250000 --year 2024
  generate "$work/new2024-1000.json" --records 1000 --year 2024 --first-number 60000 --seed 8
  "$bin" --config "$daily/papersys.toml" ingest --snapshot "$work/year2024-250000.json" >/dev/null
  rows_before=$(csv_rows "$daily/metadata/metadata-2024.csv")
  read -r d_s d_mb d_cpu < <(measure "$bin" --config "$daily/papersys.toml" ingest --snapshot "$work/new2024-1000.json")
  echo "daily merge: 1,000 new papers into metadata-2024.csv (250,000 rows, $(du -h "$daily/metadata/metadata-2024.csv" | cut -f1)): ${d_s} s wall, ${d_cpu} s CPU, peak ${d_mb} MB"
  echo "  (rows before: $rows_before, after: $(csv_rows "$daily/metadata/metadata-2024.csv"); latest.csv rows: $(csv_rows "$daily/metadata/latest.csv"))"
fi
[ "$part" = daily ] && exit 0

snapshot="$work/snapshot-$records.json"
generate "$snapshot" --records "$records"
tree="$work/papersys"
baseline="$work/polars"
rm -rf "$tree" "$baseline"
mkdir -p "$tree"
printf '[ingestion]\noutput_dir = "metadata"\n' > "$tree/papersys.toml"

echo "snapshot: $snapshot ($records lines, $(du -h "$snapshot" | cut -f1)); load now: $(cut -d' ' -f1-3 /proc/loadavg)"
sync
read -r p_s p_mb p_cpu < <(measure "$bin" --config "$tree/papersys.toml" ingest --snapshot "$snapshot")
sync
p_rows=$(csv_rows "$tree"/metadata/metadata-*.csv)
printf '%-28s %9s %9s %9s\n' "" seconds "peak MB" "CPU s"
printf '%-28s %9s %9s %9s\n' "papersys ingest --snapshot" "$p_s" "$p_mb" "$p_cpu"
if [ "$polars" = 1 ]; then
  sync
  read -r b_s b_mb b_cpu < <(measure "$py" bench/ingest_polars.py "$snapshot" "$baseline")
  b_rows=$(csv_rows "$baseline"/metadata-*.csv)
  printf '%-28s %9s %9s %9s\n' "polars baseline" "$b_s" "$b_mb" "$b_cpu"
  awk -v p="$p_s" -v b="$b_s" 'BEGIN { printf "speed-up over polars: %.2fx (wall clock)\n", b / p }'
  echo "year files: papersys $(ls "$tree"/metadata/metadata-*.csv | wc -l), polars $(ls "$baseline"/metadata-*.csv | wc -l); rows: papersys $p_rows, polars $b_rows"
else
  echo "year files: $(ls "$tree"/metadata/metadata-*.csv | wc -l); rows: $p_rows (polars not run)"
fi

# The metadata files (the lock file beside them holds the writer's pid).
before=$(cd "$tree/metadata" && find . -type f ! -name '.*' | sort | xargs sha256sum)
read -r r_s r_mb r_cpu < <(measure "$bin" --config "$tree/papersys.toml" ingest --snapshot "$snapshot")
after=$(cd "$tree/metadata" && find . -type f ! -name '.*' | sort | xargs sha256sum)
echo "re-import onto its own tree: ${r_s} s, peak ${r_mb} MB"
if [ "$before" = "$after" ]; then
  echo "re-import: no byte changed ($(echo "$after" | wc -l) files compared)"
else
  echo "re-import CHANGED files:" >&2
  diff <(echo "$before") <(echo "$after") >&2 || true
  exit 1
fi
