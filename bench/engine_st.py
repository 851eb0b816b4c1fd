"""sentence-transformers side of bench/engine.sh: texts/s on a texts
file (JSONL, {"text": ...} per line) with PyTorch on the CPU, as JSON.

    python bench/engine_st.py --model DIR --texts F --threads 2 --batch-size 32 --runs 1
    python bench/engine_st.py --gemm --threads 2     # torch fp32 GEMM rate at the model's shape
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--texts")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=64)
    ap.add_argument("--max-seq-length", type=int, default=None)
    ap.add_argument("--gemm", action="store_true")
    ap.add_argument("--gemm-shape", default="8192x384x1536", help="MxKxN of --gemm")
    ap.add_argument("--save-f32", help="write the last run's vectors here (row-major f32, input order)")
    ap.add_argument(
        "--document",
        action="store_true",
        help="encode_document (the model's document prompt, as papersys embeds papers) instead of encode",
    )
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    if args.gemm:
        m, k, n = (int(d) for d in args.gemm_shape.split("x"))
        a, b = torch.randn(m, k), torch.randn(k, n)
        torch.mm(a, b)
        best = float("inf")
        for _ in range(8):
            t = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - t)
        print(json.dumps({"engine": "torch", "threads": args.threads, "shape": [m, k, n], "gemm_gflops": 2 * m * k * n / best / 1e9}))
        return

    from sentence_transformers import SentenceTransformer

    with open(args.texts, encoding="utf-8") as fh:
        texts = [json.loads(line)["text"] for line in fh if line.strip()]
    model = SentenceTransformer(args.model, device="cpu", model_kwargs={"dtype": torch.float32})
    if args.max_seq_length:
        model.max_seq_length = args.max_seq_length
    encode = model.encode_document if args.document else model.encode
    if args.warmup:
        encode(texts[: args.warmup], batch_size=args.batch_size, show_progress_bar=False)
    times = []
    for _ in range(args.runs):
        t = time.perf_counter()
        vectors = encode(texts, batch_size=args.batch_size, show_progress_bar=False, convert_to_numpy=True)
        times.append(time.perf_counter() - t)
    if args.save_f32:
        vectors.astype("<f4").tofile(args.save_f32)
    n = len(texts)
    print(
        json.dumps(
            {
                "engine": "sentence-transformers",
                "torch": torch.__version__,
                "threads": args.threads,
                "batch_size": args.batch_size,
                "n_texts": n,
                "max_tokens": model.max_seq_length,
                "run_times_s": times,
                "texts_per_s_best": n / min(times),
                "texts_per_s_median": n / sorted(times)[len(times) // 2],
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


if __name__ == "__main__":
    main()
