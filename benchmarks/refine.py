"""Learned refinement on held-out noise: refined schedules against the best baseline, the unrefined
search winner and the model's 100-step floor, with the cost of each refinement.

For every (model, guidance, NFE) row: a real search (search_quality.py's config, in-process)
gives the winner and the best baseline on held-out noise; both are then refined
(``schedsearch.search.refine``: teacher = the 100-step solve of a *training* noise set, seed
2, apart from the search noise 0 and the held-out noise 1) and measured on the same held-out
noise. Refinement minimises the L2 distance to the teacher; the table reports the objective
(FID / MMD) and metrics refinement never saw (FID in an independent classifier's features,
NLL). Per metric: value, ratio to the best baseline, share of the gap to the floor closed.

    .venv/bin/python benchmarks/refine.py                          # digits g1, g2 at NFE 3-5; gmm-8d at NFE 3-10
    .venv/bin/python benchmarks/refine.py --rows digits:1:5 --budget 60
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from schedsearch.search.config import parse_config
from schedsearch.search.context import HOLDOUT_NOISE, build_context
from schedsearch.search.engines import LocalEngine
from schedsearch.search.loop import SearchRun
from schedsearch.search.refine import RefineSettings, refine
from schedsearch.search.results import summarize
from schedsearch.solvers import Schedule
from schedsearch.storage import TrialStore

sys.path.insert(0, str(Path(__file__).parent))
from search_quality import gap, row_config  # noqa: E402  (one row config for both benchmarks)

ROWS = [f"digits:{g}:{n}" for g in (1, 2) for n in (3, 4, 5)] + [f"gmm-8d:1:{n}" for n in range(3, 11)]
SHOWN = {"digits": ("fid", "fid_b", "accuracy"), "gmm-8d": ("mmd", "nll")}
COLUMNS = ("baseline", "winner", "refined_baseline", "refined_winner")


def run_row(spec: str, args: argparse.Namespace, workdir: Path) -> dict:
    model, guidance, nfe = spec.split(":")
    config = parse_config(row_config(model, float(guidance), int(nfe), args))
    store = TrialStore.open(f"sqlite:///{workdir / 'bench.db'}")
    start = time.time()
    engine = LocalEngine(config.evaluation_spec())
    outcome = SearchRun(config, store, engine).run()
    store.close()
    search_minutes = (time.time() - start) / 60
    s = summarize(outcome.trials, outcome.objective, outcome.floor)[int(nfe)]
    floor = s.floor.get("holdout", {})
    spec_eval = config.evaluation_spec()
    context = build_context(spec_eval)
    settings = RefineSettings(iterations=args.iterations, samples=args.train_samples, seed=2,
                              guidance_scale=spec_eval.guidance_scale, cache_root=workdir / "cache")
    figures = {"baseline": dict(s.best_baseline.metrics), "winner": dict(s.winner.metrics)}
    labels = {"baseline": s.best_baseline.label, "winner": s.winner.label}
    cost = {}
    for name, source in (("refined_baseline", s.best_baseline), ("refined_winner", s.winner)):
        schedule = Schedule.from_dict(source.schedule)
        cpu = time.process_time()
        result = refine(context.model, schedule, settings)
        cost[name] = {"seconds": result.seconds, "cpu_seconds": time.process_time() - cpu,
                      "iterations": result.iterations, "loss": [result.initial_loss, result.loss]}
        figures[name] = context.evaluate(result.schedule, spec_eval.holdout_samples, HOLDOUT_NOISE).metrics
    out = {"row": spec, "objective": outcome.objective, "labels": labels, "search_minutes": search_minutes,
           "cost": cost, "metrics": {}}
    for m in SHOWN[model]:
        if all(m in figures[c] for c in COLUMNS) and m in floor:
            base = figures["baseline"][m]
            out["metrics"][m] = {"floor": floor[m], **{c: figures[c][m] for c in COLUMNS},
                                 **{f"gap_{c}": gap(m, figures[c][m], base, floor[m]) for c in COLUMNS[1:]},
                                 **{f"ratio_{c}": figures[c][m] / base if base else None for c in COLUMNS[1:]}}
    return out


def print_row(r: dict) -> None:
    cost = "; ".join(f"{k} {v['seconds']:.0f} s ({v['cpu_seconds'] / 60:.1f} CPU min, {v['iterations']} it)"
                     for k, v in r["cost"].items())
    print(f"{r['row']:<14} objective {r['objective']}: baseline {r['labels']['baseline']}, "
          f"winner {r['labels']['winner']}; search {r['search_minutes']:.1f} min; refine: {cost}")
    print(f"  {'metric':<9}{'floor':>9}{'baseline':>10}{'winner':>10}{'ref.base':>10}{'ref.win':>10}"
          f"{'ratio':>8}{'gap':>6}   (ratio, gap: best refined vs baseline)")
    for m, v in r["metrics"].items():
        best = min(("refined_baseline", "refined_winner"), key=lambda c: -(v[f"gap_{c}"] or -1e9))
        closed = v[f"gap_{best}"]
        print(f"  {m:<9}{v['floor']:>9.4g}{v['baseline']:>10.4g}{v['winner']:>10.4g}{v['refined_baseline']:>10.4g}"
              f"{v['refined_winner']:>10.4g}{(v[f'ratio_{best}'] or float('nan')):>8.3f}"
              f"{(100 * closed) if closed is not None else float('nan'):>5.0f}%")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated model:guidance:nfe")
    parser.add_argument("--budget", type=int, default=120, help="search evaluations per row")
    parser.add_argument("--strategy", default="evolution")
    parser.add_argument("--objective", default=None)
    parser.add_argument("--samples", type=lambda t: [int(v) for v in t.split(",")], default=[250, 1000])
    parser.add_argument("--holdout", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=200, help="refinement steps")
    parser.add_argument("--train-samples", type=int, default=600, help="training draws of the teacher")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="append every row as a JSON line here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.rows.split(","):
            r = run_row(spec, args, Path(tmp))
            print_row(r)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
