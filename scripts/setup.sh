#!/usr/bin/env bash
# Create or refresh .venv/ from environment.lock (hashes required), then install
# layerbench itself in editable mode. Safe to run repeatedly: it reinstalls only
# when environment.lock changed.
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
want=$(sha256sum environment.lock | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  # torch==2.13.0 in the lock carries the hashes of PyPI's CUDA wheels and of
  # the CPU wheel; without a GPU take the CPU build (no CUDA libraries needed).
  cpu_torch=()
  if ! command -v nvidia-smi >/dev/null; then
    echo "torch==2.13.0+cpu" > .venv/torch-cpu.txt
    cpu_torch=(-c .venv/torch-cpu.txt)
    find_links=$(.venv/bin/python -m pip config get global.find-links 2>/dev/null || true)
    ls "${find_links:-/nonexistent}"/torch-2.13.0+cpu-* >/dev/null 2>&1 \
      || cpu_torch+=(--extra-index-url https://download.pytorch.org/whl/cpu)
  fi
  .venv/bin/python -m pip install --quiet --require-hashes --no-deps "${cpu_torch[@]}" -r environment.lock
  .venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
  .venv/bin/python -m pip check
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
