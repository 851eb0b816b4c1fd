"""Baseline for bench/ingest.sh: a snapshot import the way a polars user
would write it (read_ndjson, map to the 13 metadata columns, one CSV per
year of published_at, sorted by paper_id).

    python bench/ingest_polars.py SNAPSHOT OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl


def main() -> None:
    snapshot, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    df = pl.read_ndjson(snapshot)
    fmt = "%a, %e %b %Y %H:%M:%S GMT"
    created = pl.col("versions").list.eval(pl.element().struct.field("created"))
    rows = df.select(
        pl.col("id").alias("paper_id"),
        pl.col("title").fill_null(""),
        pl.col("abstract").fill_null(""),
        pl.col("categories").str.replace_all(" ", ";").alias("categories"),
        pl.col("categories").str.split(" ").list.first().alias("primary_category"),
        pl.col("authors").str.replace_all(r"\s+", " ").str.replace_all(r",? and |, ", ";").alias("authors"),
        created.list.first().str.strptime(pl.Datetime, fmt).dt.strftime("%Y-%m-%dT%H:%M:%SZ").alias("published_at"),
        created.list.last().str.strptime(pl.Datetime, fmt).dt.strftime("%Y-%m-%dT%H:%M:%SZ").alias("updated_at"),
        pl.col("doi").fill_null(""),
        pl.col("comments").fill_null("").alias("comment"),
        pl.col("journal-ref").fill_null("").alias("journal_ref"),
        pl.col("license").fill_null(""),
        pl.lit("polars.baseline").alias("source"),
    ).with_columns(pl.col("published_at").str.slice(0, 4).alias("year"))
    for (year,), part in rows.sort("paper_id").partition_by("year", as_dict=True).items():
        part.drop("year").write_csv(out / f"metadata-{year}.csv")


if __name__ == "__main__":
    main()
