"""Pinned study images: named by content, built once, recorded.

The image is the environment: ``environment.lock`` (plus ``containers/gpu.lock``
for the CUDA flavour) installed with hashes on a digest-pinned base. Its tag
is a hash of the Dockerfile, the locks, the torch flavour and the base, so
``build_image`` builds only when one of those changed and otherwise just
records the existing image. Study jobs run the working tree's code inside it
(``PYTHONPATH`` points at the mounted ``src/``): editing code does not
rebuild the image, and provenance records the git commit of what ran.

``plan()`` is what ``workflow/rules/container.smk`` reads: the image a study
needs for its ``runtime`` (none, docker, apptainer), the files the build rule
writes and the command study jobs use instead of the host's Python.

Nothing here imports torch; ``verify`` runs inside the image at build time.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from layerbench.runtime.io import sha256_file

DOCKERFILE = Path("containers") / "Dockerfile"
LOCK = Path("environment.lock")
REPOSITORY = "layerbench"
FLAVOURS = ("cuda", "cpu")
RUNTIMES = ("none", "docker", "apptainer")
# Packages a venv holds besides the lock's pins.
UNPINNED_OK = {"layerbench"}

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._\-]*)==(\S+)", re.M)
_OVERRIDE = re.compile(r"^# override: ([A-Za-z0-9][A-Za-z0-9._\-]*)(?:\[[^\]]*\])?==(\S+)", re.M)
_CHECK = re.compile(r"^(\S+) (\S+) has requirement (.+), but you have (\S+) (\S+)\.$")


def normalize(name: str) -> str:
    """PEP 503 name: what pip and importlib.metadata agree on."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins(path: Path | str) -> dict[str, str]:
    """``{name: version}`` of every ``name==version`` entry of a lock file."""
    return {normalize(n): v for n, v in _PIN.findall(Path(path).read_text())}


def lock_overrides(path: Path | str) -> dict[str, str]:
    """Pins a lock declares as held against a dependency's stated bounds
    (``# override: name==version`` header lines, see scripts/lock_containers.sh)."""
    return {normalize(n): v for n, v in _OVERRIDE.findall(Path(path).read_text())}


def container_locks(dockerfile: Path | str) -> list[Path]:
    """The locks that live next to the Dockerfile (gpu.lock, bootstrap.lock)."""
    return sorted(Path(dockerfile).parent.glob("*.lock"))


def default_base_image(dockerfile: Path | str) -> str | None:
    """The ``ARG BASE_IMAGE=`` default of a Dockerfile."""
    match = re.search(r"^ARG BASE_IMAGE=(\S+)", Path(dockerfile).read_text(), re.M)
    return match.group(1) if match else None


def image_tag(dockerfile: Path | str, lock: Path | str, *, torch_flavour: str = "cuda",
              base_image: str | None = None) -> str:
    """``<flavour>-<12 hex>``: a hash of what decides the image's content:
    the Dockerfile, environment.lock, the locks next to the Dockerfile, the
    torch flavour and the base image (None: the Dockerfile's default)."""
    if torch_flavour not in FLAVOURS:
        raise ValueError(f"torch_flavour must be one of {FLAVOURS}, not {torch_flavour!r}")
    h = hashlib.sha256(b"layerbench-image-v1\n")
    for path in (Path(dockerfile), Path(lock), *container_locks(dockerfile)):
        h.update(f"{path.name}\n".encode())
        h.update(bytes.fromhex(sha256_file(path)))
    h.update(f"flavour={torch_flavour}\nbase={base_image or default_base_image(dockerfile)}\n".encode())
    return f"{torch_flavour}-{h.hexdigest()[:12]}"


