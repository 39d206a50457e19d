"""shapiq's Shapley approximators on the benchmark games; run by bench_solver.py in .venv-shapiq (Python >= 3.12).

    .venv-shapiq/bin/python benchmarks/bench_shapiq_worker.py REQUEST.json RESULT.json

REQUEST holds {"games": [[kind, M, seed], ...], "budgets": [...], "seeds": N}; the games are rebuilt from
their specs by solver_games (pure numpy, shared with bench_solver.py). RESULT receives
{approximator: {"phi": {"<game name>|<budget>": [[phi_0..phi_M-1] per seed]}, "seconds": total}};
an approximator that raises for a cell (e.g. a budget below its minimum) records null for that cell.
Progress goes to stderr, one line per approximator and game.
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import shapiq  # noqa: E402
from shapiq import approximator as approx  # noqa: E402

from solver_games import GameSpec, game_value  # noqa: E402


def approximators(n: int, budget: int, seed: int) -> dict:
    """Every Shapley-value approximator shapiq 1.8 ships for the SV index (SPEX, ProxySPEX and ShaplEIG need
    extras we do not install: sparse-transform/galois and torch/gpytorch), each in its documented default
    configuration plus the variants its docs recommend for Shapley values (pairing on, higher orders)."""
    triples = n + math.comb(n, 2) + math.comb(n, 3) + 1
    return {
        "KernelSHAP": lambda: approx.KernelSHAP(n, pairing_trick=True, random_state=seed),
        "kADD-SHAP": lambda: approx.kADDSHAP(n, max_order=2, pairing_trick=True, random_state=seed),
        "LeverageSHAP": lambda: approx.LeverageSHAP(n, random_state=seed),
        "PolySHAP-3": lambda: approx.PolySHAP(n, max_order=3, max_terms=max(n + 1, min(triples, budget // 2)),
                                              pairing_trick=True, random_state=seed),
        "OddSHAP": lambda: approx.OddSHAP(n, random_state=seed),
        "RegressionMSR": lambda: approx.RegressionMSR(n, index="SV", random_state=seed),
        "ProxySHAP": lambda: approx.ProxySHAP(n, max_order=1, index="SV", random_state=seed),
        "SVARM": lambda: approx.SVARM(n, index="SV", pairing_trick=True, random_state=seed),
        "UnbiasedKernelSHAP": lambda: approx.UnbiasedKernelSHAP(n, pairing_trick=True, random_state=seed),
        "Permutation": lambda: approx.PermutationSamplingSV(n, random_state=seed),
        "Stratified": lambda: approx.StratifiedSamplingSV(n, random_state=seed),
        "Owen": lambda: approx.OwenSamplingSV(n, random_state=seed),
    }


def shapley_values(values, n: int) -> list[float]:
    """The first-order values phi (n,) of a shapiq InteractionValues."""
    return [float(values[(j,)]) for j in range(n)]


def main() -> None:
    request = json.loads(Path(sys.argv[1]).read_text())
    specs = [GameSpec(kind, n, seed) for kind, n, seed in request["games"]]
    names = list(approximators(2, 64, 0))
    only = request.get("approximators") or names
    result = {name: {"phi": {}, "seconds": 0.0} for name in only}
    warnings.filterwarnings("ignore")
    for spec in specs:
        game = game_value(spec)
        value = lambda Z, game=game: game(np.atleast_2d(np.asarray(Z, dtype=bool)))  # noqa: E731 (samplers pass one row)
        for name in only:
            started = time.process_time()
            for budget in request["budgets"]:
                runs = []
                for seed in range(request["seeds"]):
                    try:
                        estimate = approximators(spec.n, budget, seed)[name]().approximate(budget, value)
                        runs.append(shapley_values(estimate, spec.n))
                    except Exception as error:  # noqa: BLE001 (a cell an approximator cannot do is recorded)
                        print(f"{name} {spec.name} budget {budget}: {type(error).__name__}: {error}", file=sys.stderr)
                        runs = None
                        break
                result[name]["phi"][f"{spec.name}|{budget}"] = runs
            result[name]["seconds"] += time.process_time() - started
            print(f"shapiq {shapiq.__version__} {name:18s} {spec.name:24s} "
                  f"{time.process_time() - started:7.1f} s", file=sys.stderr, flush=True)
            Path(sys.argv[2]).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
