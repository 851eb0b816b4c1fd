"""Compares vectors papersys got from a server with sentence-transformers'.

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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--texts", required=True)
    parser.add_argument("--vectors", required=True)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--reference")
    parser.add_argument("--min-cosine", type=float, default=0.999)
    args = parser.parse_args()

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
