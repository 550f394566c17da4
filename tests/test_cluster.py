"""A search on a multi-node Ray cluster, started on this machine by the test (``ray.cluster_utils``),
driven by a real ``schedsearch`` process that joins it by address: trials measured on several
nodes, a node removed and another added mid-search, the head node stopped — and every time the
trials are exactly those of the in-process engine, nothing lost, nothing duplicated."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from schedsearch.search.config import parse_config
from schedsearch.search.engines import LocalEngine
from schedsearch.search.loop import SearchRun
from schedsearch.storage import Stage, TrialState, TrialStore

from tests.helpers import trial_fingerprint

SCRIPT = Path(sys.executable).with_name("schedsearch")
CONFIG = {
    "name": "spread", "model": "builtin:gmm-8d", "nfe": 4, "budget": 48, "seed": 5,
    "strategy": {"name": "evolution", "batch_size": 3},
    "baselines": {"solvers": ["dpmpp_2m", "unipc_bh2", "ipndm"], "grids": ["uniform_lambda", "quadratic"]},
    "fidelity": {"samples": [3000]},
    "validation": {"top_k": 2, "baselines": 2, "samples": 3000, "seed": 1},
    "metrics": {"cache_dir": None, "reference_steps": 40},
    "engine": {"kind": "ray", "num_cpus": 1, "threads": 1, "rescan_s": 1.0, "head_timeout_s": 2.0},
}


def in_process(tmp_path: Path) -> list:
    cfg = parse_config({**CONFIG, "engine": {"threads": 1}})
    store = TrialStore.open(f"sqlite:///{tmp_path / 'local.db'}")
    try:
        return SearchRun(cfg, store, LocalEngine(cfg.evaluation_spec())).run().trials
    finally:
        store.close()


def start_cluster(worker_nodes: int):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={"num_cpus": 1, "include_dashboard": False})
    nodes = [cluster.add_node(num_cpus=1) for _ in range(worker_nodes)]
    cluster.wait_for_nodes()
    return cluster, nodes


def driver(tmp_path: Path, url: str, address: str, *command: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen([str(SCRIPT), *command, "--db", url, "--ray-address", address, "-q",
                             "-o", str(tmp_path / "out")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for(url: str, proc: subprocess.Popen, complete: int, timeout: float = 300) -> list:
    """The trials once ``complete`` of them are complete (the driver still running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            store = TrialStore.open(url, create=False, read_only=True)
        except Exception:  # noqa: BLE001 - not created yet
            time.sleep(0.3)
            continue
        try:
            trials = store.trials(store.get_search("spread"))
        except Exception:  # noqa: BLE001
            trials = []
        finally:
            store.close()
        if sum(t.state is TrialState.COMPLETE for t in trials) >= complete:
            return trials
        time.sleep(0.3)
    raise AssertionError(f"fewer than {complete} trials completed in {timeout:.0f} s")


def node_of(worker: str) -> str:
    return worker.split(":")[2]  # ray:<host>:<node id prefix>:<pid>


def measured(trials) -> list:
    return [t for t in trials if t.state is TrialState.COMPLETE and (t.worker or "").startswith("ray:")]


def check_whole(trials, expected) -> None:
    assert all(t.state in (TrialState.COMPLETE, TrialState.FAILED) for t in trials)
    keys = Counter((t.schedule_hash, t.fidelity, t.stage.value) for t in trials)
    assert max(keys.values()) == 1  # nothing duplicated
    budgeted = [t for t in trials if t.stage is not Stage.HOLDOUT]
    assert len(budgeted) == CONFIG["budget"]
    assert trial_fingerprint(trials) == trial_fingerprint(expected)  # nothing lost: the in-process trials


@pytest.fixture(scope="module")
def expected(tmp_path_factory):
    return in_process(tmp_path_factory.mktemp("local"))


def test_a_search_spreads_over_nodes_and_survives_a_node_leaving_and_one_joining(tmp_path, expected):
    cluster, nodes = start_cluster(worker_nodes=2)
    try:
        (tmp_path / "spread.yaml").write_text(yaml.safe_dump(CONFIG))
        url = f"sqlite:///{tmp_path / 'cluster.db'}"
        proc = driver(tmp_path, url, cluster.address, "search", str(tmp_path / "spread.yaml"))
        try:
            before = wait_for(url, proc, complete=6)
            joined = cluster.add_node(num_cpus=1)
            wait_for(url, proc, complete=12)
            cluster.remove_node(nodes[0])  # its worker dies, perhaps with a trial in flight
            out, err = proc.communicate(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, err
        assert "3 workers, following the cluster on 3 nodes" in err, err
        store = TrialStore.open(url, create=False)
        trials = store.trials(store.get_search("spread"))
        store.close()
        check_whole(trials, expected)
        early = {node_of(t.worker) for t in measured(before)}
        assert len(early) >= 2, early  # trials from workers on several nodes
        late = {node_of(t.worker) for t in measured(trials)}
        assert joined.node_id[:8] in late, (joined.node_id, late)  # the node that joined got a worker
    finally:
        cluster.shutdown()


def test_the_head_stopping_ends_the_driver_in_one_line_and_resume_finishes_on_a_new_cluster(tmp_path, expected):
    (tmp_path / "spread.yaml").write_text(yaml.safe_dump(CONFIG))
    url = f"sqlite:///{tmp_path / 'cluster.db'}"
    cluster, _ = start_cluster(worker_nodes=1)
    try:
        proc = driver(tmp_path, url, cluster.address, "search", str(tmp_path / "spread.yaml"))
        try:
            wait_for(url, proc, complete=10)
            cluster.head_node.kill_all_processes(check_alive=False, allow_graceful=False)
            out, err = proc.communicate(timeout=180)
        finally:
            if proc.poll() is None:
                proc.kill()
    finally:
        cluster.shutdown()
    assert proc.returncode == 1, err
    lines = [line for line in err.strip().splitlines() if line.startswith("schedsearch")]
    assert len(lines) == 1 and "lost the Ray cluster" in lines[0] and "resume" in lines[0], err
    assert "Traceback" not in err, err
    store = TrialStore.open(url, create=False)
    search = store.get_search("spread")
    assert search.status == "interrupted"
    assert not store.trials(search, state=TrialState.RUNNING)
    store.close()

    cluster, _ = start_cluster(worker_nodes=1)
    try:
        proc = driver(tmp_path, url, cluster.address, "resume", "spread")
        out, err = proc.communicate(timeout=600)
    finally:
        cluster.shutdown()
    assert proc.returncode == 0, err
    store = TrialStore.open(url, create=False)
    check_whole(store.trials(store.get_search("spread")), expected)
    store.close()
