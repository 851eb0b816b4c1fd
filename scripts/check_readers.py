#!/usr/bin/env python3
"""Checks that a papersys model directory reads in pyarrow, polars and duckdb-
style Python with exactly the contract's types.

    python scripts/check_readers.py DATA_ROOT ALIAS [--expect-vectors VECTORS.json]

Exits non-zero with a message on the first mismatch. VECTORS.json (optional)
maps paper_id -> list of floats the year files must hold exactly.
"""
import argparse
import json
import sys
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

YEAR_SCHEMA = [
    ("paper_id", pa.string()),
    ("embedding", pa.list_(pa.float32())),
    ("generated_at", pa.string()),
    ("model_dim", pa.uint32()),
    ("source", pa.string()),
]
BACKLOG_SCHEMA = [(name, pa.string()) for name in
                  ["paper_id", "missing_reason", "origin", "queued_at", "model_alias", "year"]]


def fail(message: str) -> None:
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def check_schema(path: Path, expected) -> pa.Table:
    table = pq.read_table(path)
    got = [(f.name, f.type) for f in table.schema][: len(expected)]
    for (name, typ), (got_name, got_type) in zip(expected, got):
        # A list's item field may be called "item" or "element"; only the value type matters.
        if name != got_name or not (got_type == typ or (pa.types.is_list(typ) and pa.types.is_list(got_type)
                                                         and got_type.value_type == typ.value_type)):
            fail(f"{path}: column {name}: expected {typ}, found {got_name}: {got_type}")
    if len(got) < len(expected):
        fail(f"{path}: expected columns {[n for n, _ in expected]}, found {table.schema.names}")
    return table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("alias")
    ap.add_argument("--expect-vectors")
    args = ap.parse_args()
    model_dir = Path(args.root) / "embeddings" / args.alias
    manifest = json.loads((model_dir / "manifest.json").read_text())
    year_files = sorted(model_dir.glob("*.parquet"))
    year_files = [p for p in year_files if p.stem.isdigit()]
    if sorted(manifest["files"]) != [p.name for p in year_files]:
        fail(f"manifest files {manifest['files']} != on disk {[p.name for p in year_files]}")
    total = 0
    vectors = {}
    for path in year_files:
        table = check_schema(path, YEAR_SCHEMA)
        ids = table.column("paper_id").to_pylist()
        if ids != sorted(ids) or len(set(ids)) != len(ids):
            fail(f"{path}: paper_id not sorted and unique")
        dims = set(table.column("model_dim").to_pylist())
        if dims != {manifest["dimension"]}:
            fail(f"{path}: model_dim {dims} != manifest dimension {manifest['dimension']}")
        if manifest["years"][path.stem] != table.num_rows:
            fail(f"{path}: manifest says {manifest['years'][path.stem]} rows, file has {table.num_rows}")
        frame = pl.read_parquet(path)
        if frame.schema["embedding"] != pl.List(pl.Float32) or frame.schema["paper_id"] != pl.String:
            fail(f"{path}: polars sees {frame.schema}")
        for pid, vec in zip(ids, table.column("embedding").to_pylist()):
            vectors[pid] = vec
        total += table.num_rows
    if manifest["total_rows"] != total:
        fail(f"manifest total_rows {manifest['total_rows']} != {total}")
    backlog = model_dir / "backlog.parquet"
    if backlog.exists():
        table = check_schema(backlog, BACKLOG_SCHEMA)
        if set(table.column("model_alias").to_pylist()) != {args.alias}:
            fail("backlog model_alias column is wrong")
        pl.read_parquet(backlog)
    if args.expect_vectors:
        expected = json.loads(Path(args.expect_vectors).read_text())
        for pid, vec in expected.items():
            if pid not in vectors:
                fail(f"paper {pid} has no vector")
            if [float(x) for x in vec] != [float(x) for x in vectors[pid]]:
                fail(f"paper {pid}: stored vector differs from the expected one")
    print(f"ok: {len(year_files)} year files, {total} vectors, backlog {'present' if backlog.exists() else 'absent'}")


if __name__ == "__main__":
    main()
