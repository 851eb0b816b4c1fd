#!/usr/bin/env bash
# Times `papersys ingest --snapshot` beside a polars baseline (read_ndjson,
# mapping to the 13 columns, one CSV per year) on the same generated
# snapshot, in one run; prints seconds, peak memory and the ratio, then
# re-imports the snapshot onto the tree it produced and checks that no byte
# changed.
#
#   bench/ingest.sh [--records N] [--work DIR]
#
# --records: snapshot lines (default 2,800,000, Kaggle's size: ~4.7 GB),
# made by bench/make_snapshot.py from the real records in
# ../shared/data/arxiv-real and kept in --work (default
# /tmp/papersys-ingest-bench) for later runs.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
records=2800000
work=/tmp/papersys-ingest-bench
while [ $# -gt 0 ]; do
  case "$1" in
    --records) records="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

cd "$repo"
cargo build --release -q --bin papersys
bin="$repo/target/release/papersys"
py="$(scripts/python-env.sh)"
mkdir -p "$work"
snapshot="$work/snapshot-$records.json"
if [ ! -f "$snapshot" ]; then
  echo "generating $snapshot ($records lines)..." >&2
  "$py" bench/make_snapshot.py --records "$records" --out "$snapshot.part"
  mv "$snapshot.part" "$snapshot"
fi

# Runs a command; prints "seconds peak_MB cpu_seconds".
measure() {
  local stats
  stats=$(mktemp)
  /usr/bin/time -o "$stats" -f '%e %M %U %S' "$@" >/dev/null 2>"$stats.err" || { cat "$stats.err" >&2; exit 1; }
  awk '{printf "%.1f %.0f %.1f", $1, $2/1024, $3+$4}' "$stats"
  rm -f "$stats" "$stats.err"
}

tree="$work/papersys"
baseline="$work/polars"
rm -rf "$tree" "$baseline"
mkdir -p "$tree"
printf '[ingestion]\noutput_dir = "metadata"\n' > "$tree/papersys.toml"

echo "snapshot: $snapshot ($records lines, $(du -h "$snapshot" | cut -f1))"
echo "machine: $(nproc) CPUs, load before: $(cut -d' ' -f1-3 /proc/loadavg)"
sync
read -r p_s p_mb p_cpu < <(measure "$bin" --config "$tree/papersys.toml" ingest --snapshot "$snapshot")
sync
read -r b_s b_mb b_cpu < <(measure "$py" bench/ingest_polars.py "$snapshot" "$baseline")
p_rows=$(cat "$tree"/metadata/metadata-*.csv | "$py" -c 'import sys,csv; print(sum(1 for _ in csv.reader(sys.stdin)))')
printf '%-28s %9s %9s %9s\n' "" seconds "peak MB" "CPU s"
printf '%-28s %9s %9s %9s\n' "papersys ingest --snapshot" "$p_s" "$p_mb" "$p_cpu"
printf '%-28s %9s %9s %9s\n' "polars baseline" "$b_s" "$b_mb" "$b_cpu"
awk -v p="$p_s" -v b="$b_s" 'BEGIN { printf "speed-up over polars: %.2fx\n", b / p }'
echo "year files: papersys $(ls "$tree"/metadata/metadata-*.csv | wc -l), polars $(ls "$baseline"/metadata-*.csv | wc -l); papersys CSV records incl. headers: $p_rows"

before=$(cd "$tree/metadata" && find . -type f | sort | xargs sha256sum)
read -r r_s r_mb r_cpu < <(measure "$bin" --config "$tree/papersys.toml" ingest --snapshot "$snapshot")
after=$(cd "$tree/metadata" && find . -type f | sort | xargs sha256sum)
echo "re-import onto its own tree: ${r_s} s, peak ${r_mb} MB"
if [ "$before" = "$after" ]; then
  echo "re-import: no byte changed ($(echo "$after" | wc -l) files compared)"
else
  echo "re-import CHANGED files:" >&2
  diff <(echo "$before") <(echo "$after") >&2 || true
  exit 1
fi
