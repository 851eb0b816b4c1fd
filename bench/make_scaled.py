"""Random-weight sentence-transformers checkpoints with a real model's shapes,
for bench/engine-arch.sh on architectures whose real weights are not here.

Each one starts from a tiny parity fixture (backends/native/tests/fixtures/
tiny-*: its tokenizer, config keys and module chain) and replaces the layer
shapes by the real model's (hidden size, layers, heads, kv heads, head dim,
intermediate size, attention windows); the vocabulary stays the fixture's
(a few hundred tokens, so the embedding table is small and texts tokenise into
more tokens than with the real tokenizer). Weights are transformers' own
random initialisation, saved in sentence-transformers layout; Dense modules
of the chain get random weights of the real in/out sizes.

    python bench/make_scaled.py --arch qwen3-0.6b --out DIR
    python bench/make_scaled.py --list
"""

from __future__ import annotations

import argparse
import json
import os
import shutil

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "backends", "native", "tests", "fixtures")


def modernbert_layers(n: int, every: int) -> list[str]:
    return ["full_attention" if i % every == 0 else "sliding_attention" for i in range(n)]


def gemma_layers(n: int, pattern: int) -> list[str]:
    return ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(n)]


# name -> (fixture, config overrides, Dense chain sizes [(in, out), ...], real model id)
SCALED = {
    "qwen3-0.6b": (
        "tiny-qwen3",
        {
            "hidden_size": 1024,
            "num_hidden_layers": 28,
            "num_attention_heads": 16,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "intermediate_size": 3072,
            "max_position_embeddings": 32768,
            "max_window_layers": 28,
            "layer_types": ["full_attention"] * 28,
            "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"},
        },
        [],
        "Qwen/Qwen3-Embedding-0.6B",
    ),
    "modernbert-base": (
        "tiny-modernbert",
        {
            "hidden_size": 768,
            "num_hidden_layers": 22,
            "num_attention_heads": 12,
            "intermediate_size": 1152,
            "global_attn_every_n_layers": 3,
            "local_attention": 128,
            "max_position_embeddings": 8192,
            "attention_bias": False,
            "layer_types": modernbert_layers(22, 3),
        },
        [],
        "answerdotai/ModernBERT-base",
    ),
    "embeddinggemma-300m": (
        "tiny-gemma3-dense",
        {
            "hidden_size": 768,
            "num_hidden_layers": 24,
            "num_attention_heads": 3,
            "num_key_value_heads": 1,
            "head_dim": 256,
            "intermediate_size": 1152,
            "sliding_window": 512,
            "_sliding_window_pattern": 6,
            "query_pre_attn_scalar": 256,
            "max_position_embeddings": 2048,
            "layer_types": gemma_layers(24, 6),
        },
        [(768, 3072), (3072, 768)],
        "google/embeddinggemma-300m",
    ),
    "gte-base-en-v1.5": (
        "tiny-gte-hf",
        {
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
            "max_position_embeddings": 8192,
            "rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"},
        },
        [],
        "Alibaba-NLP/gte-base-en-v1.5",
    ),
    # The fixture's config carries both spellings, as the hub's does; both are scaled.
    "nomic-embed-text-v1.5": (
        "tiny-nomic",
        {
            "n_embd": 768,
            "hidden_size": 768,
            "n_head": 12,
            "num_attention_heads": 12,
            "n_layer": 12,
            "num_hidden_layers": 12,
            "n_inner": 3072,
            "intermediate_size": 3072,
            "n_positions": 8192,
            "max_trained_positions": 2048,
            "max_position_embeddings": 8192,
        },
        [],
        "nomic-ai/nomic-embed-text-v1.5",
    ),
}


def make(arch: str, out: str) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModel

    fixture, overrides, dense, real = SCALED[arch]
    src = os.path.join(FIXTURES, fixture)
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    with open(os.path.join(src, "config.json"), encoding="utf-8") as fh:
        config = json.load(fh)
    config.update(overrides)
    with open(os.path.join(out, "config.json"), "w", encoding="utf-8") as fh:
        json.dump(config, fh, indent=2)
    torch.manual_seed(13)
    cfg = AutoConfig.from_pretrained(out)
    model = AutoModel.from_config(cfg, dtype=torch.float32)
    model.save_pretrained(out, safe_serialization=True)
    for name in (
        "tokenizer.json",
        "tokenizer_config.json",
        "modules.json",
        "sentence_bert_config.json",
        "config_sentence_transformers.json",
    ):
        shutil.copy(os.path.join(src, name), os.path.join(out, name))
    # The fixtures cap their inputs at a few dozen tokens; the real models
    # take up to their position count.
    for name, key in (("tokenizer_config.json", "model_max_length"), ("sentence_bert_config.json", "max_seq_length")):
        path = os.path.join(out, name)
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
        doc[key] = config["max_position_embeddings"]
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2)
    with open(os.path.join(src, "modules.json"), encoding="utf-8") as fh:
        modules = json.load(fh)
    dense_left = list(dense)
    hidden = config["hidden_size"]
    for m in modules:
        if not m["path"]:
            continue
        s, d = os.path.join(src, m["path"]), os.path.join(out, m["path"])
        os.makedirs(d)
        mcfg = None
        if os.path.exists(os.path.join(s, "config.json")):
            with open(os.path.join(s, "config.json"), encoding="utf-8") as fh:
                mcfg = json.load(fh)
        if m["type"].endswith("Pooling") and mcfg is not None:
            mcfg["embedding_dimension"] = hidden
        elif m["type"].endswith("Dense") and mcfg is not None:
            fan_in, fan_out = dense_left.pop(0)
            mcfg["in_features"], mcfg["out_features"] = fan_in, fan_out
            weight = torch.randn(fan_out, fan_in) / fan_in**0.5
            tensors = {"linear.weight": weight.contiguous()}
            if mcfg.get("bias"):
                tensors["linear.bias"] = torch.zeros(fan_out)
            save_file(tensors, os.path.join(d, "model.safetensors"))
        if mcfg is not None:
            with open(os.path.join(d, "config.json"), "w", encoding="utf-8") as fh:
                json.dump(mcfg, fh, indent=4)
    if dense_left:
        raise SystemExit(f"{arch}: fixture {fixture} has fewer Dense modules than {dense}")
    params = sum(p.numel() for p in model.parameters())
    with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as fh:
        fh.write(
            f"Random weights with {real}'s layer shapes (vocabulary and tokenizer of "
            f"{fixture}); {params / 1e6:.1f}M parameters. Made by bench/make_scaled.py; "
            "for throughput only.\n"
        )
    print(f"{arch}: {params / 1e6:.1f}M parameters in {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=sorted(SCALED))
    ap.add_argument("--out")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args()
    if args.list:
        for name, (fixture, _, _, real) in SCALED.items():
            print(f"{name}\t{real}\t{fixture}")
        return
    if not args.arch or not args.out:
        ap.error("--arch and --out are required")
    make(args.arch, args.out)


if __name__ == "__main__":
    main()
