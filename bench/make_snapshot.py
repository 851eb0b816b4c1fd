"""Writes a file in the format of Kaggle's arxiv-metadata-oai-snapshot.json
(one JSON object per line) from the real records of
../shared/data/arxiv-real/records.jsonl, scaled to --records lines.

    python bench/make_snapshot.py --records 2800000 --out /tmp/snapshot.json

Copy k of a real record keeps its text (title, abstract, authors, comments,
...) and gets a new id and dates in a year drawn from arXiv's per-year
submission curve (same curve as ../shared/bench/make_big.py), so the year
files come out in realistic proportions. Versions are RFC 2822 dates as in
the snapshot; `authors_parsed` is a plain split, as bulky as Kaggle's.
"""

from __future__ import annotations

import argparse
import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

ARXIV_K = {
    1991: 0.3, 1992: 3, 1993: 7, 1994: 10, 1995: 13, 1996: 16, 1997: 19, 1998: 24, 1999: 27,
    2000: 30, 2001: 32, 2002: 35, 2003: 38, 2004: 43, 2005: 46, 2006: 50, 2007: 55, 2008: 59,
    2009: 63, 2010: 70, 2011: 76, 2012: 84, 2013: 92, 2014: 97, 2015: 105, 2016: 113,
    2017: 124, 2018: 141, 2019: 155, 2020: 178, 2021: 181, 2022: 186, 2023: 208, 2024: 241,
    2025: 270,
}

# Old-style ids number 001-999 per archive and month.
OLD_ARCHIVES = ["hep-th", "math", "astro-ph", "cond-mat", "quant-ph", "gr-qc", "hep-ph", "nucl-th",
                "physics", "cs", "hep-ex", "math-ph", "nlin", "q-bio", "hep-lat", "nucl-ex"] * 4


def rfc2822(t: datetime) -> str:
    return t.strftime("%a, ") + str(t.day) + t.strftime(" %b %Y %H:%M:%S GMT")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=2_800_000)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--year", type=int, help="put every record in this year (a year file of a given size)")
    ap.add_argument("--first-number", type=int, default=0, help="numbers of the ids start after this (distinct batches)")
    args = ap.parse_args()
    repo = Path(__file__).resolve().parents[1]
    candidates = [repo.parent / "shared", repo.parent.parent / "shared"]
    src = next((c / "data/arxiv-real/records.jsonl" for c in candidates if (c / "data/arxiv-real/records.jsonl").is_file()), None)
    if src is None:
        raise SystemExit("../shared/data/arxiv-real/records.jsonl not found beside the repository")
    real = [json.loads(line) for line in src.read_text().splitlines()]
    rng = random.Random(args.seed)
    years = list(ARXIV_K)
    weights = [ARXIV_K[y] for y in years]
    per_month: dict[tuple[int, int], int] = {}
    with open(args.out, "w", encoding="utf-8") as out:
        for k in range(args.records):
            r = real[k % len(real)]
            year = args.year or rng.choices(years, weights)[0]
            month = rng.randint(1, 12)
            n = per_month.get((year, month), args.first_number) + 1
            per_month[(year, month)] = n
            if year < 2007:
                archive = OLD_ARCHIVES[(n - 1) // 999]
                pid = f"{archive}/{year % 100:02d}{month:02d}{(n - 1) % 999 + 1:03d}"
            else:
                pid = f"{year % 100:02d}{month:02d}.{n:05d}"
            v1 = datetime(year, month, rng.randint(1, 28), rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59), tzinfo=timezone.utc)
            versions = [{"version": "v1", "created": rfc2822(v1)}]
            last = v1
            for v in range(rng.choice([0, 0, 1, 2])):
                last = last + timedelta(days=rng.randint(1, 300), seconds=rng.randint(0, 86399))
                versions.append({"version": f"v{v + 2}", "created": rfc2822(last)})
            names = [a.strip() for a in r["authors"].replace(" and ", ",").split(",") if a.strip()]
            line = {
                "id": pid,
                "submitter": names[0] if names else None,
                "authors": r["authors"],
                "title": r["title"],
                "comments": r["comment"] or None,
                "journal-ref": r["journal_ref"] or None,
                "doi": r["doi"] or None,
                "report-no": None,
                "categories": r["categories"],
                "license": r["license"] or None,
                "abstract": r["abstract"],
                "versions": versions,
                "update_date": last.strftime("%Y-%m-%d"),
                "authors_parsed": [[n.split(" ")[-1], " ".join(n.split(" ")[:-1]), ""] for n in names],
            }
            out.write(json.dumps(line, ensure_ascii=False))
            out.write("\n")


if __name__ == "__main__":
    main()
