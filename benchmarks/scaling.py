"""Search throughput against the number of Ray nodes: one real search per row, on a Ray cluster
of N single-CPU worker nodes started on this machine (``ray.cluster_utils.Cluster``), next to
the in-process engine — then, in the same run, the per-trial overhead of the actor pool against
the Ray Tune engine (``engine_overhead.py``'s measurement, on the 8-D mixture).

Each row runs the same seeded search (the same trials, so the same work) and reports its wall
time, trials per minute, the speed-up over one node and the parallel efficiency. The head
node holds no CPU, so every evaluation runs on a worker node. On a 2-core machine the rows
beyond 2 nodes measure oversubscription, not scaling; run it where there are cores to spare.

    .venv/bin/python benchmarks/scaling.py [--model builtin:digits] [--budget 40] [--nodes 1 2 4]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from schedsearch.search.config import parse_config
from schedsearch.search.engines import LocalEngine
from schedsearch.search.engines.ray_pool import RayEngine
from schedsearch.search.loop import SearchRun
from schedsearch.storage import TrialStore


def config(model: str, budget: int, samples: int, cache: str) -> Any:
    return parse_config({
        "name": "scaling", "model": model, "nfe": 5, "budget": budget, "seed": 0,
        "strategy": {"name": "evolution", "batch_size": 8},
        "baselines": {"solvers": ["dpmpp_2m", "unipc_bh2"], "grids": ["uniform_lambda"]},
        "fidelity": {"samples": [samples]},
        "validation": {"top_k": 2, "baselines": 1, "samples": samples, "seed": 1},
        "metrics": {"cache_dir": cache},
        "engine": {"threads": 1},
    })


def timed_search(cfg: Any, engine: Any, db: Path) -> tuple[float, Any]:
    """(wall seconds, outcome) of one whole search into a new SQLite file."""
    store = TrialStore.open(f"sqlite:///{db}")
    try:
        start = time.perf_counter()
        outcome = SearchRun(cfg, store, engine).run()
        return time.perf_counter() - start, outcome
    finally:
        store.close()


def measured(outcome: Any) -> tuple[int, list[str]]:
    """The trials with an objective, and the workers that measured them."""
    trials = [t for t in outcome.trials if t.objective is not None]
    return len(trials), sorted({t.worker or "" for t in trials})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:digits")
    parser.add_argument("--budget", type=int, default=40)
    parser.add_argument("--samples", type=int, default=250)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--overhead-trials", type=int, default=32, help="jobs for the pool-vs-Tune overhead rows")
    args = parser.parse_args()

    import ray
    from ray.cluster_utils import Cluster

    rows: list[tuple[str, float, int, int]] = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config(args.model, args.budget, args.samples, str(Path(tmp) / "cache"))
        warm = config(args.model, 2, args.samples, str(Path(tmp) / "cache"))
        timed_search(warm, LocalEngine(warm.evaluation_spec()), Path(tmp) / "warm.db")  # fills the cache: the
        # reference statistics and the floor's solve, which every row then reads instead of computing
        wall, outcome = timed_search(cfg, LocalEngine(cfg.evaluation_spec()), Path(tmp) / "local.db")
        n, _ = measured(outcome)
        rows.append(("in-process", wall, n, 0))
        for nodes in args.nodes:
            cluster = Cluster(initialize_head=True, connect=False,
                              head_node_args={"num_cpus": 0, "include_dashboard": False})
            for _ in range(nodes):
                cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
            ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
            try:
                pool = RayEngine(cfg.evaluation_spec())  # follows the cluster: one worker per node here
                try:
                    wall, outcome = timed_search(cfg, pool, Path(tmp) / f"ray{nodes}.db")
                    n, workers = measured(outcome)
                finally:
                    pool.close()
            finally:
                ray.shutdown()
                cluster.shutdown()
            rows.append((f"ray, {nodes} node{'s' if nodes > 1 else ''}", wall, n, len(workers)))

    one = next((r for r in rows if r[0] == "ray, 1 node"), None)
    print(f"{args.model}, NFE 5, budget {args.budget}, {args.samples} samples per evaluation "
          "(wall time of the whole search, validation included)")
    print(f"{'engine':<14} {'workers':>7} {'evaluations':>11} {'wall s':>8} {'per min':>8} "
          f"{'speed-up vs 1 node':>18} {'efficiency':>10}")
    for name, wall, n, workers in rows:
        rate = 60.0 * n / wall
        speed = "" if one is None else f"{one[1] / wall:.2f}"
        eff = "" if one is None or not workers else f"{one[1] / wall / workers:.0%}"
        print(f"{name:<14} {workers or 1:>7} {n:>11} {wall:>8.1f} {rate:>8.1f} {speed:>18} {eff:>10}")
    overhead(args.overhead_trials)


def overhead(trials: int) -> None:
    """Per-trial overhead of the actor pool and of the Tune engine (as the loop drives each), one worker."""
    import ray

    sys.path.insert(0, str(Path(__file__).parent))
    from engine_overhead import jobs, run_batches, run_engine

    from schedsearch.search.engines.tune import TuneEngine

    spec = parse_config({"name": "overhead", "model": "builtin:gmm-8d", "nfe": 5, "budget": 1,
                         "fidelity": {"samples": [256]}}).evaluation_spec()
    work = jobs(trials, 256)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        with RayEngine(spec, num_workers=1) as pool:
            pool_wall, pool_eval = run_engine(pool, work)
        tune = TuneEngine(spec, num_workers=1, levels=1)
        tune_wall, tune_eval = run_batches(tune, work, 16)
    finally:
        ray.shutdown()
    pool_ms, tune_ms = 1000 * (pool_wall - pool_eval), 1000 * (tune_wall - tune_eval)
    print(f"per-trial overhead (gmm-8d, 256 draws, one worker, {trials} jobs): actor pool {pool_ms:.2f} ms, "
          f"Tune engine in batches of 16 {tune_ms:.1f} ms — {tune_ms / pool_ms:.0f}x the pool")


if __name__ == "__main__":
    main()
