"""In-memory resume store for KernelSHAP coalition values (numpy only).

The store protocol the solver relies on (a file-backed journal can implement the same two methods):

- ``lookup(Z) -> (values, known)``: Z is a bool array (n, M); values is a float array (n,) or (n, V)
  (V values per coalition, one per game) holding the recorded values where known is True (anything
  elsewhere), known a bool array (n,).
- ``record(Z, values)``: append the values (n,) or (n, V) of the coalitions Z (n, M).

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
    """Coalition values kept in a dict keyed by :func:`coalition_keys`; one store serves one M and one shape
    of values per coalition (a float, or V floats).

    Recording a coalition twice keeps the latest value. Mixing coalitions of different widths in one
    store raises ValueError, because their packed keys could collide.
    """

    def __init__(self) -> None:
        self._values: dict[bytes, np.ndarray] = {}
        self._n_features: int | None = None
        self._value_shape: tuple[int, ...] = ()

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
        """Values (n,) or (n, V) float and known (n,) bool of the coalitions Z (n, M); unknown values are NaN."""
        keys = self._keys(Z)
        known = np.array([key in self._values for key in keys], dtype=bool)
        values = np.full((len(keys),) + self._value_shape, np.nan)
        for row in np.flatnonzero(known):
            values[row] = self._values[keys[row]]
        return values, known

    def record(self, Z: np.ndarray, values: np.ndarray) -> None:
        """Append the values (n,) or (n, V) of the coalitions Z (n, M)."""
        keys = self._keys(Z)
        values = np.asarray(values, dtype=float)
        if values.ndim not in (1, 2) or len(values) != len(keys):
            raise ValueError(f"{len(keys)} coalitions but values of shape {values.shape}")
        if self._values and values.shape[1:] != self._value_shape:
            raise ValueError(f"this store holds values of shape {self._value_shape} per coalition, got "
                             f"{values.shape[1:]}")
        self._value_shape = values.shape[1:]
        self._values.update(zip(keys, values.copy()))
