"""Shared fixtures. Everything runs for real on CPU: one small study runs
through Snakemake in the background from the start of the session
(``study_runs``, once per test run); its base model and data serve the
in-process tests too (``small_base``).

Hermetic: every Snakemake run goes through ``snakemake_in`` in a study folder
under a temp directory, never the repository; the session fails when the
repository's own study outputs (``RUN_OUTPUTS``) changed while it ran."""

from __future__ import annotations

import copy
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# The suite runs several studies at once on few cores, so OpenMP threads outnumber cores. OpenMP's default
# spins at every barrier, holding a core another process's working thread needs; passive waiting sleeps instead.
# Measured here (AMD EPYC, 2 cores): the memory calibration, two 2-thread training processes, 133 s spinning
# vs 42 s passive. It changes no result (it decides only how an idle thread waits). Set before torch loads;
# every process the suite starts inherits it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# what a study run in the repository writes; tests must neither read nor write them
RUN_OUTPUTS = ("results", "reports", "mlflow.db", "mlruns", ".snakemake")
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
_STATE = pytest.StashKey[dict]()  # tree_state of the repository when the session started
_E2E = pytest.StashKey[dict]()  # the background DAG runs behind study_runs
_REHEARSAL = pytest.StashKey[dict]()  # the background paper-study rehearsals behind rehearsals
_CALIBRATION = pytest.StashKey[dict]()  # the background memory calibration behind memory_calibration


def tree_state(root: Path) -> dict[str, tuple[int, int]]:
    """{path: (size, mtime_ns)} of every file under ``root``'s RUN_OUTPUTS."""
    state = {}
    for name in RUN_OUTPUTS:
        top = root / name
        for path in [top] if top.is_file() else top.rglob("*") if top.is_dir() else []:
            if path.is_file():
                st = path.stat()
                state[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return state


def pytest_sessionstart(session):
    session.config.stash[_STATE] = tree_state(ROOT)


def pytest_sessionfinish(session, exitstatus):
    for key in (_E2E, _REHEARSAL, _CALIBRATION):  # runs a subset of tests never waited for are stopped
        if key in session.config.stash:
            started = session.config.stash[key]
            for _, proc in started["runs"].values():
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)  # Snakemake and its jobs
                    proc.wait()
            shutil.rmtree(started["base"], ignore_errors=True)
    before, after = session.config.stash[_STATE], tree_state(ROOT)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if changed:
        print(f"\nNOT HERMETIC: the tests changed the repository's own study outputs: {changed[:20]}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def stop_process(proc: subprocess.Popen, timeout: float = 60) -> None:
    """SIGTERM, then SIGKILL if it is still alive after ``timeout`` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def study_workdir(path: Path, raw: dict | None = None) -> Path:
    """A study folder outside the repository: the repo's Snakefile runs there
    (``--directory``) with the files the DAG reads linked in, and ``raw``
    (if given) as its ``study.yaml``."""
    path.mkdir(parents=True, exist_ok=True)
    for name in ("config", "benchmarks", "containers", "environment.lock"):
        if not (path / name).exists():
            (path / name).symlink_to(ROOT / name)
    if raw is not None:
        (path / "study.yaml").write_text(yaml.safe_dump(raw))
    return path


def snakemake_in(workdir: Path, *args: str, configfile: Path | str | None = "study.yaml", env: dict | None = None,
                 timeout: int = 1800, wait: bool = True, first: str | None = None):
    """Run the repository's Snakefile in ``workdir`` (``--configfile`` relative
    to it; None: the default study). MLFLOW_TRACKING_URI is dropped so each
    study uses its own folder's store. ``wait=False`` returns the running
    ``Popen`` (output piped) instead of the finished process; ``first``, a
    shell command run before Snakemake (which runs only if it succeeds)."""
    base = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    config = ["--configfile", str(workdir / configfile)] if configfile else []
    command = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir),
               *args, *config]  # --configfile last: it takes every word after it
    if first:
        command = ["bash", "-c", f"{first} && exec {shlex.join(command)}"]
    options = dict(cwd=workdir, text=True, env={**base, **(env or {})})
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                                **options)
    return subprocess.run(command, capture_output=True, timeout=timeout, **options)


SHARED_OUTPUTS = ("data", "base_model")  # what every small study builds alike: data and model settings are equal


def share_outputs(source: Path, target: Path, names: tuple[str, ...] = SHARED_OUTPUTS) -> None:
    """Copy a finished study's ``names`` (mtimes kept) into another study's
    results folder, so the Snakemake run there takes them as done instead of
    computing the same bits again: files without Snakemake metadata are judged
    by their mtimes alone. Only for outputs whose settings are equal in both."""
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (source / name).is_dir():
            shutil.copytree(source / name, target / name)
        else:
            shutil.copy2(source / name, target / name)


def default_raw() -> dict:
    return yaml.safe_load((ROOT / "config" / "default.yaml").read_text())


def small_study_raw(name: str = "small", **changes) -> dict:
    """A scaled-down default study: 2 layers, 1 seed, a few RL steps.
    Small enough for tests, same code path as the real thing."""
    raw = copy.deepcopy(default_raw())
    raw["study"] = name
    raw["arms"] = [a for a in raw["arms"] if "+" not in str(a)]  # the control arm: test_workflow's own test
    raw["model"]["build"].update(num_layers=2, sft_steps=300, sft_lr=0.003)
    raw["data"]["synthetic"].update(n_train=600, n_test=40)
    raw["seeds"] = [1]
    raw["rl"].update(steps=4, prompts_per_step=4, num_generations=4, screen_steps=2)
    raw["limits"]["eval_budgets"] = [40, 96]
    raw["eval"]["batch_size"] = 40
    for key, value in changes.items():
        raw[key] = value
    return raw


def job_stats(text: str) -> dict[str, int]:
    """{rule: jobs} from the "Job stats" table of a Snakemake dry run."""
    block = text[text.index("Job stats:"):]
    stats = {}
    for line in block.splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        stats[parts[0]] = int(parts[1])
    return stats


# Kernels capped to what an AVX2-only x86-64 machine has: stands in for a second machine.
AVX2_MACHINE = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2"}


def with_threads(raw: dict, threads: int) -> dict:
    """``raw`` with every stage's intra-op thread count set to ``threads``."""
    raw = copy.deepcopy(raw)
    raw["model"]["build"]["threads"] = raw["rl"]["threads"] = raw["eval"]["threads"] = threads
    return raw


