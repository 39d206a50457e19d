"""The KernelSHAP solver, numpy only (no torch, nnunetv2, scipy or slicer).

- ``plan``:        coalition plans fixed by (M, budget, seed), nested across budgets: prefixes of one paired sequence.
- ``store``:       the in-memory store of evaluated coalition values (resume).
- ``fit``:         exact Shapley values and the efficiency-constrained weighted regression.
- ``diagnostics``: standard errors, held-out R^2, convergence forecast.
- ``control``:     the zoom's control variate: the exact parent game with each refined unit's measured cells.
- ``kernelshap``:  ``kernel_shap(value_fn, M, budget, ...)``, the entry point.
"""

from SegSHAPLib.shapley.kernelshap import KernelShapResult, kernel_shap

__all__ = ["kernel_shap", "KernelShapResult"]
