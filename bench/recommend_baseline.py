"""The Python original's recommend stage, for bench/recommend.sh.

    python bench/recommend_baseline.py DATA_ROOT ALIAS FROM UNTIL OUT_DIR

Does what PaperDigestMono's papersys/recommend/{data,trainer,predictor}.py
do, with its defaults: scan every metadata CSV and every year file of the
alias with polars, join them on the id, keep the configured categories,
valid vectors and years >= background_start_year, join the preferences,
sample 5x the likes as background negatives, fit scikit-learn's
LogisticRegression(C=1, class_weight="balanced", max_iter=1000), score the
papers dated FROM..UNTIL and pick them with the adaptive sampling; writes
predictions.parquet and recommended.parquet into OUT_DIR. Reads papersys'
preference events (paper_id, preference) in place of the original's files.
"""

import sys
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.linear_model import LogisticRegression

CATEGORIES = ["cs.CL", "cs.CV", "cs.AI", "cs.LG", "stat.ML", "cs.IR", "cs.CY"]
BACKGROUND_START_YEAR = 2024
SEED = 42
BG_SAMPLE_RATE = 5.0


def load_preferences(root: Path) -> pl.DataFrame:
    frames = [
        pl.read_csv(p, schema_overrides={"paper_id": pl.String, "preference": pl.String, "recorded_at": pl.String})
        for p in sorted((root / "preferences").glob("events-*.csv"))
    ]
    prefs = pl.concat(frames).rename({"paper_id": "id"})
    return prefs.sort("recorded_at").unique(subset="id", keep="last").select(["id", "preference"])


def load_candidates(root: Path, alias: str) -> pl.DataFrame:
    scans = [
        pl.scan_csv(
            str(p),
            schema_overrides={
                "paper_id": pl.String,
                "title": pl.String,
                "abstract": pl.String,
                "categories": pl.String,
                "updated_at": pl.String,
            },
        )
        for p in sorted((root / "metadata").glob("metadata-*.csv"))
    ]
    metadata = (
        pl.concat(scans, how="vertical")
        .with_columns(
            pl.col("paper_id").alias("id"),
            pl.col("title").fill_null(""),
            pl.col("abstract").fill_null(""),
            pl.col("categories").fill_null("").str.split(";").list.eval(pl.element().str.strip_chars()),
            pl.col("updated_at").fill_null("").alias("updated"),
        )
        .select(["id", "title", "abstract", "categories", "updated"])
        .unique(subset="id")
    )
    files = sorted(str(p) for p in (root / "embeddings" / alias).glob("[0-9][0-9][0-9][0-9].parquet"))
    vectors = pl.scan_parquet(files).select(pl.col("paper_id").alias("id"), pl.col("embedding").alias(alias))
    frame = metadata.join(vectors, on="id", how="inner").unique(subset="id")
    condition = pl.col("categories").list.contains(pl.lit(CATEGORIES[0]))
    for category in CATEGORIES[1:]:
        condition = condition | pl.col("categories").list.contains(pl.lit(category))
    frame = frame.filter(condition)
    col = pl.col(alias)
    frame = frame.filter(
        ~(col.is_null() | col.list.eval(pl.element().is_null()).list.any() | col.list.eval(~pl.element().is_finite()).list.any())
    )
    frame = (
        frame.with_columns(pl.col("updated").str.slice(0, 4).cast(pl.Int32, strict=False).alias("__year__"))
        .filter(pl.col("__year__") >= BACKGROUND_START_YEAR)
        .drop("__year__")
    )
    return frame.collect()


def stack(frame: pl.DataFrame, alias: str) -> np.ndarray:
    return np.vstack([np.asarray(v, dtype=np.float32) for v in frame[alias].to_list()])


def adaptive_sample(scores, rate, high, boundary, seed):
    rng = np.random.default_rng(seed)
    n = scores.size
    target = max(1, int(n * rate))
    flags = np.zeros(n, dtype=bool)
    hi = np.where(scores >= high)[0]
    if hi.size >= target:
        flags[rng.choice(hi, target, replace=False)] = True
        return flags
    flags[hi] = True
    remaining = target - hi.size
    band = np.where((scores >= boundary) & (scores < high))[0]
    if band.size > 0 and remaining > 0:
        w = np.clip(scores[band] - boundary, 0, None)
        w = np.ones_like(w) if w.sum() == 0 else w
        k = min(remaining, band.size, int(np.count_nonzero(w)))
        flags[rng.choice(band, k, replace=False, p=w / w.sum())] = True
        remaining -= k
    if remaining > 0:
        low = np.where(~flags)[0]
        flags[rng.choice(low, min(remaining, low.size), replace=False)] = True
    return flags


def main() -> None:
    root, alias, start, end, out = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], Path(sys.argv[5])
    prefs = load_preferences(root)
    candidates = load_candidates(root, alias)
    preferred = candidates.join(prefs, on="id", how="inner")
    background = candidates.filter(~pl.col("id").is_in(prefs["id"].to_list()))
    positives = preferred.filter(pl.col("preference") == "like")
    target = max(1, int(BG_SAMPLE_RATE * positives.height))
    negatives = background if background.height <= target else background.sample(n=target, seed=SEED)
    x = np.vstack([stack(positives, alias), stack(negatives, alias)])
    y = np.concatenate([np.ones(positives.height), np.zeros(negatives.height)])
    model = LogisticRegression(C=1.0, max_iter=1000, random_state=SEED, class_weight="balanced").fit(x, y)
    window = background.filter((pl.col("updated").str.slice(0, 10) >= start) & (pl.col("updated").str.slice(0, 10) <= end))
    scores = model.predict_proba(stack(window, alias))[:, 1]
    scored = window.with_columns(pl.Series("score", scores))
    flags = adaptive_sample(scores, 0.001, 0.85, 0.6, SEED)
    scored = scored.with_columns(pl.Series("show", flags.astype(np.int8)))
    out.mkdir(parents=True, exist_ok=True)
    scored.write_parquet(out / "predictions.parquet")
    scored.filter(pl.col("show") == 1).drop(alias).write_parquet(out / "recommended.parquet")
    print(f"baseline: {positives.height} likes, {negatives.height} negatives, {scored.height} scored", file=sys.stderr)


if __name__ == "__main__":
    main()
