"""Refits a papersys recommendation run with scikit-learn and compares.

    python scripts/check_recommend_sklearn.py RUN_DIR EMBEDDINGS_ROOT ALIAS[,ALIAS...] C MAX_ITER

Reads RUN_DIR/training.parquet (paper_id, label) and the vectors of each
alias (embeddings/<alias>/*.parquet, concatenated in order), fits
LogisticRegression(C, class_weight="balanced", max_iter) as the Python
original does, scores RUN_DIR/predictions.parquet's ids and prints one JSON
line: the Spearman rank correlation with papersys' scores, the largest
absolute score difference, and whether the top 10 are the same papers.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression


def vectors(root: Path, alias: str) -> dict:
    out = {}
    for path in sorted((root / alias).glob("[0-9][0-9][0-9][0-9].parquet")):
        table = pq.read_table(path, columns=["paper_id", "embedding"])
        for pid, vec in zip(table.column("paper_id").to_pylist(), table.column("embedding").to_pylist()):
            out[pid] = np.asarray(vec, dtype=np.float32)
    return out


def main() -> None:
    run_dir, root, aliases, c, max_iter = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split(","), float(sys.argv[4]), int(sys.argv[5])
    stores = [vectors(root, a) for a in aliases]

    def features(ids):
        return np.vstack([np.hstack([s[i] for s in stores]) for i in ids])

    training = pq.read_table(run_dir / "training.parquet").to_pydict()
    x = features(training["paper_id"])
    y = np.asarray(training["label"])
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=max_iter)
    model.fit(x, y)

    predictions = pq.read_table(run_dir / "predictions.parquet").to_pydict()
    ours = np.asarray(predictions["score"])
    theirs = model.predict_proba(features(predictions["id"]))[:, 1]
    rho = spearmanr(ours, theirs).correlation
    top = lambda s: set(np.asarray(predictions["id"])[np.argsort(-s, kind="stable")[:10]].tolist())
    print(json.dumps({
        "spearman": float(rho),
        "max_abs_diff": float(np.max(np.abs(ours - theirs))),
        "same_top10": top(ours) == top(theirs),
        "n_train": int(len(y)),
        "n_scored": int(len(ours)),
    }))


if __name__ == "__main__":
    main()
