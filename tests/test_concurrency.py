"""Two search drivers and a reader on one database at once — a SQLite file and a PostgreSQL server —
as real processes: no lock error reaches the user, and each search records exactly the trials it
records alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml
from schedsearch.search.config import parse_config
from schedsearch.search.engines import LocalEngine
from schedsearch.search.loop import SearchRun
from schedsearch.storage import TrialStore

from tests.helpers import trial_fingerprint

SCRIPT = Path(sys.executable).with_name("schedsearch")
BASE = {
    "model": "builtin:gmm-8d", "nfe": 4, "budget": 24, "seed": 0,
    "strategy": {"name": "evolution", "batch_size": 2},
    "baselines": {"solvers": ["dpmpp_2m", "unipc_bh2", "ipndm"], "grids": ["uniform_lambda"]},
    "fidelity": {"samples": [800]},
    "validation": {"top_k": 1, "baselines": 1, "samples": 800, "seed": 1},
    "metrics": {"cache_dir": None, "reference_steps": 40},
    "engine": {"threads": 1},
}


def test_two_drivers_and_a_reader_share_one_database(store_url, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    configs = {}
    drivers = []
    for name, seed in (("left", 0), ("right", 1)):
        configs[name] = {**BASE, "name": name, "seed": seed}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(configs[name]))
        drivers.append(subprocess.Popen(
            [str(SCRIPT), "search", str(tmp_path / f"{name}.yaml"), "--db", store_url, "-q",
             "-o", str(tmp_path / name)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    reads, refused = 0, []
    while all(d.poll() is None for d in drivers):
        out = subprocess.run([str(SCRIPT), "trials", "left", "--db", store_url, "--format", "json"],
                             capture_output=True, text=True, env=env, timeout=120)
        if out.returncode == 0:
            json.loads(out.stdout)
            reads += 1
        elif not any(m in out.stderr for m in ("no search named", "not a schedsearch database", "not found")):
            refused.append(out.stderr)  # not yet created is fine; anything else is not
        time.sleep(0.1)
    results = [d.communicate() for d in drivers]
    for driver, (_, err) in zip(drivers, results):
        assert driver.returncode == 0, err
        assert "locked" not in err.lower() and "warning" not in err.lower(), err
    assert not refused, refused
    assert reads >= 1  # while both drivers wrote

    store = TrialStore.open(store_url, create=False)
    shared = {name: store.trials(store.get_search(name)) for name in configs}
    store.close()
    for name, cfg in configs.items():  # alone, on a file of its own: the same trials
        parsed = parse_config(cfg)
        alone = TrialStore.open(f"sqlite:///{tmp_path / f'{name}-alone.db'}")
        outcome = SearchRun(parsed, alone, LocalEngine(parsed.evaluation_spec())).run()
        alone.close()
        assert trial_fingerprint(shared[name]) == trial_fingerprint(outcome.trials)
