"""Reference fixtures for the native engine's parity tests (backends/native/tests).

    PY=$(scripts/python-env.sh --full)
    $PY scripts/make_fixtures_native.py tiny            # tiny random BERT + XLM-R checkpoints
    $PY scripts/make_fixtures_native.py minilm [--model DIR]   # all-MiniLM-L6-v2 reference vectors

`tiny` builds two small randomly initialised checkpoints with `transformers`
(a WordPiece BERT and a Unigram XLM-RoBERTa, a few hundred KB together),
wraps them as sentence-transformers models and writes their reference
vectors. `minilm` embeds >= 200 real arXiv texts (including the awkward ones)
with sentence-transformers and all-MiniLM-L6-v2 (as installed by
scripts/fetch-model.sh). Vectors are stored as little-endian f32 rows in
`vectors.f32`; texts and token ids in `texts.jsonl`. Re-running with the same
library versions reproduces the files.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "backends" / "native" / "tests" / "fixtures"
RECORDS = REPO.parent / "shared" / "data" / "arxiv-real" / "records.jsonl"


def prepared(record: dict) -> str:
    """The pipeline's text contract: title + blank line + abstract, trimmed."""
    return (record["title"] + "\n\n" + record["abstract"]).strip()


def load_records() -> list[dict]:
    with RECORDS.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def pick_texts(records: list[dict], n: int, long_token_count=None) -> list[str]:
    """n texts: awkward ones first (non-ASCII, LaTeX, very long, hard-wrapped
    titles, a very short one), the rest a deterministic sample."""
    texts = [prepared(r) for r in records]
    chosen: list[str] = []

    def take(pred, k):
        got = 0
        for t in texts:
            if got >= k:
                break
            if t not in chosen and pred(t):
                chosen.append(t)
                got += 1

    take(lambda t: any(ord(c) > 127 for c in t), 12)
    take(lambda t: "$" in t and "\\" in t, 12)
    take(lambda t: "\n  " in t.split("\n\n")[0], 8)  # hard-wrapped title
    if long_token_count is not None:
        take(lambda t: long_token_count(t) > 300, 20)
    else:
        take(lambda t: len(t) > 1500, 20)
    take(lambda t: len(t) < 200, 4)
    # Texts no record holds but the pipeline can send.
    chosen += ["Short.", "Résumé: naïve Café — Übersicht · 東京 · Ωmega ∑ x²", "x"]
    rng = random.Random(20240501)
    rest = [t for t in texts if t not in chosen]
    rng.shuffle(rest)
    chosen += rest[: max(0, n - len(chosen))]
    return chosen[:n] if len(chosen) > n else chosen


def write_reference(out: Path, model, texts: list[str], document: bool) -> None:
    import numpy as np

    encode = model.encode_document if document else model.encode
    vectors = encode(texts, batch_size=16, convert_to_numpy=True, show_progress_bar=False)
    vectors = np.asarray(vectors, dtype="<f4")
    tok = model.tokenizer
    prompt = ""
    if document and model.prompts:
        for name in ("document", "passage", "corpus"):
            if name in model.prompts:
                prompt = model.prompts[name]
                break
    ids = tok([prompt + t for t in texts], truncation="longest_first", max_length=model.max_seq_length)["input_ids"]
    with (out / "texts.jsonl").open("w", encoding="utf-8") as fh:
        for text, token_ids in zip(texts, ids):
            fh.write(json.dumps({"text": text, "ids": token_ids}, ensure_ascii=False) + "\n")
    (out / "vectors.f32").write_bytes(vectors.tobytes())
    meta = {"rows": len(texts), "dimension": int(vectors.shape[1]), "max_seq_length": model.max_seq_length}
    (out / "reference.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"{out}: {len(texts)} texts, dimension {vectors.shape[1]}", file=sys.stderr)


def randomise(model) -> None:
    """Spreads the weights so that outputs differ clearly between texts."""
    import torch

    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=gen))


def set_tokenizer_json_limits(path: Path, length: int, pad_id: int, pad_token: str) -> None:
    """Gives tokenizer.json its own short truncation and fixed padding, as
    all-MiniLM-L6-v2's has; the engine must override both."""
    data = json.loads(path.read_text(encoding="utf-8"))
    data["truncation"] = {"direction": "Right", "max_length": length, "strategy": "LongestFirst", "stride": 0}
    data["padding"] = {
        "strategy": {"Fixed": length},
        "direction": "Right",
        "pad_to_multiple_of": None,
        "pad_id": pad_id,
        "pad_type_id": 0,
        "pad_token": pad_token,
    }
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")


def corpus(records: list[dict]) -> list[str]:
    return [prepared(r) for r in records[:1500]]


