#!/usr/bin/env bash
# Times `papersys backlog` on a large tree in three situations, beside a
# polars baseline that refreshes the same backlog the way the Python original
# did, in one run. Prints seconds, peak memory and ratios.
#
#   bench/backlog.sh [--tree DIR] [--rows N] [--alias A] [--bin PAPERSYS]
#
# --bin times that papersys binary (e.g. an older build, for a before/after
# comparison) instead of building this checkout's.
# The tree defaults to /tmp/papersys-big (2.8M papers, 95% embedded), made by
# `cargo run --release --example make_big_tree` when missing; a tree made by
# ../shared/bench/make_big.py works too. "Cold" runs drop the page cache
# first, which needs root; without it the figures are labelled warm.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tree=/tmp/papersys-big
rows=2800000
alias=jasper_v1
bin=""
while [ $# -gt 0 ]; do
  case "$1" in
    --tree) tree="$2"; shift 2 ;;
    --rows) rows="$2"; shift 2 ;;
    --alias) alias="$2"; shift 2 ;;
    --bin) bin="$(realpath "$2")"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

cd "$repo"
if [ -z "$bin" ]; then
  cargo build --release -q --bin papersys
  bin="$repo/target/release/papersys"
fi
if [ ! -d "$tree/metadata" ]; then
  echo "generating $tree ($rows papers)..." >&2
  cargo build --release -q --example make_big_tree
  target/release/examples/make_big_tree --out "$tree" --rows "$rows" --coverage 0.95 --alias "$alias"
fi
[ -f "$tree/papersys.toml" ] || printf '[embedding]\n[[embedding.models]]\nalias = "%s"\nname = "m"\ndimension = 384\n' "$alias" > "$tree/papersys.toml"
py="$(scripts/python-env.sh)"
model_dir="$tree/embeddings/$alias"

can_drop=0
if [ -w /proc/sys/vm/drop_caches ]; then can_drop=1; fi
drop() { sync; if [ "$can_drop" = 1 ]; then echo 3 > /proc/sys/vm/drop_caches; fi; }
fresh() { rm -rf "$tree/embeddings/.cache" "$model_dir/.cache" "$model_dir/backlog.parquet"; }

source "$repo/bench/lib.sh"

# The newest CSV is changed in place; the original (content and stamp, so
# other tools' caches of it stay valid) is put back on any exit.
newest=$(ls "$tree"/metadata/metadata-*.csv | sort | tail -1)
keep_original "$newest"

cold_label=$([ "$can_drop" = 1 ] && echo "cold page cache" || echo "NOT cold (no root)")
echo "tree: $tree ($(du -sh "$tree/metadata" | cut -f1) CSV, $(du -sh "$model_dir" | cut -f1) Parquet)"
echo "machine load before: $(cut -d' ' -f1-3 /proc/loadavg)"

# Each situation runs $trials times, papersys and baseline alternating; the
# median is reported (this machine is shared and noisy).
trials=${TRIALS:-3}
run_pair() {  # $1: setup function run before each trial
  local ps=() pm=() bs=() bm=() s m
  for _ in $(seq "$trials"); do
    $1 papersys; read -r s m _ <<<"$(measure "$bin" -q --config "$tree/papersys.toml" backlog --model "$alias")"; ps+=("$s"); pm+=("$m")
    $1 baseline; read -r s m _ <<<"$(measure "$py" bench/backlog_baseline.py --root "$tree" --alias "$alias")"; bs+=("$s"); bm+=("$m")
  done
  echo "$(printf '%s\n' "${ps[@]}" | median) $(printf '%s\n' "${pm[@]}" | sort -n | tail -1) $(printf '%s\n' "${bs[@]}" | median) $(printf '%s\n' "${bm[@]}" | sort -n | tail -1)"
}
setup_cold() { [ "$1" = papersys ] && fresh; drop; }
setup_none() { :; }
read -r p_cold m_cold b_cold bm_cold <<<"$(run_pair setup_cold)"
# Leave papersys' caches as the last cold run made them.
"$bin" -q --config "$tree/papersys.toml" backlog --model "$alias" >/dev/null 2>&1
read -r p_rep m_rep b_rep bm_rep <<<"$(run_pair setup_none)"
# One year's CSV gains 1,000 papers (copies of its last rows under new ids);
# each trial starts from the cached state of the original file.
grow() {
  cp "$newest.bench-orig" "$newest"
  if [ "$1" = papersys ]; then "$bin" -q --config "$tree/papersys.toml" backlog --model "$alias" >/dev/null 2>&1; fi
  append_papers "$py" "$newest"
}
read -r p_add m_add b_add bm_add <<<"$(run_pair grow)"
rm -f "$model_dir/backlog-baseline.parquet"

printf '\nmedian of %s trials each\n%-44s %10s %9s %12s %9s %7s\n' "$trials" situation papersys_s peak_MB baseline_s peak_MB speedup
row() { printf '%-44s %10s %9s %12s %9s %6.1fx\n' "$1" "$2" "$3" "$4" "$5" "$(awk "BEGIN{print $4/$2}")"; }
row "first refresh ($cold_label)" "$p_cold" "$m_cold" "$b_cold" "$bm_cold"
row "repeat refresh, nothing changed" "$p_rep" "$m_rep" "$b_rep" "$bm_rep"
row "after one year's CSV gained 1,000 papers" "$p_add" "$m_add" "$b_add" "$bm_add"
echo "machine load after: $(cut -d' ' -f1-3 /proc/loadavg)"
