#!/usr/bin/env bash
# CPU time of an OAI-PMH harvest per 1,000 records (HTTP client + XML parse
# + row rule + merge), against a loopback OAI-PMH server with
# request_interval = 0, so that nothing but papersys' own work is counted.
# Harvesting arXiv itself is bound by its 3 s rule (1,000 records a page,
# so ~0.3 s of papersys CPU per 3 s of waiting is what matters).
#
#   bench/ingest-oai.sh [--records N] [--format arXivRaw|arXiv] [--bin PATH]
#
# --records 250000 makes the daily run the merge of 1,000 records into a
# year file of 250,000 rows. --bin uses that papersys instead of building
# the release one (a debug binary for a quick check of the script).
#
# The server (Python, in this script) serves N records made from the real
# ones in ../shared/data/arxiv-real/records.jsonl (ids renumbered so that
# all are distinct; texts, wraps and entities as they are) in pages of
# 1,000, pre-rendered so that it costs papersys no waiting. Three runs into
# one fresh tree: the first harvest (every row new), the same window again
# (every row unchanged: nothing rewritten), and a daily run (1,000 records,
# 50 of them revised) onto the tree of N rows. papersys' CPU time (user +
# sys) is that of its own process, measured by /usr/bin/time.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
records=20000
format=arXivRaw
bin=""
while [ $# -gt 0 ]; do
  case "$1" in
    --records) records="$2"; shift 2 ;;
    --format) format="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

cd "$repo"
if [ -z "$bin" ]; then
  cargo build --release -q --bin papersys
  bin="$repo/target/release/papersys"
fi
real="$repo/../shared/data/arxiv-real/records.jsonl"
[ -f "$real" ] || real="$repo/../../shared/data/arxiv-real/records.jsonl"
work="$(mktemp -d)"
trap 'kill "$server_pid" 2>/dev/null || true; rm -rf "$work"' EXIT

python3 - "$real" "$records" "$format" "$work/port" <<'PY' &
import http.server, json, sys, urllib.parse, datetime, email.utils, threading
real, n, fmt, portfile = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
base = [json.loads(l) for l in open(real, encoding="utf-8")]
def esc(t):
    return t.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
def rfc(iso):
    d = datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    return email.utils.format_datetime(d, usegmt=True)
def record(i, r, revised):
    pid = "2401.%05d" % i
    published = "2024-01-%02dT10:00:00Z" % (1 + i % 28)
    updated = r["updated_at"] if r["updated_at"] > published else published
    abstract = ("Revised: " if revised else "") + r["abstract"]
    if revised:
        updated = "2024-02-01T00:00:00Z"
    head = ("<record><header><identifier>oai:arXiv.org:%s</identifier><datestamp>2024-01-02</datestamp>"
            "<setSpec>cs</setSpec></header><metadata>" % pid)
    opt = lambda tag, v: "<%s>%s</%s>" % (tag, esc(v), tag) if v else ""
    if fmt == "arXivRaw":
        versions = '<version version="v1"><date>%s</date><size>1kb</size></version>' % rfc(published)
        if updated != published:
            versions += '<version version="v2"><date>%s</date><size>1kb</size></version>' % rfc(updated)
        body = ('<arXivRaw xmlns="http://arxiv.org/OAI/arXivRaw/"><id>%s</id><submitter>x</submitter>%s'
                "<title>%s</title><authors>%s</authors><categories>%s</categories>%s%s%s%s<abstract>%s</abstract></arXivRaw>"
                % (pid, versions, esc(r["title"]), esc(r["authors"]), esc(r["categories"]), opt("comments", r["comment"]),
                   opt("journal-ref", r["journal_ref"]), opt("doi", r["doi"]), opt("license", r["license"]), esc(abstract)))
    else:
        authors = "".join("<author><keyname>%s</keyname><forenames>%s</forenames></author>"
                          % (esc(a.strip().rsplit(" ", 1)[-1]), esc(a.strip().rsplit(" ", 1)[0]))
                          for a in r["authors"].replace(" and ", ", ").split(",") if a.strip())
        upd = "<updated>%s</updated>" % updated[:10] if updated[:10] != published[:10] else ""
        body = ('<arXiv xmlns="http://arxiv.org/OAI/arXiv/"><id>%s</id><created>%s</created>%s<authors>%s</authors>'
                "<title>%s</title><categories>%s</categories>%s%s%s%s<abstract>%s</abstract></arXiv>"
                % (pid, published[:10], upd, authors, esc(r["title"]), esc(r["categories"]), opt("comments", r["comment"]),
                   opt("journal-ref", r["journal_ref"]), opt("doi", r["doi"]), opt("license", r["license"]), esc(abstract)))
    return head + body + "</metadata></record>\n"
