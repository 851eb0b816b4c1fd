"""Compares vectors papersys got from a server with a reference.

Two modes:

    python scripts/compare-embeddings.py --stores DIR_A DIR_B [--min-cosine 0.999]

compares two model directories of one data tree (e.g. `embeddings/infinity_v1`
and `embeddings/native_v1`) paper by paper: every `YYYY.parquet` year file
of each is read (pyarrow + numpy), papers are matched by `paper_id`, and the
cosine of each pair is reported (min, mean, how many below --min-cosine),
plus the papers only one side has. Exits 1 when a cosine is below the bound
or the two sides hold different papers.

    python scripts/compare-embeddings.py --model-dir DIR --texts texts.jsonl \
        --vectors vectors.f32 [--dim 384] [--reference ref.npy] [--min-cosine 0.999]

texts.jsonl holds one JSON string per line (the exact texts that were sent);
vectors.f32 the row-major little-endian f32 vectors, one row per text.
The reference is computed on this machine's CPU with sentence-transformers
(and cached in --reference when given). Prints min/mean cosine and the
reference's own throughput; exits 1 when any cosine is below --min-cosine.
"""
import argparse
import json
import os
import sys
import time

import numpy as np


def read_store(directory):
    """paper_id -> vector (float64) over every year file of a model directory."""
    import pyarrow.parquet as pq
    from pathlib import Path

    vectors = {}
    files = sorted(p for p in Path(directory).glob("*.parquet") if p.stem.isdigit())
    for path in files:
        table = pq.read_table(path, columns=["paper_id", "embedding"])
        ids = table.column("paper_id").to_pylist()
        flat = table.column("embedding").combine_chunks()
        values = np.asarray(flat.values.to_numpy(zero_copy_only=False), dtype=np.float64)
        offsets = np.asarray(flat.offsets.to_numpy(zero_copy_only=False))
        for i, paper in enumerate(ids):
            vectors[paper] = values[offsets[i]:offsets[i + 1]]
    return vectors, len(files)


def compare_stores(a_dir, b_dir, min_cosine) -> int:
    a, a_files = read_store(a_dir)
    b, b_files = read_store(b_dir)
    common = sorted(set(a) & set(b))
    only_a, only_b = len(a) - len(common), len(b) - len(common)
    print(f"{a_dir}: {len(a)} papers in {a_files} year files; {b_dir}: {len(b)} papers in {b_files} year files")
    if not common:
        print("no paper in common")
        return 1
    dims = {len(a[p]) for p in common} | {len(b[p]) for p in common}
    if len(dims) != 1:
        print(f"dimensions differ: {sorted(dims)}")
        return 1
    left = np.stack([a[p] for p in common])
    right = np.stack([b[p] for p in common])

    def unit(m):
        return m / np.linalg.norm(m, axis=1, keepdims=True)

    cosine = np.sum(unit(left) * unit(right), axis=1)
    worst = int(np.argmin(cosine))
    below = int(np.sum(cosine < min_cosine))
    print(
        f"cosine over {len(common)} papers: min {cosine.min():.7f} ({common[worst]}), "
        f"mean {cosine.mean():.7f}, {below} below {min_cosine}; "
        f"largest |difference| of one component {np.abs(left - right).max():.2e}"
    )
    print(f"papers only in the first: {only_a}, only in the second: {only_b}")
    return 1 if below or only_a or only_b else 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stores", nargs=2, metavar="DIR")
    parser.add_argument("--model-dir")
    parser.add_argument("--texts")
    parser.add_argument("--vectors")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--reference")
    parser.add_argument("--min-cosine", type=float, default=0.999)
    args = parser.parse_args()
    if args.stores:
        return compare_stores(args.stores[0], args.stores[1], args.min_cosine)
    if not (args.model_dir and args.texts and args.vectors):
        parser.error("either --stores A B, or --model-dir, --texts and --vectors")

    with open(args.texts, encoding="utf-8") as f:
        texts = [json.loads(line) for line in f if line.strip()]
    served = np.fromfile(args.vectors, dtype="<f4")
    if served.size != len(texts) * args.dim:
        print(f"{args.vectors}: {served.size} floats for {len(texts)} texts of dimension {args.dim}")
        return 1
    served = served.reshape(len(texts), args.dim)

    if args.reference and os.path.exists(args.reference):
        reference = np.load(args.reference)
        print(f"reference: {args.reference} (cached)")
    else:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(args.model_dir, device="cpu")
        start = time.perf_counter()
        reference = model.encode(texts, batch_size=32, convert_to_numpy=True)
        elapsed = time.perf_counter() - start
        print(
            f"reference: sentence-transformers on CPU, {len(texts)} papers in {elapsed:.1f} s "
            f"= {len(texts) / elapsed:.1f} papers/s"
        )
        if args.reference:
            np.save(args.reference, reference)
    if reference.shape != served.shape:
        print(f"reference has shape {reference.shape}, served {served.shape}")
        return 1

    def unit(m):
        return m / np.linalg.norm(m, axis=1, keepdims=True)

    cosine = np.sum(unit(served.astype(np.float64)) * unit(reference.astype(np.float64)), axis=1)
    worst = int(np.argmin(cosine))
    below = int(np.sum(cosine < args.min_cosine))
    print(
        f"cosine(served, reference) over {len(texts)} papers: min {cosine.min():.7f} "
        f"(paper #{worst}), mean {cosine.mean():.7f}, {below} below {args.min_cosine}; "
        f"largest |difference| of one component {np.abs(served - reference).max():.2e}"
    )
    norms = np.linalg.norm(served, axis=1)
    print(f"served vector norms: min {norms.min():.4f}, max {norms.max():.4f}")
    return 1 if below else 0


if __name__ == "__main__":
    sys.exit(main())
