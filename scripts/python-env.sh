#!/usr/bin/env bash
# Creates the repo's Python environment, used only by tests and tools that
# compare papersys with the Python stack. papersys itself needs no Python.
#
#   scripts/python-env.sh            # pyarrow + polars + numpy (the test suite's readers), scikit-learn (the recommender's reference)
#   scripts/python-env.sh --full     # also sentence-transformers + torch (fixtures, benchmarks)
#
# The venv lives in $PAPERSYS_VENV (default: .venv in the repo); prints its python.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${PAPERSYS_VENV:-$repo/.venv}"
full=0
[ "${1:-}" = "--full" ] && full=1

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
py="$venv/bin/python"
need=()
"$py" -c 'import pyarrow, polars, numpy, sklearn, scipy' 2>/dev/null || need+=(pyarrow polars numpy scikit-learn scipy)
if [ "$full" = 1 ]; then
  "$py" -c 'import sentence_transformers, torch, transformers' 2>/dev/null || need+=(torch sentence-transformers transformers)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing into $venv: ${need[*]}" >&2
  "$py" -m pip install -q "${need[@]}" >&2
fi
echo "$py"