def _git_revision(root: Path) -> str:
    def git(*args):
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return "unknown"
    return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def _stage_context(dest: Path, root: Path, lock: Path, dockerfile: Path, wheels: Path | None,
                   ca_bundle: Path | None) -> None:
    """The build context: only what the image needs (never results/ or .venv/)."""
    (dest / "locks").mkdir(parents=True)
    shutil.copy2(lock, dest / "locks" / "environment.lock")
    for extra in container_locks(dockerfile):
        shutil.copy2(extra, dest / "locks" / extra.name)
    project = dest / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (root / name).exists():
            shutil.copy2(root / name, project / name)
    shutil.copytree(root / "src", project / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    (dest / "wheels").mkdir()
    if wheels is not None:
        for wheel in sorted(Path(wheels).glob("*.whl")):
            shutil.copy2(wheel, dest / "wheels" / wheel.name)
    # Extra CA trust for pip during the build only (TLS-intercepting proxies);
    # an empty file means none. Not installed into the image's trust store.
    (dest / "build-ca.pem").write_bytes(Path(ca_bundle).read_bytes() if ca_bundle else b"")


def _inspect(engine: str, image: str) -> dict | None:
    out = subprocess.run([engine, "image", "inspect", image], capture_output=True, text=True)
    if out.returncode != 0:
        return None
    return json.loads(out.stdout)[0]


def build_image(dockerfile: Path, lock: Path, out_json: Path, base_image: str | None, torch_flavour: str,
                engine: str = "docker", *, wheels: Path | None = None, ca_bundle: Path | None = None) -> dict:
    """Build ``layerbench:<image_tag>`` unless it exists, then write its record
    (id, digest, labels, hashes) to ``out_json`` and return it.

    ``base_image`` None uses the Dockerfile's digest-pinned default.
    ``wheels``: a folder of wheels pip may take from (``--find-links``), e.g.
    the CPU torch wheel. ``ca_bundle``: a PEM bundle pip trusts during the
    build; default ``$LAYERBENCH_BUILD_CA``, else ``$PIP_CERT`` (the host's own
    pip trust), else none.
    """
    from layerbench.runtime.io import atomic_write_json

    dockerfile, lock = Path(dockerfile), Path(lock)
    root = lock.resolve().parent
    if ca_bundle is None:
        ca_bundle = os.environ.get("LAYERBENCH_BUILD_CA") or os.environ.get("PIP_CERT") or None
    tag = image_tag(dockerfile, lock, torch_flavour=torch_flavour, base_image=base_image)
    image = f"{REPOSITORY}:{tag}"
    started = time.monotonic()
    info = _inspect(engine, image)
    built = info is None
    if built:
        with tempfile.TemporaryDirectory(prefix="layerbench-build-") as ctx:
            _stage_context(Path(ctx), root, lock, dockerfile, wheels, Path(ca_bundle) if ca_bundle else None)
            args = {"TORCH_FLAVOUR": torch_flavour, "IMAGE_NAME": image, "LOCK_SHA256": sha256_file(lock),
                    "GIT_COMMIT": _git_revision(root)}
            if base_image:
                args["BASE_IMAGE"] = base_image
            cmd = [engine, "build", "--network", "host", "-f", str(dockerfile.resolve()), "-t", image]
            for key, value in args.items():
                cmd += ["--build-arg", f"{key}={value}"]
            subprocess.run([*cmd, ctx], check=True)
        info = _inspect(engine, image)
        if info is None:
            raise RuntimeError(f"{engine} build finished but {image} is not there")
    labels = (info.get("Config") or {}).get("Labels") or {}
    repo_digests = info.get("RepoDigests") or []
    record = {
        "image": image,
        "tag": tag,
        "engine": engine,
        "image_id": info["Id"],
        "digest": repo_digests[0] if repo_digests else None,
        "repo_digests": repo_digests,
        "created": info.get("Created"),
        "size_bytes": info.get("Size"),
        "built": built,
        "build_seconds": round(time.monotonic() - started, 1) if built else None,
        "torch_flavour": torch_flavour,
        "base_image": base_image or default_base_image(dockerfile),
        "dockerfile_sha256": sha256_file(dockerfile),
        "environment_lock_sha256": sha256_file(lock),
        "container_locks_sha256": {p.name: sha256_file(p) for p in container_locks(dockerfile)},
        "labels": labels,
    }
    atomic_write_json(out_json, record)
    return record


def docker_prefix(image: str, *, gpus: str | None = "all", engine: str = "docker", workdir: str = "/work",
                  network: str | None = "host") -> str:
    """The shell prefix that runs a study command in ``image``: the working
    tree mounted at ``workdir`` as the caller's user, its ``src/`` first on
    the path, the image id exported for provenance, the job's GPU slot
    (CUDA_VISIBLE_DEVICES) passed through. ``gpus`` None for a CPU
    image; ``network`` host so a local MLflow server stays reachable."""
    ref = shlex.quote(image)
    parts = [engine, "run", "--rm"]
    if gpus:
        parts += ["--gpus", gpus, "--ipc", "host"]
    if network:
        parts += ["--network", network]
    parts += ["-u", "$(id -u):$(id -g)", "-v", f'"$PWD":{workdir}', "-w", workdir,
              "-e", f"PYTHONPATH={workdir}/src",
              "-e", f"LAYERBENCH_IMAGE_ID=$({engine} images --no-trunc --quiet {ref})",
              "-e", "MLFLOW_TRACKING_URI",
              "-e", "CUDA_VISIBLE_DEVICES",  # the GPU slot layerbench.runtime.gpuslots gave this job
              ref]
    return " ".join(parts)


@dataclass(frozen=True)
class Plan:
    """What a study's ``runtime`` asks of the DAG (see workflow/rules/container.smk)."""

    runtime: str
    dockerfile: Path
    lock: Path
    torch_flavour: str
    base_image: str | None
    engine: str
    wheels: Path | None
    out_dir: Path

    @property
    def tag(self) -> str:
        return image_tag(self.dockerfile, self.lock, torch_flavour=self.torch_flavour, base_image=self.base_image)

    @property
    def image(self) -> str:
        return f"{REPOSITORY}:{self.tag}"

    @property
    def image_json(self) -> Path:
        return self.out_dir / f"{self.tag}.json"

    @property
    def sif(self) -> Path:
        return self.out_dir / f"{self.tag}.sif"

    @property
    def inputs(self) -> list[str]:
        """What every study job waits for: nothing, the image, or the .sif."""
        return {"none": [], "docker": [str(self.image_json)], "apptainer": [str(self.sif)]}[self.runtime]

    @property
    def apptainer_image(self) -> str:
        """The rules' ``container:`` image: the .sif that ``--sdm apptainer`` runs
        (runtime apptainer), else the study image it would be built from. It
        documents each rule's software; only ``--sdm apptainer`` uses it."""
        return str(self.sif) if self.runtime == "apptainer" else f"docker-daemon://{self.image}"

    def build_command(self, python: str = sys.executable) -> str:
        """Shell command of the build rule (``{output}``/``{log}`` left to Snakemake)."""
        cmd = [python, "-m", "layerbench.runtime.containers", "build", "--dockerfile", str(self.dockerfile),
               "--lock", str(self.lock), "--torch-flavour", self.torch_flavour, "--engine", self.engine]
        if self.base_image:
            cmd += ["--base-image", self.base_image]
        if self.wheels:
            cmd += ["--wheels", str(self.wheels)]
        return " ".join(shlex.quote(c) for c in cmd)

    def job_command(self, host_python: str = sys.executable, module: str = "-m layerbench") -> str:
        """The command study rules run instead of ``python -m layerbench``
        (``module``: what the interpreter runs, e.g. a launcher of it)."""
        if self.runtime == "docker":
            gpus = "all" if self.torch_flavour == "cuda" else None
            return docker_prefix(self.image, gpus=gpus, engine=self.engine) + f" python {module}"
        if self.runtime == "apptainer":
            # Snakemake (--sdm apptainer) wraps the command in `apptainer exec
            # --home $PWD ... sh -c`; the image's env sets LAYERBENCH_IMAGE.
            image_id = f"$(sed -n 's/.*\"image_id\": \"\\(.*\\)\".*/\\1/p' {shlex.quote(str(self.image_json))})"
            return f'LAYERBENCH_IMAGE_ID={image_id} PYTHONPATH="$PWD/src" /opt/venv/bin/python {module}'
        return f"{host_python} {module}"


def plan(runtime: str, root: Path | str = ".", environ: dict | None = None, repo: Path | str | None = None) -> Plan:
    """The container plan for a study. Build settings come from the
    environment (the study schema has only ``runtime``):
    LAYERBENCH_TORCH_FLAVOUR (cuda|cpu, default cuda), LAYERBENCH_BASE_IMAGE
    (default: the Dockerfile's pinned CUDA base), LAYERBENCH_WHEELS (a wheel
    folder for pip), LAYERBENCH_CONTAINER_ENGINE (default docker). The
    Dockerfile and locks are read from ``repo`` (the workflow's folder), the
    image record is written under ``root`` (the study's working folder)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, not {runtime!r}")
    env = os.environ if environ is None else environ
    root = Path(root)
    flavour = env.get("LAYERBENCH_TORCH_FLAVOUR") or "cuda"
    if flavour not in FLAVOURS:
        raise ValueError(f"LAYERBENCH_TORCH_FLAVOUR must be one of {FLAVOURS}, not {flavour!r}")
    wheels = env.get("LAYERBENCH_WHEELS")
    repo = Path(repo) if repo is not None else root
    return Plan(runtime=runtime, dockerfile=repo / DOCKERFILE, lock=repo / LOCK, torch_flavour=flavour,
                base_image=env.get("LAYERBENCH_BASE_IMAGE") or None,
                engine=env.get("LAYERBENCH_CONTAINER_ENGINE") or "docker",
                wheels=Path(wheels) if wheels else None, out_dir=root / "results" / "containers")


def verify_installed(locks: list[Path], torch_flavour: str) -> list[str]:
    """Problems with the running environment against ``locks``: a pinned
    package missing or at another version, a package no lock pins, the wrong
    torch build, or a ``pip check`` complaint other than the overrides the
    locks declare. Empty when the environment is exactly the locks."""
    pins: dict[str, str] = {}
    overrides: dict[str, str] = {}
    for lock in locks:
        pins |= lock_pins(lock)
        overrides |= lock_overrides(lock)
    installed = {normalize(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    problems = []
    for name, want in sorted(pins.items()):
        have = installed.get(name)
        if have is None:
            problems.append(f"{name}=={want} is not installed")
        elif have.split("+")[0] != want.split("+")[0] or ("+" in want and have != want):
            problems.append(f"{name}: lock pins {want}, installed {have}")
    problems += [f"{name} {installed[name]} is installed but no lock pins it"
                 for name in sorted(set(installed) - set(pins) - UNPINNED_OK)]
    torch = installed.get("torch", "")
    if torch and (torch_flavour == "cpu") != torch.endswith("+cpu"):
        problems.append(f"torch {torch} is not the {torch_flavour} build")
    check = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    for line in check.stdout.splitlines():
        m = _CHECK.match(line.strip())
        if m and normalize(m.group(4)) in overrides and overrides[normalize(m.group(4))] == m.group(5):
            continue  # declared in the lock's header: known and accepted
        if line.strip() and not line.startswith("No broken requirements"):
            problems.append(f"pip check: {line.strip()}")
    return problems


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="layerbench.runtime.containers", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def image_args(p):
        p.add_argument("--dockerfile", type=Path, default=DOCKERFILE)
        p.add_argument("--lock", type=Path, default=LOCK)
        p.add_argument("--torch-flavour", choices=FLAVOURS, default="cuda")
        p.add_argument("--base-image", default=None, help="default: the Dockerfile's pinned CUDA base")

    p = sub.add_parser("build", help="build the image unless it exists; write its record")
    image_args(p)
    p.add_argument("--out", type=Path, required=True, help="results/containers/<tag>.json")
    p.add_argument("--engine", default="docker")
    p.add_argument("--wheels", type=Path, default=None, help="a folder of wheels pip may take (--find-links)")
    p.add_argument("--ca-bundle", type=Path, default=None, help="PEM bundle pip trusts during the build")
    p = sub.add_parser("tag", help="print the image tag")
    image_args(p)
    p = sub.add_parser("prefix", help="print the docker run prefix for an image")
    p.add_argument("image")
    p.add_argument("--gpus", default="all", help="'none' for a CPU image")
    p = sub.add_parser("verify", help="check this environment against locks (runs inside the image)")
    p.add_argument("--lock", type=Path, action="append", required=True)
    p.add_argument("--torch-flavour", choices=FLAVOURS, required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "build":
        record = build_image(args.dockerfile, args.lock, args.out, args.base_image, args.torch_flavour,
                             args.engine, wheels=args.wheels, ca_bundle=args.ca_bundle)
        print(json.dumps({k: record[k] for k in ("image", "image_id", "built")}))
    elif args.command == "tag":
        print(image_tag(args.dockerfile, args.lock, torch_flavour=args.torch_flavour, base_image=args.base_image))
    elif args.command == "prefix":
        print(docker_prefix(args.image, gpus=None if args.gpus == "none" else args.gpus))
    elif args.command == "verify":
        problems = verify_installed(args.lock, args.torch_flavour)
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"{len(problems)} problem(s) against {', '.join(map(str, args.lock))}")
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