def weight_hashes(results: Path) -> dict[str, str]:
    """{model file: sha256} of the base model and every checkpoint of a study
    (what ``layerbench weight-hashes`` publishes)."""
    from layerbench.commands.weight_hashes import study_hashes

    return study_hashes(results)


E2E_THREADS = 2  # every job's intra-op threads in the e2e study: a study setting, whatever --cores grants


def e2e_raw() -> dict:
    raw = with_threads(small_study_raw("e2e", arms=["base", "full", "layer:all"]), E2E_THREADS)
    raw["tracking"]["experiment"] = "layerbench-e2e"
    return raw


def two_process_raw() -> dict:
    """The e2e study's full arm and layer 1, each trained by two processes
    (resources.gpus_per_arm on a CPU study: the launcher GPU studies use);
    each process takes half of every 16-completion update, on one thread.
    Its data and base model are the e2e study's (same settings, the model
    built on E2E_THREADS), copied from the "wide" run (``E2E_RUNS``)."""
    raw = with_threads(small_study_raw("two-processes", arms=["base", "full", "layer:1"],
                                       resources={"gpu": 0, "gpus_per_arm": 2}), 1)
    raw["model"]["build"]["threads"] = E2E_THREADS
    raw["rl"]["micro_batch_completions"] = 8
    return raw


TWO_PROCESS_CHECKS = "results/two-processes/checks.json"  # pairing and parameter audit of its runs

E2E_RUNS = {  # name: (study, --cores, environment, targets, the run whose SHARED_OUTPUTS it copies)
    "wide": (e2e_raw, 2, {}, (), None),
    "narrow": (e2e_raw, 1, AVX2_MACHINE, (), None),  # another machine: AVX2-only kernels, one core; builds its own
    "two-processes": (two_process_raw, 1, {}, (TWO_PROCESS_CHECKS,), "wide"),
}


