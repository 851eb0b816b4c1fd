#!/usr/bin/env python3
"""Builds the bundled sample data tree from the shared real arXiv records.

    python3 scripts/make-sample-data.py [--records ../shared/data/arxiv-real/records.jsonl]

Writes examples/data/metadata/metadata-{2007,2010,2025}.csv: 150, 150 and 100
real records (arXiv metadata is CC0), chosen deterministically and including
the awkward ones (hard-wrapped text, LaTeX, very short and very long
abstracts). Categories and authors become `;`-joined lists as the data
contract says; every other field is kept exactly as arXiv has it.
Standard library only.
"""
import argparse
import csv
import json
from pathlib import Path

COLUMNS = ["paper_id", "title", "abstract", "categories", "primary_category", "authors",
           "published_at", "updated_at", "doi", "comment", "journal_ref", "license", "source"]
PER_YEAR = {"2007": 150, "2010": 150, "2025": 100}
MUST_HAVE = {"0704.0156", "0704.0922", "1007.0396", "1007.0343"}  # the shortest abstracts


def main() -> None:
    here = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", default=str(here.parent / "shared/data/arxiv-real/records.jsonl"))
    ap.add_argument("--out", default=str(here / "examples/data/metadata"))
    args = ap.parse_args()
    records = [json.loads(line) for line in open(args.records, encoding="utf-8")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for year, count in PER_YEAR.items():
        of_year = sorted((r for r in records if r["published_at"][:4] == year), key=lambda r: r["paper_id"])
        chosen = [r for r in of_year if r["paper_id"] in MUST_HAVE]
        longest = max(of_year, key=lambda r: len(r["abstract"]))
        if longest not in chosen:
            chosen.append(longest)
        step = max(1, len(of_year) // count)
        for r in of_year[::step]:
            if len(chosen) >= count:
                break
            if r not in chosen:
                chosen.append(r)
        chosen.sort(key=lambda r: r["paper_id"])
        with open(out / f"metadata-{year}.csv", "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(COLUMNS)
            for r in chosen:
                categories = r["categories"].split()
                writer.writerow([
                    r["paper_id"], r["title"], r["abstract"], ";".join(categories),
                    categories[0] if categories else "", ";".join(a.strip() for a in r["authors"].split(", ")),
                    r["published_at"], r["updated_at"], r["doi"], r["comment"], r["journal_ref"],
                    r["license"], "arxiv",
                ])
        print(f"metadata-{year}.csv: {len(chosen)} papers")


if __name__ == "__main__":
    main()
