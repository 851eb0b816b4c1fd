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

# shared_texts PYTHON N OUT: the first N shared real records
# (../shared/data/arxiv-real/records.jsonl) written to OUT as the engine
# benchmarks' texts, one JSON line {"text": title + "\n\n" + abstract} each;
# fails, saying so, when the records are missing.
shared_texts() {
  "$1" - "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" "$2" "$3" <<'PY'
import json, os, sys
repo, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
records = os.path.join(repo, "..", "shared", "data", "arxiv-real", "records.jsonl")
if not os.path.exists(records):
    sys.exit(f"{records} is missing: the shared real records are the benchmark's texts")
count = 0
with open(records, encoding="utf-8") as fh, open(out, "w", encoding="utf-8") as dst:
    for line in fh:
        if count >= n:
            break
        r = json.loads(line)
        dst.write(json.dumps({"text": (r["title"] + "\n\n" + r["abstract"]).strip()}) + "\n")
        count += 1
print(f"{count} texts", file=sys.stderr)
PY
}

# median: the median of the numbers on stdin, one a line.
median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }

# keep_original FILE: FILE may be changed from now on; on any exit it gets
# its content and modification time back (from FILE.bench-orig; a copy left
# by an earlier run that could not restore it is taken as the original).
keep_original() {
  kept_file="$1"
  if [ -f "$kept_file.bench-orig" ]; then
    echo "restoring $kept_file from an earlier run's $kept_file.bench-orig" >&2
    mv -f "$kept_file.bench-orig" "$kept_file"
  fi
  cp -p "$kept_file" "$kept_file.bench-orig"
  trap 'if [ -f "$kept_file.bench-orig" ]; then mv -f "$kept_file.bench-orig" "$kept_file"; fi' EXIT
  trap 'exit 130' INT TERM
}

# append_papers PYTHON CSV: appends 1,000 new papers to a metadata CSV
# (copies of its last rows under new ids 9999.00000...).
append_papers() {
  "$1" - "$2" <<'PY'
import csv, sys
path = sys.argv[1]
with open(path, newline="", encoding="utf-8") as fh:
    rows = list(csv.reader(fh))
with open(path, "a", newline="", encoding="utf-8") as fh:
    writer = csv.writer(fh)
    for i, row in enumerate(rows[-1000:]):
        writer.writerow(["9999." + str(i).zfill(5)] + row[1:])
PY
}
