"""A small immutable 2-D affine transform of coordinates in micrometres.

Points are rows ``(x, y)``; the transform maps ``p`` to ``A @ p + t`` and is held as the homogeneous 3 x 3 matrix
``[[A, t], [0, 0, 1]]``. ``kind`` says which family it was estimated in: ``'rigid'`` (rotation + shift),
``'similarity'`` (rotation + isotropic scale + shift) or ``'affine'`` (any invertible linear map + shift).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from spatialmultiomics._errors import InputError

__all__ = ["KINDS", "Transform"]

#: transform families, from the most to the least constrained
KINDS = ("rigid", "similarity", "affine")


class Transform:
    """An invertible 2-D affine map ``p -> A @ p + t`` on coordinates in µm (immutable).

    Parameters
    ----------
    matrix
        Homogeneous matrix of shape (3, 3) with last row ``[0, 0, 1]``, or the (2, 3) matrix ``[A | t]``.
    kind
        ``'rigid'``, ``'similarity'`` or ``'affine'``: the family the transform belongs to (recorded, and used to
        decide the family of compositions and inverses).
    units
        Units of the coordinates it maps (``'um'``).

    Examples
    --------
    >>> t = Transform.from_params(rotation_deg=90.0, translation=(10.0, 0.0))
    >>> t.apply([[1.0, 0.0]]).round(6).tolist()
    [[10.0, 1.0]]
    >>> t.inverse().apply(t.apply([[3.0, 4.0]])).round(6).tolist()
    [[3.0, 4.0]]
    """

    __slots__ = ("_kind", "_matrix", "_units")

    def __init__(self, matrix: Any, *, kind: str = "affine", units: str = "um") -> None:
        m = np.asarray(matrix, dtype=np.float64)
        if m.shape == (2, 3):
            m = np.vstack([m, [0.0, 0.0, 1.0]])
        if m.shape != (3, 3):
            msg = f"matrix must have shape (3, 3) or (2, 3), got {m.shape}."
            raise InputError(msg)
        if not np.isfinite(m).all():
            msg = "matrix contains NaN or infinite values; a transform needs finite numbers."
            raise InputError(msg)
        if not np.allclose(m[2], [0.0, 0.0, 1.0]):
            msg = f"matrix last row must be [0, 0, 1] (an affine map), got {m[2].tolist()}."
            raise InputError(msg)
        if abs(np.linalg.det(m[:2, :2])) < 1e-12:
            msg = "matrix is singular (its 2 x 2 linear part has determinant 0); a transform must be invertible."
            raise InputError(msg)
        if kind not in KINDS:
            msg = f"kind must be one of {list(KINDS)}, got {kind!r}."
            raise InputError(msg)
        m = m.copy()
        m[2] = (0.0, 0.0, 1.0)
        m.setflags(write=False)
        self._matrix = m
        self._kind = kind
        self._units = str(units)

    # construction -----------------------------------------------------------------------------------------------
    @classmethod
    def identity(cls, kind: str = "rigid") -> Transform:
        """Return the identity transform."""
        return cls(np.eye(3), kind=kind)

    @classmethod
    def from_params(
        cls,
        *,
        rotation_deg: float = 0.0,
        scale: float = 1.0,
        translation: Any = (0.0, 0.0),
        center: Any = (0.0, 0.0),
    ) -> Transform:
        """Return ``p -> s R (p - c) + c + t``: rotation by ``rotation_deg`` (counter-clockwise) and scale ``s``
        about ``center`` (µm), then a shift by ``translation`` (µm). Rigid when ``scale == 1``, else similarity."""
        theta = np.deg2rad(float(rotation_deg))
        s = float(scale)
        if not np.isfinite(s) or s <= 0:
            msg = f"scale must be a finite number > 0, got {scale!r}."
            raise InputError(msg)
        c = np.asarray(center, dtype=np.float64).reshape(2)
        t = np.asarray(translation, dtype=np.float64).reshape(2)
        a = s * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        m = np.eye(3)
        m[:2, :2] = a
        m[:2, 2] = c - a @ c + t
        return cls(m, kind="rigid" if np.isclose(s, 1.0) else "similarity")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Transform:
        """Rebuild a transform from :meth:`to_dict` output (as stored in ``uns``)."""
        if not isinstance(data, Mapping) or "matrix" not in data:
            msg = f"a stored transform must be a mapping with a 'matrix' entry, got {type(data).__name__}."
            raise InputError(msg)
        return cls(
            np.asarray(data["matrix"], dtype=np.float64),
            kind=str(data.get("kind", "affine")),
            units=str(data.get("units", "um")),
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a plain, ``.h5mu``-storable description: matrix (3, 3), kind, units and readable parameters."""
        return {
            "matrix": np.array(self._matrix),
            "kind": self._kind,
            "units": self._units,
            "rotation_deg": self.rotation_deg,
            "scale": self.scale,
            "translation_um": np.array(self.translation),
        }

    # properties -------------------------------------------------------------------------------------------------
    @property
    def matrix(self) -> np.ndarray:
        """Homogeneous matrix of shape (3, 3) (read-only)."""
        return self._matrix

    @property
    def kind(self) -> str:
        """Family of the transform: ``'rigid'``, ``'similarity'`` or ``'affine'``."""
        return self._kind

    @property
    def units(self) -> str:
        """Units of the coordinates it maps."""
        return self._units

    @property
    def linear(self) -> np.ndarray:
        """The (2, 2) linear part ``A``."""
        return self._matrix[:2, :2]

    @property
    def translation(self) -> np.ndarray:
        """The shift ``t`` in µm, shape (2,)."""
        return self._matrix[:2, 2]

    @property
    def rotation_deg(self) -> float:
        """Rotation angle in degrees (counter-clockwise, in (-180, 180]) of the polar part of ``A``."""
        a = self.linear
        return float(np.rad2deg(np.arctan2(a[1, 0] - a[0, 1], a[0, 0] + a[1, 1])))

    @property
    def scale(self) -> float:
        """Isotropic scale ``sqrt(|det A|)`` (1 for rigid transforms)."""
        return float(np.sqrt(abs(np.linalg.det(self.linear))))

    # algebra ----------------------------------------------------------------------------------------------------
    def apply(self, coords: Any) -> np.ndarray:
        """Map points of shape (n, 2) (µm) and return a new float64 array of shape (n, 2)."""
        xy = np.asarray(coords, dtype=np.float64)
        if xy.ndim != 2 or xy.shape[1] != 2:
            msg = f"coords must have shape (n, 2), got {xy.shape}."
            raise InputError(msg)
        return xy @ self.linear.T + self.translation

    def inverse(self) -> Transform:
        """Return the inverse map (same kind)."""
        return Transform(np.linalg.inv(self._matrix), kind=self._kind, units=self._units)

    def compose(self, other: Transform) -> Transform:
        """Return ``self ∘ other``: the map that applies ``other`` first, then ``self``.

        The kind is the least constrained of the two (rigid ∘ similarity is a similarity).
        """
        if not isinstance(other, Transform):
            msg = f"compose() needs a Transform, got {type(other).__name__}."
            raise InputError(msg)
        kind = KINDS[max(KINDS.index(self._kind), KINDS.index(other._kind))]
        return Transform(self._matrix @ other._matrix, kind=kind, units=self._units)

    def __matmul__(self, other: Transform) -> Transform:
        """``a @ b`` is ``a.compose(b)``."""
        return self.compose(other)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Transform):
            return NotImplemented
        return self._kind == other._kind and np.array_equal(self._matrix, other._matrix)

    def __hash__(self) -> int:
        return hash((self._kind, self._matrix.tobytes()))

    def allclose(self, other: Transform, *, atol: float = 1e-8) -> bool:
        """True when both matrices agree within ``atol`` (kinds are not compared)."""
        return bool(np.allclose(self._matrix, other._matrix, atol=atol))

    def __repr__(self) -> str:
        tx, ty = self.translation
        return (
            f"Transform(kind={self._kind!r}, rotation_deg={self.rotation_deg:.4g}, scale={self.scale:.6g}, "
            f"translation_um=({tx:.4g}, {ty:.4g}))"
        )
