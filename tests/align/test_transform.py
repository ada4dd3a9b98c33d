from __future__ import annotations

import numpy as np
import pytest

from spatialmultiomics import InputError
from spatialmultiomics.align import Transform


def test_from_params_maps_known_points() -> None:
    t = Transform.from_params(rotation_deg=90.0, translation=(10.0, -5.0))
    np.testing.assert_allclose(t.apply([[1.0, 0.0], [0.0, 2.0]]), [[10.0, -4.0], [8.0, -5.0]], atol=1e-12)
    assert t.kind == "rigid"
    assert t.rotation_deg == pytest.approx(90.0)
    assert t.scale == pytest.approx(1.0)
    np.testing.assert_allclose(t.translation, [10.0, -5.0])


def test_rotation_about_center_keeps_center() -> None:
    t = Transform.from_params(rotation_deg=33.0, scale=1.5, center=(100.0, 50.0))
    np.testing.assert_allclose(t.apply([[100.0, 50.0]]), [[100.0, 50.0]], atol=1e-9)
    assert t.kind == "similarity"
    assert t.scale == pytest.approx(1.5)
    assert t.rotation_deg == pytest.approx(33.0)


def test_inverse_and_compose() -> None:
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(50, 2)) * 100
    a = Transform.from_params(rotation_deg=20.0, translation=(3.0, 4.0))
    b = Transform(np.array([[1.2, 0.3, 5.0], [-0.1, 0.9, -2.0], [0, 0, 1]]), kind="affine")
    np.testing.assert_allclose(a.inverse().apply(a.apply(pts)), pts, atol=1e-9)
    np.testing.assert_allclose(b.inverse().apply(b.apply(pts)), pts, atol=1e-9)
    ab = a.compose(b)  # b first, then a
    np.testing.assert_allclose(ab.apply(pts), a.apply(b.apply(pts)), atol=1e-9)
    assert (a @ b).allclose(ab)
    assert ab.kind == "affine"
    assert a.compose(a).kind == "rigid"
    assert a.compose(a.inverse()).allclose(Transform.identity())


def test_dict_round_trip_and_immutability() -> None:
    t = Transform.from_params(rotation_deg=-12.5, scale=0.8, translation=(100.0, 7.0))
    d = t.to_dict()
    assert d["kind"] == "similarity" and d["units"] == "um"
    back = Transform.from_dict(d)
    assert back == t
    assert hash(back) == hash(t)
    assert Transform.from_dict({"matrix": d["matrix"].tolist(), "kind": "similarity"}) == t
    with pytest.raises(ValueError, match="read-only"):
        t.matrix[0, 0] = 2.0
    d["matrix"][0, 0] = 99.0  # the dict is a copy
    assert t.matrix[0, 0] != 99.0
    assert "rotation_deg=-12.5" in repr(t)


def test_two_by_three_matrix_accepted() -> None:
    t = Transform([[1.0, 0.0, 5.0], [0.0, 1.0, 6.0]], kind="rigid")
    np.testing.assert_allclose(t.apply([[0.0, 0.0]]), [[5.0, 6.0]])


@pytest.mark.parametrize(
    ("matrix", "kind", "message"),
    [
        (np.eye(4), "rigid", r"matrix must have shape \(3, 3\) or \(2, 3\), got \(4, 4\)"),
        (np.zeros((3, 3)) + np.diag([0, 0, 1]), "affine", "matrix is singular"),
        (np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1]]), "affine", r"last row must be \[0, 0, 1\]"),
        (np.full((3, 3), np.nan), "affine", "NaN or infinite"),
        (np.eye(3), "projective", r"kind must be one of \['rigid', 'similarity', 'affine'\], got 'projective'"),
    ],
)
def test_bad_matrices(matrix, kind: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        Transform(matrix, kind=kind)


def test_bad_inputs() -> None:
    t = Transform.identity()
    with pytest.raises(InputError, match=r"coords must have shape \(n, 2\), got \(3,\)"):
        t.apply([1.0, 2.0, 3.0])
    with pytest.raises(InputError, match="compose\\(\\) needs a Transform, got ndarray"):
        t.compose(np.eye(3))
    with pytest.raises(InputError, match="scale must be a finite number > 0, got -1"):
        Transform.from_params(scale=-1)
    with pytest.raises(InputError, match="a stored transform must be a mapping with a 'matrix' entry"):
        Transform.from_dict({"kind": "rigid"})
