#!/usr/bin/env bash
# Times two papersys binaries on bench/backlog.sh's third situation (the
# newest year's CSV gained 1,000 papers), alternating them trial by trial so
# that both see the same machine load. Prints wall seconds, peak MB and CPU
# seconds per trial and the medians.
#
#   bench/backlog-ab.sh BEFORE AFTER [--tree DIR] [--alias A]
#
# TRIALS (default 3) sets the number of trials. The tree must exist (see
# bench/backlog.sh); its newest CSV is restored on exit.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
before="$(realpath "${1:?usage: bench/backlog-ab.sh BEFORE AFTER [--tree DIR] [--alias A]}")"
after="$(realpath "${2:?usage: bench/backlog-ab.sh BEFORE AFTER [--tree DIR] [--alias A]}")"
shift 2
tree=/tmp/papersys-big
alias=jasper_v1
while [ $# -gt 0 ]; do
  case "$1" in
    --tree) tree="$2"; shift 2 ;;
    --alias) alias="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
cd "$repo"
source bench/lib.sh
py="$(scripts/python-env.sh)"
newest=$(ls "$tree"/metadata/metadata-*.csv | sort | tail -1)
keep_original "$newest"

echo "machine load before: $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A runs
for trial in $(seq "${TRIALS:-3}"); do
  for side in before after; do
    bin=${!side}
    # From the state this binary leaves for the original file, then the change.
    cp "$newest.bench-orig" "$newest"
    "$bin" -q --config "$tree/papersys.toml" backlog --model "$alias" >/dev/null 2>&1
    append_papers "$py" "$newest"
    result=$(measure "$bin" -q --config "$tree/papersys.toml" backlog --model "$alias")
    runs[$side]+="$result"$'\n'
    echo "trial $trial $side: $result (s peak_MB cpu_s), load $(cut -d' ' -f1 /proc/loadavg)"
  done
done
for side in before after; do
  column() { printf '%s' "${runs[$side]}" | awk -v k="$1" 'NF {print $k}' | median; }
  echo "median $side: $(column 1) s, $(column 2) MB, $(column 3) CPU s"
done
echo "machine load after: $(cut -d' ' -f1-3 /proc/loadavg)"
