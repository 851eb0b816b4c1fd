#!/usr/bin/env bash
# `papersys recommend` with 500 likes and a 7-day window, beside a Python
# baseline that does the same the way the original's recommend stage does
# (polars joins over every metadata CSV and year file + scikit-learn), on
# the same tree, in one run. Prints seconds, peak memory and the ratio.
#
#   bench/recommend.sh [--tree DIR] [--rows N] [--likes N] [--trials N]
#
# The tree (default /tmp/papersys-reco, 2.8M papers) is made by
# `make_big_tree` when missing; the dates of its two newest years are then
# spread over each year (the generator dates a whole year on one day), so a
# 7-day window holds a week of papers. Likes are drawn from 2024 (the
# original only learns from papers at or after background_start_year).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tree=/tmp/papersys-reco
rows=2800000
likes=500
trials=2
alias=jasper_v1
while [ $# -gt 0 ]; do
  case "$1" in
    --tree) tree="$2"; shift 2 ;;
    --rows) rows="$2"; shift 2 ;;
    --likes) likes="$2"; shift 2 ;;
    --trials) trials="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

cd "$repo"
cargo build --release -q --bin papersys --example make_big_tree
bin="$repo/target/release/papersys"
py="$(scripts/python-env.sh)"
if [ ! -f "$tree/.bench-ready" ]; then
  rm -rf "$tree"
  echo "generating $tree ($rows papers)..." >&2
  target/release/examples/make_big_tree --out "$tree" --rows "$rows" --coverage 1.0 --alias "$alias" >&2
  "$py" - "$tree" <<'EOF'
import sys, pathlib, polars as pl
root = pathlib.Path(sys.argv[1])
for year in (2024, 2025):
    path = root / "metadata" / f"metadata-{year}.csv"
    frame = pl.read_csv(path, infer_schema=False)
    days = (pl.int_range(0, frame.height, eager=True) * 365 // frame.height).cast(pl.Int64)
    dates = (pl.lit(f"{year}-01-01").str.to_date() + pl.duration(days=days)).dt.strftime("%Y-%m-%dT12:00:00Z")
    frame.with_columns(published_at=dates, updated_at=dates).write_csv(path)
EOF
  cat >> "$tree/papersys.toml" <<EOF

[recommend_pipeline.data]
embedding_columns = ["$alias"]
background_start_year = 2024
EOF
  touch "$tree/.bench-ready"
fi
rm -rf "$tree/preferences" "$tree/recommendations" "$tree/.bench-baseline"
"$py" - "$tree" "$likes" <<'EOF'
import sys, pathlib, polars as pl
root, n = pathlib.Path(sys.argv[1]), int(sys.argv[2])
ids = pl.read_csv(root / "metadata" / "metadata-2024.csv", columns=["paper_id"], infer_schema=False)["paper_id"]
step = max(1, ids.len() // n)
pl.DataFrame({"paper_id": ids[::step][:n], "preference": "like"}).write_csv(root / "likes.csv")
EOF
"$bin" --config "$tree/papersys.toml" -q prefs import "$tree/likes.csv" >/dev/null
window=(--from 2025-12-25 --until 2025-12-31)

source "$repo/bench/lib.sh"

echo "tree: $tree ($(du -sh "$tree/metadata" | cut -f1) CSV, $(du -sh "$tree/embeddings/$alias" | cut -f1) Parquet), $likes likes, window ${window[1]}..${window[3]}"
echo "machine load before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$bin" --config "$tree/papersys.toml" -q recommend "${window[@]}" --dry-run --json \
  | "$py" -c "import json,sys; c=json.load(sys.stdin)['counts']; print('papersys: %d likes, %d background, %d scored, %d shown' % (c['likes_used'], c['background_sampled'], c['scored'], c['recommended']))"
printf '%-10s %10s %10s %12s %12s\n' trial papersys_s baseline_s papersys_MB baseline_MB
best_p=""; best_b=""; peak_p=0; peak_b=0
for t in $(seq 1 "$trials"); do
  read -r ps pm _ <<<"$(measure "$bin" --config "$tree/papersys.toml" -q recommend "${window[@]}")"
  read -r bs bm _ <<<"$(measure "$py" "$repo/bench/recommend_baseline.py" "$tree" "$alias" 2025-12-25 2025-12-31 "$tree/.bench-baseline")"
  printf '%-10s %10s %10s %12s %12s\n' "$t" "$ps" "$bs" "$pm" "$bm"
  if [ -z "$best_p" ] || awk "BEGIN{exit !($ps < $best_p)}"; then best_p=$ps; fi
  if [ -z "$best_b" ] || awk "BEGIN{exit !($bs < $best_b)}"; then best_b=$bs; fi
  [ "$pm" -gt "$peak_p" ] && peak_p=$pm
  [ "$bm" -gt "$peak_b" ] && peak_b=$bm
done
awk -v p="$best_p" -v b="$best_b" -v pm="$peak_p" -v bm="$peak_b" \
  'BEGIN{printf "best of trials: papersys %.2f s (peak %d MB), baseline %.2f s (peak %d MB): %.1fx faster\n", p, pm, b, bm, b/p}'
