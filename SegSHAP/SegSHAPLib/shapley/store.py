"""In-memory resume store for KernelSHAP coalition values (numpy only).

The store protocol the solver relies on (a file-backed journal can implement the same two methods):

- ``lookup(Z) -> (values, known)``: Z is a bool array (n, M); values is a float array (n,) holding the
  recorded value where known is True (anything elsewhere), known a bool array (n,).
- ``record(Z, values)``: append the values (n,) of the coalitions Z (n, M).

Rows are keyed by :func:`coalition_keys`, the packed bits of the coalition (``numpy.packbits`` along the
unit axis, big-endian bit order, zero-padded to whole bytes), so a journal can write ``key.hex()`` per
row and read it back without knowing anything else about the solver.
"""

from __future__ import annotations

import numpy as np


def coalition_keys(Z: np.ndarray) -> list[bytes]:
    """Packed-bit keys of the coalitions Z, bool (n, M) -> list of n bytes objects of ceil(M/8) bytes."""
    packed = np.packbits(np.asarray(Z, dtype=bool), axis=1)
    return [row.tobytes() for row in packed]


class CoalitionStore:
    """Coalition values kept in a dict keyed by :func:`coalition_keys`; one store serves one M.

    Recording a coalition twice keeps the latest value. Mixing coalitions of different widths in one
    store raises ValueError, because their packed keys could collide.
    """

    def __init__(self) -> None:
        self._values: dict[bytes, float] = {}
        self._n_features: int | None = None

    def __len__(self) -> int:
        return len(self._values)

    def _keys(self, Z: np.ndarray) -> list[bytes]:
        Z = np.asarray(Z, dtype=bool)
        if Z.ndim != 2:
            raise ValueError(f"coalitions must be a 2-D bool array (n, M), got shape {Z.shape}")
        if self._n_features is None:
            self._n_features = Z.shape[1]
        elif Z.shape[1] != self._n_features:
            raise ValueError(f"this store holds coalitions of {self._n_features} units, got {Z.shape[1]}")
        return coalition_keys(Z)

    def lookup(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Values (n,) float and known (n,) bool of the coalitions Z (n, M); unknown values are NaN."""
        keys = self._keys(Z)
        known = np.array([key in self._values for key in keys], dtype=bool)
        values = np.array([self._values.get(key, np.nan) for key in keys], dtype=float)
        return values, known

    def record(self, Z: np.ndarray, values: np.ndarray) -> None:
        """Append the values (n,) of the coalitions Z (n, M)."""
        keys = self._keys(Z)
        values = np.asarray(values, dtype=float).reshape(-1)
        if len(values) != len(keys):
            raise ValueError(f"{len(keys)} coalitions but {len(values)} values")
        self._values.update(zip(keys, values.tolist()))
