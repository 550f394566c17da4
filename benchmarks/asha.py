"""What ASHA buys: the same search on the Ray actor pool and on the Ray Tune engine (ASHA on the
sample count), both with two workers on local Ray — wall time, draws sampled, and the winner's
held-out figure next to the best baseline's.

ASHA pays when evaluations are expensive and batches large; on a 2-core CPU with a small model
the per-trial cost of Tune weighs against it. Run it where evaluations take seconds or more.

    .venv/bin/python benchmarks/asha.py [--model builtin:digits] [--budget 64] [--samples 1000] [--batch 16]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from scaling import timed_search  # benchmarks/ is the script's folder, first on sys.path

from schedsearch.search.config import parse_config
from schedsearch.search.engines import LocalEngine, make_engine
from schedsearch.search.results import summarize
from schedsearch.storage import TrialState


def config(args: argparse.Namespace, kind: str, cache: str) -> Any:
    return parse_config({
        "name": f"asha-{kind}", "model": args.model, "nfe": 5, "budget": args.budget, "seed": args.seed,
        "strategy": {"name": "evolution", "batch_size": args.batch},
        "fidelity": {"samples": [args.samples]},
        "validation": {"top_k": 3, "baselines": 2, "samples": args.holdout, "seed": 1},
        "metrics": {"cache_dir": cache},
        "engine": {"kind": kind, "num_workers": 2, "threads": 1, "asha_eta": 3, "asha_levels": 3},
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:digits")
    parser.add_argument("--budget", type=int, default=64)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--holdout", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import ray

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = str(Path(tmp) / "cache")
        warm = config(args, "local", cache).with_overrides(budget=2, name="warm")
        timed_search(warm, LocalEngine(warm.evaluation_spec()), Path(tmp) / "warm.db")  # reference statistics
        # and the floor's solve, cached for both rows
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            for kind in ("ray", "tune"):
                cfg = config(args, kind, cache)
                engine = make_engine(cfg)
                try:
                    wall, outcome = timed_search(cfg, engine, Path(tmp) / f"{kind}.db")
                finally:
                    engine.close()
                trials = outcome.trials
                draws = sum(int(t.metrics.get("samples", t.fidelity or 0)) for t in trials
                            if t.state in (TrialState.COMPLETE, TrialState.PRUNED))
                pruned = sum(t.state is TrialState.PRUNED for t in trials)
                s = summarize(trials, outcome.objective, outcome.floor)[5]
                rows.append((kind, wall, len(trials), pruned, draws, s.winner.holdout if s.winner else None,
                             s.best_baseline.holdout if s.best_baseline else None))
        finally:
            ray.shutdown()
    print(f"{args.model}, NFE 5, evolution, budget {args.budget}, batches of {args.batch}, {args.samples} draws "
          f"per evaluation, held-out {args.holdout}; 2 workers")
    print(f"{'engine':<8}{'wall s':>8}{'trials':>8}{'pruned':>8}{'draws':>9}{'winner held-out':>17}"
          f"{'best baseline':>15}")
    for kind, wall, n, pruned, draws, win, base in rows:
        print(f"{kind:<8}{wall:>8.1f}{n:>8}{pruned:>8}{draws:>9}{win:>17.4g}{base:>15.4g}")
    ray_wall = rows[0][1]
    print(f"tune / ray: wall {rows[1][1] / ray_wall:.2f}, draws {rows[1][4] / rows[0][4]:.2f}")


if __name__ == "__main__":
    main()
