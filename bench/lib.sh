# Helpers shared by the bench scripts: `source "$repo/bench/lib.sh"`.

# measure CMD [ARGS...]: runs CMD once and prints "seconds peak_MB cpu_s"
# (wall clock, peak resident set, user + system CPU, from /usr/bin/time).
# Its stdout goes to $MEASURE_OUT (default: discarded), its stderr to
# $MEASURE_ERR (default: a temporary file). When CMD fails its stderr is
# shown and the (sub)shell exits 1.
measure() {
  local stats out="${MEASURE_OUT:-/dev/null}" err="${MEASURE_ERR:-}" own_err=0
  stats=$(mktemp)
  if [ -z "$err" ]; then err=$(mktemp); own_err=1; fi
  if ! /usr/bin/time -o "$stats" -f '%e %M %U %S' "$@" >"$out" 2>"$err"; then
    cat "$err" >&2
    rm -f "$stats"
    if [ "$own_err" = 1 ]; then rm -f "$err"; fi
    exit 1
  fi
  awk '{printf "%.2f %.0f %.2f\n", $1, $2 / 1024, $3 + $4}' "$stats"
  rm -f "$stats"
  if [ "$own_err" = 1 ]; then rm -f "$err"; fi
}

# median: the median of the numbers on stdin, one a line.
median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
