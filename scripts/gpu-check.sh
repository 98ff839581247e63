#!/usr/bin/env bash
# The first GPU run of a paper study, ready before the first GPU: the CPU rehearsal
# (config/paper/rehearsal/, tests/hub_mirror.py) on one CUDA GPU, with no network,
# twice, and its figures in one JSON file (scripts/gpu_check.py): rollout and eval
# tokens/s, peak GPU memory per arm, and the spread between the two runs.
#
#   scripts/gpu-check.sh pack [DIR]   # where the package index is reachable, with Python 3.11: a
#                                     # wheel of every pin of environment.lock except torch, as
#                                     # DIR/wheels.tar.part-* pieces of at most 64 MiB
#                                     # (default DIR: gpu-check-wheels)
#   scripts/gpu-check.sh run [OUT]    # on the GPU machine (python3 3.11 with torch and CUDA, the
#                                     # repository with DIR in it): writes OUT (gpu-check.json)
#
# Runs: TRL training under bf16 autocast with a bf16 KL reference (the paper config's
# settings), lm-eval's hf backend on CUDA. Not run: vLLM (the rehearsal's one substitution).
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-run}
DIR=${GPU_CHECK_WHEELS:-gpu-check-wheels}
STUDY=qwen3-1.7b-grpo-scripts

no_torch_lock() {  # environment.lock without torch's block: the GPU machine brings its own
  awk '/^[^ ]/{keep = $0 !~ /^torch==/} keep' environment.lock
}

if [ "$what" = pack ]; then
  DIR=${2:-$DIR}
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  no_torch_lock > "$tmp/lock.txt"
  # wheels for this Python (the lock's 3.11), the few sdists in the lock built into wheels here
  python3 -m pip wheel --quiet --no-deps --require-hashes -r "$tmp/lock.txt" -w "$tmp/wheels"
  # pip checked every download against the lock; the packed wheels (some built here from
  # sdists, so with hashes of their own) are pinned by the hashes they have now
  (cd "$tmp/wheels" && for w in *.whl; do
     IFS=- read -r name version _ <<< "$w"
     echo "$name==$version --hash=sha256:$(sha256sum "$w" | cut -d' ' -f1)"
   done) > "$tmp/wheels/requirements.txt"
  mkdir -p "$DIR" && rm -f "$DIR"/wheels.tar.part-*
  tar -C "$tmp" -cf - wheels | split -b 64M - "$DIR/wheels.tar.part-"
  ls -l "$DIR"
  exit 0
fi

OUT=${2:-gpu-check.json}
work=$(mktemp -d)
python3 -c 'import torch; assert torch.cuda.is_available(), "no CUDA GPU"; print("torch", torch.__version__, torch.cuda.get_device_name())'
if [ ! -x .venv-gpu/bin/python ]; then  # torch from the machine, the rest from the packed wheels
  python3 -m venv --system-site-packages .venv-gpu
  cat "$DIR"/wheels.tar.part-* | tar -C "$work" -xf -
  .venv-gpu/bin/python -m pip install --quiet --no-index --no-deps --require-hashes --find-links "$work/wheels" \
    -r "$work/wheels/requirements.txt"
  .venv-gpu/bin/python -m pip install --quiet --no-index --no-deps --no-build-isolation -e .
fi
export HF_HOME="$work/hf-home" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv-gpu/bin/python tests/hub_mirror.py "$HF_HOME"
for run in a b; do
  mkdir -p "$work/$run"
  for name in config benchmarks containers environment.lock; do ln -s "$PWD/$name" "$work/$run/$name"; done
  .venv-gpu/bin/python -m snakemake -s "$PWD/Snakefile" --directory "$work/$run" --cores 8 --resources gpu=1 \
    --configfile "config/paper/$STUDY.yaml" config/paper/rehearsal/common.yaml \
    "config/paper/rehearsal/$STUDY.yaml" config/paper/rehearsal/gpu.yaml > "$work/$run.log" 2>&1 \
    || { tail -50 "$work/$run.log"; exit 1; }
done
.venv-gpu/bin/python scripts/gpu_check.py "$work/a/results/$STUDY" "$work/b/results/$STUDY" > "$OUT"
cat "$OUT"
