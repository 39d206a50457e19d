"""Shapley values from evaluated coalitions: exact enumeration and the constrained KernelSHAP regression.

KernelSHAP (Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions", NeurIPS 2017) finds
phi minimising sum_z pi(z) (v(z) - v(0) - z . phi)^2 subject to sum_j phi_j = v(1) - v(0), with the
Shapley kernel pi(z) = (M - 1) / (C(M, |z|) |z| (M - |z|)). Over all 2^M coalitions the minimiser is the
Shapley value; here the sum runs over the plan's coalitions with stratum weights: a coalition of size s
gets (M - 1) / (s (M - s)) / n_s, the kernel mass of its size shared by the n_s coalitions of that size
in the fit. For a size enumerated in full that is pi(z) exactly; for a sampled size it is the
importance weight of sampling without replacement with equal inclusion probabilities (Horvitz &
Thompson, "A Generalization of Sampling Without Replacement From a Finite Universe", JASA 1952).

The constraint is eliminated exactly: phi = (Delta / M) 1 + Q beta, where Q (M, M-1) is the orthonormal
Helmert basis of the plane sum(phi) = 0 and beta solves an unconstrained weighted least-squares problem,
so the efficiency constraint holds to rounding whatever the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from SegSHAPLib.shapley.plan import pair_count

RANK_TOLERANCE = 1e-10


@dataclass(frozen=True)
class Fit:
    """One constrained KernelSHAP fit.

    Attributes:
        phi: (M,) attributions, sum(phi) = v(full) - v(empty).
        singular_values: (r,) nonzero singular values of the weighted design sqrt(w) Z Q, descending.
        std_error: (M,) Taylor-linearisation (sandwich) standard errors for the stratified pair design,
            inf when the sample leaves no degrees of freedom (see _sandwich_std_error).
    """

    phi: np.ndarray
    singular_values: np.ndarray
    std_error: np.ndarray


def helmert_basis(n_features: int) -> np.ndarray:
    """Orthonormal basis (M, M-1) of {x : sum(x) = 0}: column k averages units 0..k minus unit k+1."""
    k = np.arange(1, n_features)
    basis = np.where(np.arange(n_features)[:, None] < k[None, :], 1.0, 0.0)
    basis[k, k - 1] = -k
    return basis / np.sqrt(k * (k + 1.0))


def exact_shapley(masks: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Shapley values (M,) from all 2^M coalitions, masks bool (2^M, M) in any order, values (2^M,).

    phi_j = sum_{S not containing j} |S|! (M - |S| - 1)! / M! (v(S + j) - v(S)): every coalition z enters
    with +v(z) / (M C(M-1, |z|-1)) for its members and -v(z) / (M C(M-1, |z|)) for the others.
    """
    n_features = masks.shape[1]
    sizes = masks.sum(axis=1)
    per_size = np.array([1.0 / (n_features * math.comb(n_features - 1, s)) for s in range(n_features)] + [0.0])
    gain = values * np.concatenate([[0.0], per_size])[sizes]
    loss = values * per_size[sizes]
    return masks.T.astype(float) @ gain - (~masks).T.astype(float) @ loss


def size_weights(masks: np.ndarray) -> np.ndarray:
    """Stratum weights (n,) of interior coalitions masks bool (n, M): kernel mass of the size / its count."""
    n_features = masks.shape[1]
    sizes = masks.sum(axis=1)
    mass = np.array([(n_features - 1) / (s * (n_features - s)) if 0 < s < n_features else 0.0
                     for s in range(n_features + 1)])
    counts = np.bincount(sizes, minlength=n_features + 1)
    return mass[sizes] / np.maximum(counts[sizes], 1)


