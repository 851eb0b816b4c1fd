#!/usr/bin/env bash
# The cache-build, warm-search and daily-refresh steps of bench/search.sh
# (same commands, same work tree of hard links), without its 1,000-query and
# numpy steps; prints user and sys CPU beside each wall time.
#
#   bench/search-quick.sh PAPERSYS_BIN   (bench_daily_embed in its examples/ folder)
#   TREE=/tmp/papersys-reco by default; wrap in `flock /tmp/papersys-reco.lock`.
set -euo pipefail
bin=$1; examples=$(dirname "$bin")/examples
tree=${TREE:-/tmp/papersys-reco}; work_tree=/tmp/search-bench-work; alias=jasper_v1
rm -rf "$work_tree"; mkdir -p "$work_tree/metadata" "$work_tree/embeddings/$alias"
newest=$(ls "$tree"/metadata/metadata-*.csv | sort | tail -1)
newest_year=$(basename "$newest" .csv | sed 's/metadata-//')
for f in "$tree"/metadata/metadata-*.csv; do if [ "$f" = "$newest" ]; then cp "$f" "$work_tree/metadata/"; else ln "$f" "$work_tree/metadata/"; fi; done
for f in "$tree/embeddings/$alias"/*.parquet; do if [ "$(basename "$f")" = "$newest_year.parquet" ]; then cp "$f" "$work_tree/embeddings/$alias/"; else ln "$f" "$work_tree/embeddings/$alias/"; fi; done
config="$work_tree/search.toml"
printf 'data_root = "."\n[embedding]\n[[embedding.models]]\nalias = "%s"\nname = "sentence-transformers/all-MiniLM-L6-v2"\ndimension = 384\n' "$alias" > "$config"
cache="$work_tree/embeddings/$alias/.cache/vectors"
work=$(mktemp -d)
measure() {
  /usr/bin/time -o "$work/time" -f '%e %M %U %S' "$@" >"$work/out" 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  awk '{printf "%.2f s (user %.1f s, sys %.1f s), peak RSS %.0f MB (mapped pages included)", $1, $3, $4, $2/1024}' "$work/time"
}
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== cache build from nothing =="
echo "first search (builds the cache): $(measure "$bin" --config "$config" search -k 10 "graph neural networks")  load $(cut -d' ' -f1 /proc/loadavg)"
echo "cache size: $(du -sh "$cache" | cut -f1)"
echo "== one search process end to end (warm page cache) =="
for i in 1 2 3 4 5; do
  echo "run $i: $(measure "$bin" --config "$config" -v search -k 10 "contrastive learning for sentence embeddings")  load $(cut -d' ' -f1 /proc/loadavg)"
  echo "  $(grep -o 'ready: .*' "$work/err" | tail -1); $(grep -o 'scan [0-9.]* ms; memory: .*' "$work/err" | tail -1)"
done
echo "== cache after 1,000 new papers in the newest year =="
for day in 1 2 3; do
  "$examples/bench_daily_embed" --tree "$work_tree" --alias "$alias" --count 1000 --day "$day"
  echo "day $day, next search: $(measure "$bin" --config "$config" -vv search -k 10 "graph neural networks")  load $(cut -d' ' -f1 /proc/loadavg)"
  grep -o "[0-9]*: refreshed in .*\|[0-9]*: read in .*\|[0-9]*: delta of .*" "$work/err" | tail -2 | sed 's/^/  /'
  echo "  cache files of the year: $(ls -s --block-size=M "$cache" | grep -o "[0-9]*M $newest_year[.a-z]*seg" | tr '\n' ' ')"
  echo "  again: $(measure "$bin" --config "$config" -v search -k 10 "graph neural networks")"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
rm -rf "$work"
