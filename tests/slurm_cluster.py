"""A real Slurm cluster on this machine for the tests, in a temp folder.

Debian's Slurm (22.05) daemons run as this session's own processes, the way
the SLURM executor plugin's CI stands up its cluster (controller, compute
daemon and accounting): ``munged`` (authentication), ``mariadbd`` +
``slurmdbd`` (accounting, for ``sacct``: the plugin's default source of job
states and failure reasons, and the tests' record of what ran where),
``slurmctld``, and a ``slurmd`` for each node:

* this machine (partition ``debug``, the default), on 127.0.0.1 with its own
  CPUs and memory as ``slurmd -C`` reports them: the studies run here;
* ``gpu-node`` (partition ``gpu``), a second slurmd on this machine that
  reports the node as configured (``SlurmdParameters=config_overrides``):
  64 CPUs, 1 TiB and 8 GPUs whose device files are stand-ins (the null
  device). Slurm allocates, numbers and exports them (CUDA_VISIBLE_DEVICES)
  like real ones, so GPU requests can be placed and run; nothing can use
  them. Only the GPU test submits there.

Every file (configs, keys, state, spool, database, logs) lives under the
cluster's folder; ports are picked free; nothing goes through systemd, and
:meth:`SlurmCluster.stop` ends exactly the processes
:meth:`SlurmCluster.start` started, by their ids. The slurmd processes see
the folder's ``etc/`` at Slurm's default ``/etc/slurm`` through a bind mount
in a mount namespace of their own (invisible to the rest of the machine):
inside a job, the jobstep plugin drops ``SLURM_CONF`` before its ``srun``.

Needs root (slurmd launches jobs as their user, mounts) and the Debian
packages in ``DEBIAN_PACKAGES``; :func:`ensure_packages` installs the missing
ones with apt-get, as ``scripts/setup.sh --test`` does. Memory limits are
enforced without cgroups: the accounting sampler kills a step over its
``--mem`` (``JobAcctGatherParams=OverMemoryKill``; the job ends FAILED, the
reason is in its Slurm log), run time by the controller.

    python tests/slurm_cluster.py sbatch-calls OUT.json PARTITION SNAKEMAKE_ARGS...

writes the sbatch line the plugin builds for every job Snakemake plans
(:func:`sbatch_calls_main`).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from conftest import stop_process

# what each daemon or client needs: binary -> Debian package
BINARIES = {"munged": "munge", "slurmctld": "slurmctld", "slurmd": "slurmd", "sbatch": "slurm-client",
            "slurmdbd": "slurmdbd", "mariadbd": "mariadb-server"}
DEBIAN_PACKAGES = tuple(dict.fromkeys(BINARIES.values()))
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CLUSTER = "layerbench"
ACCOUNT = "layerbench"
GPU_NODE = {"name": "gpu-node", "partition": "gpu", "gpus": 8, "cpus": 64, "mem_mb": 1024 * 1024}


class ClusterError(RuntimeError):
    """The cluster could not be set up; the message says which step and why."""


def which(binary: str) -> str | None:
    return shutil.which(binary, path=f"{os.environ.get('PATH', '')}:{SBIN_PATH}")


def missing_packages() -> list[str]:
    return sorted({pkg for binary, pkg in BINARIES.items() if which(binary) is None})


def ensure_packages() -> None:
    """Install the Debian packages of the missing binaries (root and apt-get
    needed); raise naming them if that is not possible."""
    missing = missing_packages()
    if not missing:
        return
    if os.geteuid() != 0 or which("apt-get") is None:
        raise ClusterError(f"Slurm packages missing: {' '.join(missing)} (install them as root: "
                           "scripts/setup.sh --test)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode:
            raise ClusterError(f"{' '.join(cmd)} failed: {done.stderr[-2000:]}")
    if missing_packages():
        raise ClusterError(f"still missing after apt-get: {missing_packages()}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_hardware() -> dict[str, str]:
    """This machine as ``slurmd -C`` sees it: CPUs, sockets, cores, memory."""
    out = subprocess.run([which("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
    first = out.splitlines()[0].split()
    return dict(kv.split("=", 1) for kv in first)


@dataclass
class SlurmCluster:
    root: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def __post_init__(self):
        self.root = Path(self.root)
        self.host = socket.gethostname().split(".")[0]
        hw = node_hardware()
        self.cpus = int(hw["CPUs"])
        self.mem_mb = int(hw["RealMemory"])
        self.node_spec = " ".join(f"{k}={hw[k]}" for k in
                                  ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore",
                                   "RealMemory") if k in hw)
        self.ports = {name: free_port() for name in ("mysql", "slurmdbd", "slurmctld", "slurmd", "gpu-node")}
        for sub in ("etc", "munge", "state", "spool", "log", "run", "db"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
            (self.root / sub).chmod(0o755 if sub in ("etc", "munge") else 0o700)
        self.conf = self.root / "etc" / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.mysql_socket = self.root / "run" / "mysqld.sock"
        self.db_password = secrets.token_hex(12)

    # --- environment -------------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        """What a Slurm client (and a job submitted with --export=ALL) needs."""
        path = os.environ.get("PATH", "")
        return {"SLURM_CONF": str(self.conf), "PATH": f"{path}:{SBIN_PATH}" if path else SBIN_PATH}

    def run(self, *cmd: str, check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
        done = subprocess.run(list(cmd), env={**os.environ, **self.env}, capture_output=True, text=True,
                              timeout=timeout, **kw)
        if check and done.returncode:
            raise ClusterError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.strip()}\n"
                               f"{self.logs_tail()}")
        return done

    def log(self, name: str) -> str:
        path = self.root / "log" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs_tail(self, n: int = 1500) -> str:
        return "\n".join(f"--- {name}.log ---\n{self.log(name)[-n:]}"
                         for name in ("munged", "mysqld", "slurmdbd", "slurmctld", f"slurmd-{self.host}",
                                      f"slurmd-{GPU_NODE['name']}") if self.log(name))

    # --- configuration -----------------------------------------------------------
    def _write(self, name: str, text: str, mode: int = 0o644) -> Path:
        path = self.root / "etc" / name
        path.write_text(text)
        path.chmod(mode)
        return path

    def write_configs(self) -> None:
        r, p = self.root, self.ports
        auth = f"AuthType=auth/munge\nAuthInfo=socket={self.munge_socket}\n"
        self._write("slurm.conf", f"""\