def after_shared_outputs(source: Path, target: Path, timeout_s: int = 1500) -> str:
    """A shell command that waits until ``source``'s base model is done (its
    preflight_train.json, written after it, exists), then copies
    SHARED_OUTPUTS into ``target`` as ``share_outputs`` does."""
    done = source / "preflight_train.json"
    copy = " ".join(f"{shlex.quote(str(source / n))}" for n in SHARED_OUTPUTS)
    return (f"for i in $(seq {timeout_s}); do [ -e {shlex.quote(str(done))} ] && break; sleep 1; done; "
            f"[ -e {shlex.quote(str(done))} ] && mkdir -p {shlex.quote(str(target))} && "
            f"cp -a {copy} {shlex.quote(str(target))}/")


# The fast tier, ``pytest -m "not slow"``: every test but these, marked slow here by the fixtures they wait for
# (and, in their own modules, the container build, the Slurm cluster and the memory calibration).
SLOW_FIXTURES = {
    "study_runs": "waits for the small study's background Snakemake runs",
    "rehearsals": "waits for the paper-study rehearsals on the offline Hub mirror",
    "memory_calibration": "waits for the CPU memory calibration's two training runs",
}


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: outside the fast tier (pytest -m 'not slow'); see conftest.SLOW_FIXTURES")
    config.pluginmanager.register(BackgroundRuns(), "layerbench-background-runs")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session, config, items):
    """Mark the tests that wait for a background run slow, before ``-m`` deselects;
    then order them by what they wait for (``background_wait``), so everything
    that needs no background run, the container build among it, runs while
    the background runs compute instead of after them."""
    for item in items:
        if SLOW_FIXTURES.keys() & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    items.sort(key=background_wait)  # stable: file order within each group


def background_wait(item) -> int:
    """0: needs no background run; 1: the small study's (``study_runs``) or the
    memory calibration; 2: the rehearsals, which finish last."""
    names = set(getattr(item, "fixturenames", ()))
    return 2 if "rehearsals" in names else 1 if names & {"study_runs", "memory_calibration"} else 0


class BackgroundRuns:
    """Starts the DAG runs behind ``study_runs`` and ``rehearsals`` once ``-m``
    has deselected (trylast), and only when a selected test needs them: they
    compute while the tests before them run (the container build waits on the
    network and the disk most of the time)."""

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, session, config, items):
        if any("memory_calibration" in getattr(item, "fixturenames", ()) for item in items):
            import memory_calibration

            started = memory_calibration.start(Path(tempfile.mkdtemp(prefix="layerbench-memory-")))
            config.stash[_CALIBRATION] = {**started, "base": started["folder"],
                                          "runs": {arm: (None, job) for arm, job in started["jobs"].items()}}
        if any("rehearsals" in getattr(item, "fixturenames", ()) for item in items):
            _start_rehearsals(config)
        if not any("study_runs" in getattr(item, "fixturenames", ()) for item in items):
            return
        base = Path(tempfile.mkdtemp(prefix="layerbench-e2e-"))
        started = {}
        for name, (study, cores, env, targets, shared) in E2E_RUNS.items():
            raw = study()
            work = study_workdir(base / name, raw)
            first = shared and after_shared_outputs(base / shared / "results" / E2E_RUNS[shared][0]()["study"],
                                                    work / "results" / raw["study"])
            started[name] = work, snakemake_in(work, *targets, "--cores", str(cores), env=env, wait=False,
                                               first=first)
        config.stash[_E2E] = {"base": base, "runs": started}


# Paper studies rehearsed on CPU (tests/test_rehearsal.py): paper config, then
# config/paper/rehearsal/common.yaml, then the study's own rehearsal file. REHEARSED
# run with every arm (the first also re-runs its repro target); BASE_ONLY, every other
# paper config, with arms base and full.
REHEARSED = ("qwen3-1.7b-grpo-scripts", "qwen2.5-math-1.5b-drgrpo")
BASE_ONLY = ("qwen3-1.7b-grpo-scripts-greedy", "qwen3-1.7b-grpo-paper", "qwen3-4b-grpo-paper",
             "qwen3-4b-grpo-scripts", "qwen3-8b-grpo-paper", "qwen3-8b-grpo-scripts")


# Rehearsals run in this many chains at once, after the mirror: most of their jobs use one
# thread (rl.threads, eval.threads), so one chain alone leaves a core idle at the end of the suite.
REHEARSAL_CHAINS = 2


