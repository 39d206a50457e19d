"""``Box``: a half-open, axis-aligned box of voxels, the one type every layer passes boxes as.

A box is a tuple of (start, stop) pairs, one per axis, in the axis order of the array it indexes (z, y, x on the
CT grid, z', y', x' on nnU-Net's network grid); ``box.slices`` indexes a numpy array or a torch tensor with it.
Being a tuple, it compares equal to the same pairs and serialises as nested lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


class Box(tuple):
    """Half-open (start, stop) pairs, one per axis; start < stop is not required (an empty box is allowed)."""

    def __new__(cls, pairs: Iterable[Sequence[int]]):
        return super().__new__(cls, tuple((int(a), int(b)) for a, b in pairs))

    @classmethod
    def from_slices(cls, slices: Iterable[slice]) -> "Box":
        """Slices with integer start and stop (as nnU-Net's sliding-window slicers) -> a Box."""
        return cls((s.start, s.stop) for s in slices)

    @classmethod
    def whole(cls, shape: Sequence[int]) -> "Box":
        """The box covering an array of ``shape``."""
        return cls((0, n) for n in shape)

    @property
    def slices(self) -> tuple[slice, ...]:
        """The box as numpy slices, one per axis."""
        return tuple(slice(a, b) for a, b in self)

    @property
    def shape(self) -> tuple[int, ...]:
        """Voxels per axis (0 for an empty axis)."""
        return tuple(max(b - a, 0) for a, b in self)

    @property
    def is_empty(self) -> bool:
        return any(b <= a for a, b in self)

    def shifted(self, offset: Sequence[int]) -> "Box":
        """The box moved by ``offset`` voxels per axis."""
        return Box((a + o, b + o) for (a, b), o in zip(self, offset))

    def intersection(self, other: "Box") -> "Box":
        """The common part of two boxes (possibly empty: check ``is_empty``)."""
        return Box((max(a, c), min(b, d)) for (a, b), (c, d) in zip(self, other))

    def clipped(self, shape: Sequence[int]) -> "Box":
        """The part of the box inside an array of ``shape``."""
        return self.intersection(Box.whole(shape))

    def relative_to(self, origin: "Box") -> "Box":
        """The box in the coordinates of ``origin`` (whose start becomes 0)."""
        return self.shifted([-a for a, _ in origin])