ClusterName={CLUSTER}
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={p['slurmctld']}
SlurmdPort={p['slurmd']}
SlurmUser=root
SlurmdUser=root
{auth}CredType=cred/munge
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool/%n
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd-%n.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
# No cgroups: processes are tracked through /proc; memory is enforced by the
# accounting sampler (OverMemoryKill), run time by the controller.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={p['slurmdbd']}
# the munge socket for connections to slurmdbd (AuthInfo covers the rest)
AccountingStoragePass={self.munge_socket}
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
JobCompType=jobcomp/none
KillWait=5
InactiveLimit=0
MinJobAge=300
# gpu-node is a second slurmd on this machine that reports the node as configured
# (8 GPUs, 64 CPUs, 1 TiB) instead of what it finds; this node's line is what it finds
SlurmdParameters=config_overrides
NodeName={self.host} NodeAddr=127.0.0.1 {self.node_spec} State=UNKNOWN
NodeName={GPU_NODE["name"]} NodeAddr=127.0.0.1 Port={p["gpu-node"]} CPUs={GPU_NODE['cpus']} \
RealMemory={GPU_NODE['mem_mb']} Gres=gpu:{GPU_NODE["gpus"]} State=UNKNOWN
PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
PartitionName={GPU_NODE['partition']} Nodes={GPU_NODE['name']} MaxTime=INFINITE State=UP
""")
        # gpu-node's GPUs: device files standing in for /dev/nvidia0..7, each the null
        # device (char 1:3); Slurm only counts and numbers them
        devices = self.root / "dev"
        devices.mkdir(exist_ok=True)
        for i in range(GPU_NODE["gpus"]):
            if not (devices / f"gpu{i}").exists():
                os.mknod(devices / f"gpu{i}", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        self._write("gres.conf", f"NodeName={GPU_NODE['name']} Name=gpu File={devices}/gpu[0-{GPU_NODE['gpus'] - 1}]\n")
        self._write("cgroup.conf", "# unused: ProctrackType=proctrack/linuxproc, TaskPlugin=task/none\n"
                                   "CgroupPlugin=autodetect\n")
        self._write("slurmdbd.conf", f"""\
{auth}DbdAddr=127.0.0.1
DbdHost={self.host}
DbdPort={p['slurmdbd']}
SlurmUser=root
DebugLevel=info
LogFile={r}/log/slurmdbd.log
PidFile={r}/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={p['mysql']}
StorageUser=slurm
StoragePass={self.db_password}
StorageLoc=slurm_acct_db
""", mode=0o600)

    # --- processes ----------------------------------------------------------------
    def _spawn(self, name: str, *cmd: str) -> subprocess.Popen:
        out = open(self.root / "log" / f"{name}.out", "ab")
        proc = subprocess.Popen(list(cmd), env={**os.environ, **self.env}, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        self.procs[name] = proc
        return proc

    def _wait(self, what: str, ready, timeout: float = 60, procs: tuple[str, ...] = ()) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name in procs:
                if self.procs[name].poll() is not None:
                    out = (self.root / "log" / f"{name}.out").read_text(errors="replace")
                    raise ClusterError(f"{name} exited {self.procs[name].returncode} while waiting for {what}:\n"
                                       f"{out[-2000:]}\n{self.logs_tail()}")
            if ready():
                return
            time.sleep(0.25)
        raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}\n"
                           f"{getattr(self, '_last_probe', '')}\n{self.logs_tail()}")

    def _ok(self, *cmd: str) -> bool:
        done = self.run(*cmd, check=False, timeout=20)
        self._last_probe = f"last probe: {' '.join(cmd)} exited {done.returncode}: {done.stderr.strip()[-1000:]}"
        return done.returncode == 0

    def start(self) -> SlurmCluster:
        ensure_packages()
        if os.geteuid() != 0:
            raise ClusterError("the test cluster needs root: slurmd launches each job as its user")
        self.write_configs()
        r = self.root
        key = r / "munge" / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o600)
        # --force: the socket's folder is under a temp folder only root can enter;
        # every client (daemons, jobs) runs as root here
        self._spawn("munged", which("munged"), "--foreground", "--force", f"--key-file={key}",
                    f"--socket={self.munge_socket}", f"--pid-file={r}/munge/munged.pid",
                    f"--log-file={r}/log/munged.log", f"--seed-file={r}/munge/munged.seed")
        self._wait("munged", lambda: self._ok("munge", "-n", "-S", str(self.munge_socket)), procs=("munged",))

        datadir = r / "db"
        init = subprocess.run([which("mariadb-install-db"), "--no-defaults", f"--datadir={datadir}", "--user=root",
                               "--auth-root-authentication-method=socket", "--skip-test-db"],
                              capture_output=True, text=True)
        if init.returncode:
            raise ClusterError(f"mariadb-install-db failed: {init.stdout[-1500:]}{init.stderr[-1500:]}")
        self._spawn("mysqld", which("mariadbd"), "--no-defaults", f"--datadir={datadir}", "--user=root",
                    f"--socket={self.mysql_socket}", f"--port={self.ports['mysql']}", "--bind-address=127.0.0.1",
                    "--skip-name-resolve", f"--pid-file={r}/run/mysqld.pid", f"--log-error={r}/log/mysqld.log",
                    "--innodb-buffer-pool-size=64M", "--innodb-lock-wait-timeout=900", "--skip-log-bin")
        sql = ["mariadb", "--no-defaults", f"--socket={self.mysql_socket}", "-uroot"]
        self._wait("mariadbd", lambda: self._ok(*sql, "-e", "select 1"), procs=("mysqld",))
        self.run(*sql, "-e", f"CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{self.db_password}'; "
                             "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';")

        self._spawn("slurmdbd", which("slurmdbd"), "-D")
        self._wait("slurmdbd", lambda: self._ok("sacctmgr", "-n", "list", "cluster"), procs=("slurmdbd",))
        self.run("sacctmgr", "-i", "add", "cluster", CLUSTER)
        self.run("sacctmgr", "-i", "add", "account", ACCOUNT, f"Cluster={CLUSTER}", "Description=layerbench tests")
        self.run("sacctmgr", "-i", "add", "user", "root", f"Account={ACCOUNT}", f"Cluster={CLUSTER}")

        self._spawn("slurmctld", which("slurmctld"), "-D", "-i")
        self._wait("slurmctld", lambda: self._ok("scontrol", "ping"), procs=("slurmctld",))
        # slurmd, and so every job, sees this cluster's etc/ at Slurm's default
        # /etc/slurm (a bind mount in a mount namespace of its own): the jobstep
        # plugin (0.6.1) drops SLURM_CONF, with every other SLURM_* variable,
        # before its srun inside the job
        for node in (self.host, GPU_NODE["name"]):
            (self.root / "spool" / node).mkdir(exist_ok=True)
            self._spawn(f"slurmd-{node}", which("unshare"), "--mount", "--propagation", "private", "sh", "-c",
                        'mount --bind "$1" /etc/slurm && exec "$2" -D -N "$3"', "sh", str(self.root / "etc"),
                        which("slurmd"), node)
        for node in (self.host, GPU_NODE["name"]):
            self._wait(f"node {node} idle", lambda: self.node_state(node) == "idle", procs=(f"slurmd-{node}",))
        return self

    def node_state(self, node: str) -> str:
        done = self.run("sinfo", "-h", "-N", "-n", node, "-o", "%t", check=False, timeout=20)
        return done.stdout.strip() if done.returncode == 0 else ""

    def stop(self) -> None:
        """Stop every daemon this cluster started, by its process id (the
        compute daemon first, the database last); jobs still running are
        cancelled first."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self.run("scancel", "--full", "-u", "root", check=False, timeout=20)
        for name in (f"slurmd-{GPU_NODE['name']}", f"slurmd-{self.host}", "slurmctld", "slurmdbd", "mysqld", "munged"):
            if name in self.procs:
                stop_process(self.procs[name], timeout=20)

    def leftover_processes(self) -> list[str]:
        """Processes still alive that this cluster started: its daemons, and
        any process of a job (they carry its SLURM_CONF or run in its folder)."""
        alive = [f"{name} ({proc.pid})" for name, proc in self.procs.items() if proc.poll() is None]
        marks = (f"SLURM_CONF={self.conf}".encode(), str(self.root).encode())
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                environ, cmdline = (proc / "environ").read_bytes(), (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if int(proc.name) != os.getpid() and any(m in environ or m in cmdline for m in marks):
                command = cmdline.replace(b"\0", b" ").decode(errors="replace")[:200]
                alive.append(f"{command} ({proc.name})")
        return alive

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()

    # --- queries ------------------------------------------------------------------
    def sacct(self, *fields: str, extra: tuple[str, ...] = ()) -> list[dict[str, str]]:
        """One dict per job allocation (``sacct -X``) of this cluster since it
        started; memory in MB (``--noconvert``)."""
        out = self.run("sacct", "-X", "-a", "-P", "-n", "--noconvert", "--starttime", "now-1days", "-o",
                       ",".join(fields), *extra).stdout
        return [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line]

    def wait_for_job(self, job_id: str, *fields: str, timeout: float = 300) -> dict[str, str]:
        """The accounting record of a job once it has ended."""
        fields = tuple(dict.fromkeys(("State", *fields)))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.sacct(*fields, extra=("-j", job_id))
            if rows and rows[0]["State"].split()[0] not in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING"):
                return rows[0]
            time.sleep(0.5)
        raise ClusterError(f"job {job_id} still not ended after {timeout:.0f}s\n{self.logs_tail()}")


# --- what the plugin would submit -------------------------------------------------
def sbatch_calls_main(out: str, partition: str, *snakemake_args: str) -> None:
    """Plan a study with Snakemake's own command line (``snakemake_args``,
    e.g. ``--profile workflow/profiles/slurm -n``: the dry run validates
    against the slurm executor) and write, for every planned job, its rule,
    wildcards, whether Snakemake runs it locally, and the sbatch call the
    SLURM plugin builds for it: the plugin's own ``get_submit_command`` and
    ``set_gres_string``, composed as its ``run_job`` composes them (less the
    ``--wrap`` command), with ``-p partition``."""
    import json
    import sys
    from types import SimpleNamespace

    from snakemake import cli
    from snakemake.api import DAGApi
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    captured = {}
    execute = DAGApi.execute_workflow

    def capture(self, *args, **kwargs):
        captured["workflow"] = self.workflow_api._workflow
        return execute(self, *args, **kwargs)

    DAGApi.execute_workflow = capture
    try:
        cli.main(list(snakemake_args))
    except SystemExit as exit:
        if exit.code:
            raise
    workflow = captured["workflow"]
    # the dry run executed with the dryrun executor, which runs every job
    # locally; Snakemake's own is_local as it decides under a remote executor:
    remote = SimpleNamespace(local_exec=False, _localrules=workflow._localrules)
    rows = []
    for job in workflow.dag.needrun_jobs(exclude_finished=False):
        row = {"rule": job.rule.name, "wildcards": dict(job.wildcards_dict),
               "local": type(workflow).is_local(remote, job.rule)}
        if not row["local"]:
            params = {"run_uuid": "layerbench-sbatch-check", "slurm_logfile": Path(out).parent / "%j.log",
                      "comment_str": f"rule_{job.rule.name}", "account": "", "partition": f" -p {partition}",
                      "workdir": str(workflow.workdir_init)}
            row["sbatch"] = get_submit_command(job, params) + set_gres_string(job)
        rows.append(row)
    Path(out).write_text(json.dumps(rows, indent=1))
    print(f"{len(rows)} jobs", file=sys.stderr)


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["sbatch-calls"]:
        sbatch_calls_main(*sys.argv[2:])
    else:
        sys.exit(f"usage: {sys.argv[0]} sbatch-calls OUT.json PARTITION SNAKEMAKE_ARGS...")
