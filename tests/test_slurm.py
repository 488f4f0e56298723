"""A real SLURM cluster runs the smoke DAG of one table through the repository's SLURM profile.

The fixture starts a private single-node cluster from Debian's `slurm-wlm` and `munge` packages:
munged, slurmctld and slurmd on 127.0.0.1, free ports, config/state/spool/logs in a temporary
directory, no accounting database (so job status comes from `squeue`). The node is declared with
what `slurmd -C` measures. Skipped where that cannot work: not root, binaries missing, or the
cluster not idle within CLUSTER_TIMEOUT seconds.

The only departures from `workflow/profiles/slurm` are for this cluster: the partition, `squeue`
as status command, no GPU, and CPU / memory requests capped to what the node has (all derived from
the profile file, so every other key, e.g. the pre-emption signal, still applies), plus a shorter
first status check and kept SLURM logs (evidence that the jobs ran under SLURM).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

from .conftest import REPO

pytestmark = pytest.mark.slow

CLUSTER_TIMEOUT = 90
PARTITION = "debug"
PROFILE = REPO / "workflow" / "profiles" / "slurm"
TARGET = "results/embedded-smoke/tsrn/table4.csv"
STEPS = 150  # of the pre-empted training run
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "sinfo", "srun", "scancel")


@dataclass
class Cluster:
    env: dict[str, str]  # what a SLURM client (and Snakemake) of this cluster runs with
    cpus: int
    memory_mb: int

    def run(self, *cmd: str) -> str:
        return subprocess.run(
            cmd, env=self.env, capture_output=True, text=True, check=True, timeout=60
        ).stdout

    def jobs(self) -> list[dict[str, str]]:
        """Every job the controller remembers (MinJobAge keeps finished ones for 10 minutes)."""
        out = self.run("squeue", "--states=all", "--noheader", "--format=%i|%j|%T|%k")
        keys = ("id", "name", "state", "comment")
        return [dict(zip(keys, line.split("|"), strict=True)) for line in out.splitlines()]


def _which(name: str) -> str | None:
    return shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_line(slurmd: str) -> tuple[str, int, int]:
    """`slurmd -C`'s node definition with NodeAddr added; also its name, CPUs and memory."""
    out = subprocess.run([slurmd, "-C"], capture_output=True, text=True, timeout=30).stdout
    line = next((x for x in out.splitlines() if x.startswith("NodeName=")), "")
    fields = dict(f.split("=", 1) for f in line.split())
    if not {"NodeName", "CPUs", "RealMemory"} <= fields.keys():
        pytest.skip(f"`slurmd -C` gave no usable node line: {out!r}")
    fields["RealMemory"] = str(int(fields["RealMemory"]) - 256)  # headroom: slurmd may see less
    fields.pop("UpTime", None)
    node = " ".join(f"{k}={v}" for k, v in fields.items()) + " NodeAddr=127.0.0.1 State=UNKNOWN"
    return node, int(fields["CPUs"]), int(fields["RealMemory"])


def _slurm_conf(root: Path, node: str, name: str) -> str:
    return f"""\
ClusterName=stisrtest
SlurmctldHost={name}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/run/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=600
{node}
PartitionName={PARTITION} Nodes={name} Default=YES MaxTime=INFINITE State=UP
"""


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _cancel_all(c: Cluster, timeout: float = 60) -> None:
    """Leave no job step behind the daemons (an orphaned slurmstepd outlives its slurmd)."""
    subprocess.run(["scancel", f"--user={os.getuid()}"], env=c.env, timeout=60, check=False)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if all(j["state"] not in ("RUNNING", "COMPLETING", "PENDING") for j in c.jobs()):
                return
        except subprocess.SubprocessError:
            return
        time.sleep(1)


