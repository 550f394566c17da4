"""Search quality on held-out noise: the searched winner against the best baseline and the model's floor.

For every (model, guidance, NFE) row a real search runs (the config below, in-process), then
the winner and the best baseline are compared on held-out noise (another seed, 2,000+
samples) under the objective *and* under metrics the search never optimised (KID,
precision/recall, class accuracy, RMSE to the 100-step solution, FID in an independently
trained classifier's feature space). Per metric: ratio winner / best baseline and the share
of the gap (best baseline − floor) the winner closes.

    .venv/bin/python benchmarks/search_quality.py                       # the whole table
    .venv/bin/python benchmarks/search_quality.py --rows digits:1:5 --budget 200
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from schedsearch.search.config import parse_config
from schedsearch.search.engines import LocalEngine
from schedsearch.search.loop import SearchRun
from schedsearch.search.metrics.quality import LOWER_IS_BETTER
from schedsearch.search.results import summarize
from schedsearch.storage import TrialStore

DIGITS_ROWS = [f"digits:{g}:{n}" for g in (1, 2) for n in (3, 4, 5, 6, 8)]
GMM_ROWS = [f"gmm-8d:1:{n}" for n in range(3, 11)]
SHOWN = {"digits": ("fid", "fid_b", "kid", "precision", "recall", "accuracy", "ref_rmse"),
         "gmm-8d": ("mmd", "nll", "ref_rmse")}


def row_config(model: str, guidance: float, nfe: int, args: argparse.Namespace) -> dict:
    digits = model == "digits"
    config = {
        "name": f"{model}-g{guidance:g}-nfe{nfe}",
        "model": f"builtin:{model}",
        "nfe": nfe,
        "budget": args.budget,
        "seed": args.seed,
        "guidance_scale": guidance if guidance != 1 else None,
        "strategy": {"name": args.strategy, "batch_size": 4},
        "baselines": {"solvers": ["dpmpp_2m", "dpmpp_3m", "unipc_bh1", "unipc_bh2", "ipndm", "unip_bh1"],
                      "grids": ["uniform_lambda", "quadratic", "karras", "uniform_t"]},
        "fidelity": {"samples": args.samples if digits else [1000, 4000], "eta": 3},
        "validation": {"top_k": 4, "baselines": 4, "samples": args.holdout if digits else 8000, "seed": 1},
    }
    if args.objective:
        config["objective"] = args.objective
    return config


def gap(objective: str, winner: float, baseline: float, floor: float) -> float | None:
    sign = 1.0 if objective in LOWER_IS_BETTER else -1.0
    g = sign * (baseline - floor)
    return None if g <= 0 else sign * (baseline - winner) / g


def run_row(spec: str, args: argparse.Namespace, workdir: Path) -> dict:
    model, guidance, nfe = spec.split(":")
    config = parse_config(row_config(model, float(guidance), int(nfe), args))
    store = TrialStore.open(f"sqlite:///{workdir / 'bench.db'}")
    start, cpu = time.time(), time.process_time()
    engine = LocalEngine(config.evaluation_spec())
    outcome = SearchRun(config, store, engine).run()
    store.close()
    s = summarize(outcome.trials, outcome.objective, outcome.floor)[int(nfe)]
    w, b, floor = s.winner, s.best_baseline, s.floor.get("holdout", {})
    searched_best = s.searched[0] if s.searched else None
    out = {"row": spec, "objective": outcome.objective, "winner": w.label, "baseline": b.label,
           "evaluations": len([t for t in outcome.trials]), "minutes": (time.time() - start) / 60,
           "cpu_minutes": (time.process_time() - cpu) / 60, "metrics": {}}
    for m in SHOWN[model]:
        if m in w.metrics and m in b.metrics and m in floor:
            cand = searched_best.metrics.get(m) if searched_best else None
            out["metrics"][m] = {"winner": w.metrics[m], "best_searched": cand, "baseline": b.metrics[m],
                                 "floor": floor[m], "ratio": w.metrics[m] / b.metrics[m] if b.metrics[m] else None,
                                 "gap_closed": gap(m, w.metrics[m], b.metrics[m], floor[m]),
                                 "gap_closed_searched": None if cand is None else gap(m, cand, b.metrics[m], floor[m])}
    return out


def print_row(r: dict) -> None:
    head = (f"{r['row']:<14} objective {r['objective']}: winner {r['winner']} vs {r['baseline']}; "
            f"{r['evaluations']} trials, {r['minutes']:.1f} min")
    print(head)
    print(f"  {'metric':<10}{'baseline':>11}{'winner':>11}{'floor':>11}{'ratio':>8}{'gap':>7}")
    for m, v in r["metrics"].items():
        closed = v["gap_closed"]
        print(f"  {m:<10}{v['baseline']:>11.4g}{v['winner']:>11.4g}{v['floor']:>11.4g}"
              f"{(v['ratio'] or float('nan')):>8.3f}{(100 * closed) if closed is not None else float('nan'):>6.0f}%")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(DIGITS_ROWS + GMM_ROWS),
                        help="comma-separated model:guidance:nfe (default: the whole table)")
    parser.add_argument("--budget", type=int, default=300)
    parser.add_argument("--strategy", default="evolution")
    parser.add_argument("--objective", default=None)
    parser.add_argument("--samples", type=lambda t: [int(v) for v in t.split(",")], default=[250, 1000])
    parser.add_argument("--holdout", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="append every row as a JSON line here")
    run_rows(parser.parse_args(), run_row, print_row)


def run_rows(args: argparse.Namespace, run: Callable[[str, argparse.Namespace, Path], dict],
             show: Callable[[dict], None]) -> None:
    """Every row of ``--rows`` in one temporary store, printed as it ends (and kept as a JSON line in ``--json``)."""
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.rows.split(","):
            r = run(spec, args, Path(tmp))
            show(r)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
