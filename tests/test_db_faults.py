"""Database faults under a running search: a PostgreSQL server stopped for longer than 10 s and
started again. The search waits, says so in one line, and ends with exactly the trials a search
that saw no fault records — nothing lost, nothing duplicated."""

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
from schedsearch.storage import TrialState, TrialStore

from tests.helpers import free_port, trial_fingerprint

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("schedsearch")
CONFIG = {
    "name": "faulty", "model": "builtin:gmm-8d", "nfe": 4, "budget": 40, "seed": 3,
    "strategy": {"name": "evolution", "batch_size": 4},
    "baselines": {"solvers": ["dpmpp_2m", "unipc_bh2", "ipndm"], "grids": ["uniform_lambda", "quadratic"]},
    "fidelity": {"samples": [300, 900], "eta": 3},
    "validation": {"top_k": 2, "baselines": 2, "samples": 1000, "seed": 1},
    "metrics": {"cache_dir": None, "reference_steps": 40},
    "engine": {"threads": 1},
}


class Server:
    """A PostgreSQL server of our own (its own port and data directory), started by ``.ci/postgres``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.env = {**os.environ, "SCHEDSEARCH_PG_PORT": str(self.port),
                    "SCHEDSEARCH_PG_DIR": f"/tmp/schedsearch-pg-fault-{self.port}"}

    def _ci(self, *args: str) -> str:
        out = subprocess.run(["bash", str(REPO / ".ci" / "postgres"), *args], env=self.env, capture_output=True,
                             text=True, timeout=300)
        if out.returncode != 0:
            raise RuntimeError(out.stderr.strip())
        return out.stdout.strip()

    def start(self, keep: bool = False) -> str:
        return self._ci(*(["start"] if keep else []))

    def stop(self) -> None:
        self._ci("stop")

    def remove(self) -> None:
        subprocess.run(["rm", "-rf", self.env["SCHEDSEARCH_PG_DIR"]], check=False)


@pytest.fixture
def server():
    srv = Server()
    try:
        url = srv.start()
    except RuntimeError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no PostgreSQL server to start here: {exc}")
    srv.url = url
    yield srv
    srv.stop()
    srv.remove()


def test_a_postgresql_restart_mid_search_is_waited_out_and_loses_nothing(server, tmp_path):
    (tmp_path / "faulty.yaml").write_text(yaml.safe_dump(CONFIG))
    url = server.url
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([str(SCRIPT), "search", str(tmp_path / "faulty.yaml"), "--db", url, "-q",
                             "-o", str(tmp_path / "out")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                store = TrialStore.open(url, create=False, read_only=True, retry_for=0)
            except Exception:  # noqa: BLE001 - the search has not created its tables yet
                time.sleep(0.2)
                continue
            try:
                if store.count_trials(store.get_search("faulty"))[TrialState.COMPLETE] >= 12:
                    break
            except Exception:  # noqa: BLE001 - nor its search
                pass
            finally:
                store.close()
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        server.stop()
        down = time.monotonic()
        time.sleep(12)
        assert proc.poll() is None, "the search gave up while the database was down"
        server.start(keep=True)
        out, err = proc.communicate(timeout=300)
        outage = time.monotonic() - down
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert outage > 10
    warnings = [line for line in err.splitlines() if "database" in line]
    assert any("unavailable" in line and "retrying" in line for line in warnings), err
    assert any("back after" in line for line in warnings), err
    assert len(warnings) <= 4, err  # one line when it goes, one when it is back (per outage), not one per attempt

    store = TrialStore.open(url, create=False)
    faulted = store.trials(store.get_search("faulty"))
    store.close()
    assert all(t.state in (TrialState.COMPLETE, TrialState.FAILED) for t in faulted)
    assert [t.number for t in faulted] == list(range(len(faulted)))
    keys = Counter((t.schedule_hash, t.fidelity, t.stage.value) for t in faulted)
    assert max(keys.values()) == 1  # nothing duplicated

    # the same search on a SQLite file, without a fault: the very same trials (nothing lost)
    cfg = parse_config(CONFIG)
    clean = TrialStore.open(f"sqlite:///{tmp_path / 'clean.db'}")
    outcome = SearchRun(cfg, clean, LocalEngine(cfg.evaluation_spec())).run()
    clean.close()
    assert trial_fingerprint(faulted) == trial_fingerprint(outcome.trials)