def make_tiny_bert(records: list[dict], texts: list[str]) -> None:
    import torch
    from sentence_transformers import SentenceTransformer, models
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors, trainers
    from tokenizers.models import WordPiece
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out = FIXTURES / "tiny-bert"
    shutil.rmtree(out, ignore_errors=True)
    work = out.parent / "_tiny-bert-hf"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    tok = Tokenizer(WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(corpus(records), trainers.WordPieceTrainer(vocab_size=400, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    fast = BertTokenizerFast(tokenizer_object=tok, model_max_length=512)
    fast.save_pretrained(work)

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        type_vocab_size=2,
        hidden_act="gelu",
    )
    bert = BertModel(config, add_pooling_layer=False)
    randomise(bert)
    bert.save_pretrained(work, safe_serialization=True)

    transformer = models.Transformer(str(work), max_seq_length=40)
    pooling = models.Pooling(transformer.get_word_embedding_dimension(), pooling_mode="mean")
    st = SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu")
    st.save(str(out))
    shutil.rmtree(work)
    set_tokenizer_json_limits(out / "tokenizer.json", 16, 0, "[PAD]")
    model = SentenceTransformer(str(out), device="cpu", model_kwargs={"dtype": torch.float32})
    write_reference(out, model, texts, document=False)


def make_tiny_xlmr(records: list[dict], texts: list[str]) -> None:
    import torch
    from safetensors.torch import load_file, save_file
    from sentence_transformers import SentenceTransformer, models
    from tokenizers import SentencePieceUnigramTokenizer, processors
    from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizerFast

    out = FIXTURES / "tiny-xlmr"
    shutil.rmtree(out, ignore_errors=True)
    work = out.parent / "_tiny-xlmr-hf"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    spm = SentencePieceUnigramTokenizer()
    spm.train_from_iterator(corpus(records), vocab_size=500, special_tokens=specials, unk_token="<unk>")
    spm.add_special_tokens(["<mask>"])
    backend = spm._tokenizer
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    fast = XLMRobertaTokenizerFast(tokenizer_object=backend, model_max_length=64)
    fast.save_pretrained(work)

    torch.manual_seed(1)
    config = XLMRobertaConfig(
        vocab_size=backend.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=66,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        hidden_act="gelu",
    )
    xlmr = XLMRobertaModel(config, add_pooling_layer=False)
    randomise(xlmr)
    xlmr.save_pretrained(work, safe_serialization=True)

    transformer = models.Transformer(str(work))  # max_seq_length from the model: 64
    pooling = models.Pooling(transformer.get_word_embedding_dimension(), pooling_mode="cls")
    st = SentenceTransformer(
        modules=[transformer, pooling], device="cpu", prompts={"query": "query: ", "document": "passage: "}
    )
    st.save(str(out))
    shutil.rmtree(work)
    # Stored in f16 to exercise the engine's conversion; the reference runs
    # the same rounded weights in f32.
    tensors = {k: v.half().contiguous() for k, v in load_file(out / "model.safetensors").items()}
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    set_tokenizer_json_limits(out / "tokenizer.json", 20, 1, "<pad>")
    model = SentenceTransformer(str(out), device="cpu", model_kwargs={"dtype": torch.float32})
    assert model.max_seq_length == 64, model.max_seq_length
    write_reference(out, model, texts, document=True)


def make_minilm(records: list[dict], model_dir: str) -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(2)
    model = SentenceTransformer(model_dir, device="cpu", model_kwargs={"dtype": torch.float32})
    assert model.max_seq_length == 256, model.max_seq_length
    tok = model.tokenizer

    def count(t: str) -> int:
        return len(tok(t, add_special_tokens=True, truncation=False)["input_ids"])

    texts = pick_texts(records, 220, long_token_count=count)
    out = FIXTURES / "minilm"
    out.mkdir(parents=True, exist_ok=True)
    write_reference(out, model, texts, document=True)
    over = sum(1 for t in texts if count(t) > 256)
    between = sum(1 for t in texts if 128 < count(t) <= 256)
    print(f"texts over 256 tokens: {over}; between 129 and 256: {between}", file=sys.stderr)


def default_minilm_dir() -> str:
    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface"), "hub"
    )
    repo = Path(cache) / "models--sentence-transformers--all-MiniLM-L6-v2"
    ref = (repo / "refs" / "main").read_text().strip()
    return str(repo / "snapshots" / ref)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["tiny", "minilm", "all"])
    ap.add_argument("--model", default=None, help="all-MiniLM-L6-v2 directory (default: the HF cache)")
    args = ap.parse_args()
    records = load_records()
    if args.what in ("tiny", "all"):
        # Every other text cut short, so that lengths vary below the limits.
        texts = [t if i % 2 == 0 else t[: 3 + 7 * i] for i, t in enumerate(pick_texts(records, 24))]
        make_tiny_bert(records, texts)
        make_tiny_xlmr(records, texts)
    if args.what in ("minilm", "all"):
        make_minilm(records, args.model or default_minilm_dir())


if __name__ == "__main__":
    main()
