#!/usr/bin/env bash
# The reliability suite in full, with a chosen random seed (CI runs the same
# trials with the default seed through scripts/test.sh; about a minute).
#
#   scripts/torture.sh                       # every trial below
#   PAPERSYS_TORTURE_SEED=7 scripts/torture.sh   # other random kill counts and times
#
# - tests/faults.rs with the fault-injection feature, ignored tests included:
#   SIGKILL at named points (inference, checkpoint write, year-file
#   replacement, manifest and backlog writes, promotion of a model change),
#   at the n-th point of any kind, and from outside at random times, each
#   followed by the store invariants and a rerun that must embed every paper
#   exactly once (scripts/check_readers.py reads some of the results); the
#   same with the real all-MiniLM-L6-v2; a full disk (write budget and a real
#   1 MB tmpfs), a read-only data root (tmpfs remounted ro), two runs at once,
#   files damaged between runs.
# - tests/bad_input.rs and tests/security.rs.
#
# The fault-injection feature (src/fault.rs) exists only in test builds:
# PAPERSYS_FAULT_POINT=<point>:<n> and PAPERSYS_FAULT_WRITE_LIMIT=<bytes>.
# Mount-based trials use a tmpfs as root; otherwise a read-only bind mount in a
# user namespace (`unshare -Urm`) and the write budget stand in. Where neither
# works they fail; PAPERSYS_SKIP_MOUNT_TESTS=1 skips them knowingly.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/fetch-model.sh >/dev/null
scripts/python-env.sh >/dev/null

start=$(date +%s)
cargo test --features fault-injection --locked \
  --test faults --test bad_input --test security \
  -- --include-ignored --nocapture --test-threads 2
echo "torture.sh: done in $(( $(date +%s) - start )) s"