def rehearsal_configfiles(study: str) -> list[str]:
    return [f"config/paper/{study}.yaml", "config/paper/rehearsal/common.yaml", f"config/paper/rehearsal/{study}.yaml"]


def _start_rehearsals(config) -> None:
    """Build the offline Hub mirror, then run every rehearsed study through
    Snakemake, in one background shell, REHEARSAL_CHAINS studies at a time
    (each study's log and exit status land in its folder)."""
    base = Path(tempfile.mkdtemp(prefix="layerbench-rehearsal-"))
    home = base / "hf-home"
    env = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, **OFFLINE, "HF_HOME": str(home)}
    lines = ["set -u", f"{sys.executable} {ROOT / 'tests' / 'hub_mirror.py'} {home} > {base}/mirror.log 2>&1 || exit 1"]
    runs, chains = {}, [[] for _ in range(REHEARSAL_CHAINS)]
    for i, study in enumerate(REHEARSED + BASE_ONLY):
        work = study_workdir(base / study)
        runs[study] = work
        targets = ["all", "checks_repro"] if study == REHEARSED[0] else ["all"]
        arms = [] if study in REHEARSED else ["--config", "arms=[base,full]"]
        command = [sys.executable, "-m", "snakemake", *targets, "-s", str(ROOT / "Snakefile"), "--directory",
                   str(work), "--cores", "2", *arms, "--configfile", *rehearsal_configfiles(study)]
        chains[i % REHEARSAL_CHAINS].append(f"(cd {work} && {' '.join(command)} > snakemake.log 2>&1; "
                                            "echo $? > snakemake.rc)")
    lines += ["(\n" + "\n".join(chain) + "\n) &" for chain in chains] + ["wait"]
    with open(base / "rehearsals.log", "w") as log:  # the shell's own errors
        proc = subprocess.Popen(["bash", "-c", "\n".join(lines)], env=env, start_new_session=True,
                                stdout=log, stderr=subprocess.STDOUT)
    config.stash[_REHEARSAL] = {"base": base, "home": home, "work": runs, "runs": {"all": (None, proc)}}


@pytest.fixture(scope="session")
def rehearsals(request) -> dict:
    """{study: its finished rehearsal folder}; the mirror is at ``["hf_home"]``."""
    started = request.config.stash[_REHEARSAL]
    proc = started["runs"]["all"][1]
    proc.wait(timeout=2400)
    mirror_log = started["base"] / "mirror.log"
    assert proc.returncode == 0, (f"the rehearsals' shell exited {proc.returncode}: "
                                  f"{(started['base'] / 'rehearsals.log').read_text()[-2000:]}\n"
                                  f"mirror.log: {mirror_log.read_text()[-4000:]}")
    for study, work in started["work"].items():
        rc = (work / "snakemake.rc").read_text().strip()
        assert rc == "0", f"{study}: snakemake exited {rc}: {(work / 'snakemake.log').read_text()[-6000:]}"
    return {**started["work"], "hf_home": started["home"]}


@pytest.fixture(scope="session")
def memory_calibration(request) -> dict:
    """tests/memory_calibration.py's runs, started with the session: {"folder",
    "config" (the model's), "jobs" ({arm: its training process})}."""
    return request.config.stash[_CALIBRATION]


@pytest.fixture(scope="session")
def study_runs(request):
    """One small study (every arm, one seed) run through Snakemake on settings
    that portable numerics must not depend on, all at once (nor on the load):
    "wide": --cores 2, this CPU's own kernels; "narrow": --cores 1, the
    AVX2_MACHINE caps; both at the study's E2E_THREADS per job; and
    "two-processes" (conftest.two_process_raw). Shared by every DAG test."""
    started = request.config.stash[_E2E]
    for name, (work, proc) in started["runs"].items():
        out, _ = proc.communicate(timeout=1800)
        assert proc.returncode == 0, f"{name}: {out[-4000:]}"
    return e2e_raw(), {name: work for name, (work, _) in started["runs"].items()}


@pytest.fixture(scope="session")
def small_base(study_runs):
    """Data and a base model for the small study: the ones the session's "wide"
    DAG run built (same model and data settings; only the study name differs)."""
    from layerbench.config import study_from_dict

    results = study_runs[1]["wide"] / "results" / "e2e"
    return {"study": study_from_dict(small_study_raw()), "data": results / "data", "model": results / "base_model"}
