"""Reference for `bench/backlog.sh`: the backlog refresh as the Python
original did it (polars), on the same tree, so both are timed in one run.

    python bench/backlog_baseline.py --root TREE --alias jasper_v1

Reads the paper_id column of every metadata CSV and every year file,
anti-joins, and writes the backlog Parquet the contract describes. It does
not detect stale texts (the original could not); papersys does more work.
"""
import argparse
import time
from datetime import datetime, timezone
from pathlib import Path

import polars as pl


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--alias", default="jasper_v1")
    args = ap.parse_args()
    t0 = time.perf_counter()
    root = Path(args.root)
    model_dir = root / "embeddings" / args.alias
    queued_at = datetime.now(timezone.utc).isoformat()
    frames = []
    for csv in sorted((root / "metadata").glob("metadata-*.csv")):
        year = csv.stem.split("-")[1]
        ids = pl.read_csv(csv, columns=["paper_id"], schema_overrides={"paper_id": pl.Utf8})
        ids = ids.unique(subset="paper_id", keep="last")
        year_file = model_dir / f"{year}.parquet"
        if year_file.exists():
            have = pl.read_parquet(year_file, columns=["paper_id"])
            missing = ids.join(have, on="paper_id", how="anti")
            reason = "missing_embedding"
        else:
            missing = ids
            reason = "missing_embedding_file"
        frames.append(missing.with_columns(
            pl.lit(reason).alias("missing_reason"),
            pl.lit(str(csv.relative_to(root))).alias("origin"),
            pl.lit(queued_at).alias("queued_at"),
            pl.lit(args.alias).alias("model_alias"),
            pl.lit(year).alias("year"),
        ))
    backlog = pl.concat(frames).sort(["year", "paper_id"])
    backlog.write_parquet(model_dir / "backlog-baseline.parquet")
    print(f"{len(backlog)} rows in {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