def pages(ids, revised):
    out = []
    for start in range(0, len(ids), 1000):
        chunk = ids[start:start + 1000]
        xml = "".join(record(i, base[i % len(base)], i in revised) for i in chunk)
        more = start + 1000 < len(ids)
        token = ('<resumptionToken cursor="%d" completeListSize="%d">%s</resumptionToken>'
                 % (start, len(ids), "%d" % (len(out) + 1)) if more else
                 '<resumptionToken cursor="%d" completeListSize="%d"/>' % (start, len(ids)))
        out.append(('<?xml version="1.0" encoding="UTF-8"?>\n<OAI-PMH xmlns="http://www.openarchives.org/OAI/2.0/">'
                    "<responseDate>2024-01-03T00:00:00Z</responseDate><request>x</request><ListRecords>\n%s%s</ListRecords></OAI-PMH>\n"
                    % (xml, token)).encode())
    return out
served = {"full": pages(list(range(n)), set()),
          # A daily run: 950 new papers and 50 revisions of stored ones.
          "daily": pages(list(range(n, n + 950)) + list(range(0, 50)), set(range(0, 50)))}
mode = {"m": "full"}
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        q = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(self.path).query))
        if "mode" in q:
            mode["m"] = q["mode"]; body = b"ok"
        else:
            body = served[mode["m"]][int(q.get("resumptionToken", "0"))]
        self.send_response(200)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
open(portfile + ".part", "w").write(str(s.server_address[1]))
import os; os.rename(portfile + ".part", portfile)
s.serve_forever()
PY
server_pid=$!
for _ in $(seq 1 600); do [ -f "$work/port" ] && break; sleep 0.5; done
port="$(cat "$work/port")"
url="http://127.0.0.1:$port/oai"

cat > "$work/papersys.toml" <<EOF
[ingestion]
output_dir = "metadata"
oai_base_url = "$url"
metadata_prefix = "$format"
request_interval = 0
window_days = 7
EOF

# Runs papersys ingest; prints "records cpu_s wall_s peak_MB".
run() {
  /usr/bin/time -f "%U %S %e %M" -o "$work/time" \
    "$bin" --config "$work/papersys.toml" --json ingest --from 2024-01-01 --until 2024-01-07 > "$work/out.json"
  local got
  got="$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["records"], r["new"], r["updated"], r["unchanged"])' "$work/out.json")"
  read -r u s e m < "$work/time"
  echo "$got $(python3 -c "print(f'{$u+$s:.2f} {$e:.2f} {$m/1024:.0f}')")"
}

echo "papersys ingest ($format) against a loopback OAI-PMH server, request_interval = 0, pages of 1,000"
printf "%-38s %8s %6s %8s %10s %8s %8s %14s\n" run records new updated unchanged cpu_s wall_s "cpu_ms/1000"
report() {
  local name="$1"; shift
  read -r n new upd unch cpu wall mb <<< "$*"
  printf "%-38s %8s %6s %8s %10s %8s %8s %14s   (peak %s MB)\n" "$name" "$n" "$new" "$upd" "$unch" "$cpu" "$wall" \
    "$(python3 -c "print(f'{$cpu*1e6/$n:.0f}')")" "$mb"
}
report "first harvest (all new)" "$(run)"
report "same window again (all unchanged)" "$(run)"
python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1]+'?mode=daily').read()" "$url"
report "daily run onto $records rows" "$(run)"