def _logs(root: Path) -> str:
    return "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in sorted(root.glob("log/*"))
    )


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if os.geteuid() != 0:
        pytest.skip("the test SLURM cluster needs root (slurmd runs jobs as their submitting user)")
    paths = {name: _which(name) for name in (*DAEMONS, *CLIENTS)}
    missing = sorted(name for name, path in paths.items() if path is None)
    if missing:
        pytest.skip(f"SLURM/MUNGE not installed (apt-get install slurm-wlm munge): no {missing}")

    # munged wants its socket directory (and every parent) searchable by all; pytest's tmp is 0700
    root = Path(tempfile.mkdtemp(prefix="stisr-slurm-"))
    root.chmod(0o755)
    for sub, mode in (("run", 0o755), ("munge", 0o700), ("state", 0o700), ("spool", 0o755)):
        (root / sub).mkdir(mode=mode)
    (root / "log").mkdir()
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(128))
    key.chmod(0o600)

    node, cpus, memory = _node_line(paths["slurmd"])
    name = re.search(r"NodeName=(\S+)", node).group(1)
    conf = root / "slurm.conf"
    conf.write_text(_slurm_conf(root, node, name))
    # The jobstep plugin strips SLURM_* (SLURM_CONF too) from the environment of the `srun` it runs
    # inside each job; a real cluster's config sits at /etc/slurm, this one's is re-supplied here.
    shim = root / "bin"
    shim.mkdir()
    (shim / "srun").write_text(f"#!/bin/sh\nSLURM_CONF='{conf}' exec '{paths['srun']}' \"$@\"\n")
    (shim / "srun").chmod(0o755)

    inherited = ("SLURM_", "SBATCH_", "SRUN_", "SQUEUE_", "MLFLOW_TRACKING_URI")
    env = {k: v for k, v in os.environ.items() if not k.startswith(inherited)}
    # jobs inherit this environment (sbatch --export=ALL): the venv's `stisr` must be on PATH
    env["PATH"] = os.pathsep.join([str(shim), str(Path(sys.executable).parent), env["PATH"]])
    env["SLURM_CONF"] = str(conf)
    c = Cluster(env, cpus, memory)

    procs: list[subprocess.Popen] = []

    def daemon(*cmd: str) -> None:
        log = open(root / "log" / f"{Path(cmd[0]).name}.out", "w")  # noqa: SIM115
        procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
        log.close()

    try:
        daemon(
            paths["munged"],
            "--foreground",
            f"--socket={root}/run/munge.socket",
            f"--key-file={key}",
            f"--pid-file={root}/run/munged.pid",
            f"--seed-file={root}/munge/munged.seed",
            f"--log-file={root}/log/munged.log",
        )
        daemon(paths["slurmctld"], "-D", "-f", str(conf))
        daemon(paths["slurmd"], "-D", "-f", str(conf), "-N", name)
        deadline, state = time.monotonic() + CLUSTER_TIMEOUT, ""
        while time.monotonic() < deadline and state != "idle":
            if any(p.poll() is not None for p in procs):
                break
            time.sleep(1)
            state = subprocess.run(
                ["sinfo", "--noheader", "--Node", "--format=%t"],
                env=env,
                capture_output=True,
                text=True,
            ).stdout.strip()
        if state != "idle":
            _stop(procs)
            logs = _logs(root)
            shutil.rmtree(root, ignore_errors=True)
            pytest.skip(f"SLURM not idle within {CLUSTER_TIMEOUT}s (sinfo: {state!r})\n{logs}")
        yield c
    finally:
        if procs and all(p.poll() is None for p in procs):
            _cancel_all(c)
        _stop(procs)
        shutil.rmtree(root, ignore_errors=True)


def _overrides(c: Cluster) -> list[str]:
    """The profile's own resources, fitted to the test node.

    `--default-resources` / `--set-resources` on the command line replace the profile's lists
    instead of merging with them, so they are rebuilt from the profile file: partition -> ours,
    gpu -> 0, cpus_per_task and mem_mb capped at half the node (two jobs side by side)."""
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    cap = {"cpus_per_task": max(1, c.cpus // 2), "mem_mb": max(500, c.memory_mb // 2)}

    def fit(key: str, value):
        if key in cap:
            return min(int(value), cap[key])
        return 0 if key == "gpu" else value

    defaults = dict(item.split("=", 1) for item in profile["default-resources"])
    defaults["slurm_partition"] = PARTITION
    rules = profile["set-resources"]
    per_rule = [f"{rule}:{k}={fit(k, v)}" for rule, res in rules.items() for k, v in res.items()]
    return [
        "--default-resources",
        *(f"{k}={fit(k, v)}" for k, v in defaults.items()),
        "--set-resources",
        *per_rule,
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--slurm-keep-successful-logs",
    ]


def _snakemake(c: Cluster, workdir: Path, *targets: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "workflow" / "Snakefile"),
        "--directory",
        str(workdir),
        "--profile",
        str(PROFILE),
        # --config on the command line replaces the profile's config list: say source and scale
        "--config",
        "source=embedded",
        "scale=smoke",
        'papers=["tsrn"]',
        *_overrides(c),
        *targets,
    ]
    return subprocess.run(cmd, env=c.env, capture_output=True, text=True, timeout=1200)


def test_profile_runs_a_table_through_slurm(cluster, tmp_path):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    before = {j["id"] for j in cluster.jobs()}
    out = _snakemake(cluster, tmp_path, TARGET)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-6000:]

    cells = pd.read_csv(tmp_path / TARGET)
    crnn = cells[cells["column"].str.startswith("crnn_") & cells["row"].isin(["bicubic", "tsrn"])]
    assert len(crnn) == 8
    assert (crnn["status"] == "computed").all(), crnn[["row", "column", "status"]]
    assert crnn["ours"].notna().all()
    # every non-local job went through sbatch: the controller knows it, and it left a SLURM log
    ran = [j for j in cluster.jobs() if j["id"] not in before]
    jobs = {j["comment"]: j["state"] for j in ran}
    expected = {
        "rule_synth_textzoom",
        "rule_synth_str",
        "rule_train_wildcards_tsrn.tsrn",
        "rule_evaluate_wildcards_tsrn.tsrn_crnn_textzoom_test",
        "rule_evaluate_wildcards_bicubic_crnn_textzoom_test",
    }
    assert expected <= jobs.keys(), jobs
    assert all(j["state"] == "COMPLETED" for j in ran), ran
    assert "rule_table_wildcards_tsrn_table4" not in jobs  # a localrule stays on the submit host
    logs = list((tmp_path / ".snakemake" / "slurm_logs").rglob("*.log"))
    assert sorted(p.stem for p in logs) == sorted(j["id"] for j in ran)
    train_log = next(p for p in logs if "rule_train" in str(p) and "tsrn.tsrn" in str(p))
    text = train_log.read_text()
    assert "--executor slurm-jobstep" in text and "rule train:" in text


def test_preempted_training_job_resumes_on_retry(cluster, tmp_path):
    """SLURM's warning signal (`--signal=B:USR1@...` in the profile; sent here with scancel) ends
    the job; training checkpoints on the SIGTERM that follows, Snakemake resubmits (`retries`), and
    the new job resumes from the checkpoint."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["scales"]["smoke"]["sr"].update(steps=STEPS, checkpoint_every=10)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    synth = ["stisr", "--set", "source=embedded", "--set", "scale=smoke", "-q", "synth", "textzoom"]
    out = subprocess.run(
        [*synth, "--out", "data/embedded/smoke/textzoom"],
        cwd=tmp_path,
        env=cluster.env,
        capture_output=True,
        text=True,
    )  # locally: only the training job goes to SLURM here
    assert out.returncode == 0, out.stderr[-3000:]
    model = "runs/embedded-smoke/train/tsrn.tsrn/model.pt"
    ckpt = tmp_path / model.replace("model.pt", "checkpoints/last.pt")
    before = {j["id"] for j in cluster.jobs()}

    cmd_done: list[subprocess.CompletedProcess] = []
    worker = threading.Thread(target=lambda: cmd_done.append(_snakemake(cluster, tmp_path, model)))
    worker.start()
    deadline = time.monotonic() + 600
    while not ckpt.exists() and time.monotonic() < deadline and worker.is_alive():
        time.sleep(0.5)
    running = [j for j in cluster.jobs() if j["id"] not in before and j["state"] == "RUNNING"]
    assert ckpt.exists() and running, (cluster.jobs(), cmd_done)
    cluster.run("scancel", "--batch", "--signal=USR1", running[0]["id"])
    worker.join(timeout=900)
    out = cmd_done[0]
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-6000:]

    attempts = [j for j in cluster.jobs() if j["id"] not in before]
    assert [j["state"] for j in sorted(attempts, key=lambda j: int(j["id"]))] == [
        "FAILED",
        "COMPLETED",
    ], attempts
    # the log is the second attempt's: it resumed from the checkpoint the first one left
    log = (tmp_path / "logs/embedded-smoke/train/tsrn.tsrn.log").read_text()
    resumed = re.search(r"resuming tsrn/tsrn from step (\d+)", log)
    assert resumed and 10 <= int(resumed.group(1)) < STEPS, log[-2000:]
    metrics = json.loads((tmp_path / model).with_name("metrics.json").read_text())
    assert metrics["steps"] == STEPS