def fit(masks: np.ndarray, gains: np.ndarray, delta: float, residual: np.ndarray | None = None,
        parameters: float | None = None, influence: np.ndarray | None = None) -> Fit:
    """Constrained KernelSHAP fit on interior coalitions, by the normal equations in the Helmert basis.

    The design is well conditioned by construction (condition numbers near 1 once there are a few pairs
    per unit), so the normal equations lose nothing that matters and stay cheap for 2^20 coalitions.
    Directions with eigenvalue below RANK_TOLERANCE times the largest are dropped (minimum-norm beta
    when the pairs do not span all M - 1 directions).

    Args:
        masks: bool (n, M), rows 2k and 2k+1 a coalition and its complement (n even).
        gains: (n,) v(z) - v(empty).
        delta: v(full) - v(empty).
        residual: (n,) residuals of another estimator of the same game on these rows, for its standard
            errors (shapley.estimator: the control-variate view, phi = Shapley(surrogate) + this regression
            on the residual game); default: this fit's own residuals.
        parameters: effective number of fitted parameters behind `residual` for the degrees-of-freedom
            correction; default M - 1.
        influence: (p, M) each pair's influence on another estimator's phi (shapley.estimator with
            interactions: its row of d phi / d target times its left-out residual), whose scatter gives the
            standard errors in place of this regression's; the degrees-of-freedom correction then counts the
            M - 1 linear parameters (`parameters` is ignored: the interactions' share of the fit is in the
            left-out residuals).
    """
    n_features = masks.shape[1]
    basis = helmert_basis(n_features)
    weights = size_weights(masks)
    design = masks.astype(float) @ basis
    target = gains - masks.sum(axis=1) * (delta / n_features)
    weighted = design * np.sqrt(weights)[:, None]
    eigenvalues, eigenvectors = np.linalg.eigh(weighted.T @ weighted)
    keep = eigenvalues > eigenvalues.max(initial=0.0) * RANK_TOLERANCE
    inverse_gram = (eigenvectors[:, keep] / eigenvalues[keep]) @ eigenvectors[:, keep].T
    beta = inverse_gram @ (design.T @ (weights * target))
    residual = target - design @ beta if residual is None else residual
    singular = np.sqrt(eigenvalues[keep][::-1])
    if influence is None:
        scores = (weights * residual)[:, None] * design
        influence = (scores[0::2] + scores[1::2]) @ inverse_gram @ basis.T
        counted = n_features - 1 if parameters is None else parameters
    else:
        counted = n_features - 1                      # the interactions' share is in the left-out residuals
    return Fit(phi=delta / n_features + basis @ beta, singular_values=singular,
               std_error=_sandwich_std_error(masks, influence, counted))


def _sandwich_std_error(masks: np.ndarray, influence: np.ndarray, parameters: float) -> np.ndarray:
    """Per-unit standard errors (M,) of phi for pairs drawn without replacement within size strata.

    Var(phi_j) ~ c sum over strata of (1 - n_s/N_s) n_s/(n_s - 1) times the scatter of the pairs'
    influences on phi_j around their stratum mean (Taylor linearisation of the estimator; a stratum with
    one sampled pair is scattered around zero). For this regression a pair's influence is Q H^+ psi_k,
    psi_k = sum over its two rows of w_i r_i (ZQ)_i its score, H = X^T W X; c = p / (p - k) is the
    degrees-of-freedom correction for p pairs and k = `parameters` fitted parameters (M - 1 for this
    regression alone). This treats the pairs of a sampled stratum as a simple random sample; the plan's
    balanced draws are more accurate than that, so the errors are conservative (mean squared SE against
    the mean squared error per benchmark cell in benchmarks/README.md). Infinite when a stratum is sampled
    and p <= k (no degrees of freedom left). masks bool (n, M) are the paired coalitions, influence (p, M).
    """
    stratum = np.minimum(masks[0::2].sum(axis=1), masks.shape[1] - masks[0::2].sum(axis=1))
    spread = np.zeros(influence.shape[1])
    sampled = False
    for s in np.unique(stratum):
        members = influence[stratum == s]
        n, total = len(members), pair_count(masks.shape[1], int(s))
        if n >= total:
            continue
        sampled = True
        centred = members - members.mean(axis=0) if n > 1 else members
        spread += (1.0 - n / total) * (n / max(n - 1, 1)) * (centred ** 2).sum(axis=0)
    freedom = len(influence) - parameters
    if sampled and freedom < 1.0:
        return np.full(masks.shape[1], np.inf)
    return np.sqrt(spread * (len(influence) / max(freedom, 1.0)))
