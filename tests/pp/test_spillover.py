"""Lateral spill-over compensation (smo.pp.compensate_spillover) on planted data with a known answer."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from spatialmultiomics import InputError
from spatialmultiomics.pp import compensate_spillover
from spatialmultiomics.pp._spillover import _boundary_graph, _spill_fractions

CHANNELS = ["PanCK", "CD3", "CD20", "CD68", "aSMA", "CD31"]


def _tissue(n_side: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Jittered grid of cells (12 µm apart) in lineage patches; returns (xy, clean signal) with one channel per
    lineage (exclusive), lognormal levels and exact zeros elsewhere."""
    rng = np.random.default_rng(seed)
    g = np.stack(np.meshgrid(np.arange(n_side), np.arange(n_side)), -1).reshape(-1, 2).astype(float)
    xy = (g + rng.uniform(-0.3, 0.3, g.shape)) * 12.0
    # patches: lineage of the nearest of a few seeds, then 20 % of cells re-drawn at random (infiltration)
    seeds = rng.uniform(0, n_side * 12.0, size=(12, 2))
    lineage = np.argmin(((xy[:, None, :] - seeds[None]) ** 2).sum(-1), axis=1) % len(CHANNELS)
    flip = rng.random(lineage.size) < 0.2
    lineage[flip] = rng.integers(0, len(CHANNELS), flip.sum())
    x = np.zeros((xy.shape[0], len(CHANNELS)))
    x[np.arange(xy.shape[0]), lineage] = 30.0 * np.exp(rng.normal(0, 0.3, xy.shape[0]))
    return xy, x


def _planted(xy: np.ndarray, x: np.ndarray, strength: float, *, reinforce: bool, sizes=None, fov=None) -> np.ndarray:
    """The measured signal under the model that compensate_spillover inverts (same graph, default parameters)."""
    W, g, _ = _boundary_graph(xy, fov=fov, sizes=sizes, n_neighbors=8, radius=None)
    S = _spill_fractions(g, np.full(x.shape[1], strength))
    has = (np.diff(W.indptr) > 0)[:, None]
    return (1.0 - S * has) * x + S * (W @ x) if reinforce else x + S * (W @ x)


def _adata(xy: np.ndarray, y: np.ndarray, **obs) -> ad.AnnData:
    a = ad.AnnData(
        y.astype(np.float32),
        obs=pd.DataFrame(obs, index=[f"c{i}" for i in range(y.shape[0])]),
        var=pd.DataFrame(index=CHANNELS[: y.shape[1]]),
    )
    a.obsm["spatial"] = xy
    return a


@pytest.mark.parametrize("reinforce", [True, False])
def test_recovers_the_clean_signal_with_the_planted_strength(reinforce):
    xy, x = _tissue()
    y = _planted(xy, x, 0.2, reinforce=reinforce)
    a = _adata(xy, y)
    compensate_spillover(a, strength=0.2, reinforce=reinforce)
    out = a.layers["spill_compensated"]
    np.testing.assert_allclose(out, x, atol=1e-4 * x.max())
    np.testing.assert_array_equal(a.X, y.astype(np.float32))  # X stays raw
    # the raw error was large: cells next to another lineage read positive for it
    assert np.abs(y - x).max() > 0.1 * x.max()
    u = a.uns["spillover"]
    assert u["strength"] == pytest.approx(0.2)
    assert u["estimated"] is False
    assert u["reinforce"] is reinforce


def test_recovers_with_cell_sizes():
    xy, x = _tissue(seed=1)
    area = np.exp(np.random.default_rng(1).normal(np.log(100), 0.4, xy.shape[0]))
    y = _planted(xy, x, 0.15, reinforce=True, sizes=area)
    a = _adata(xy, y, Area=area)
    compensate_spillover(a, strength=0.15)
    assert a.uns["spillover"]["size_key"] == "Area"
    np.testing.assert_allclose(a.layers["spill_compensated"], x, atol=1e-4 * x.max())
    # ignoring the sizes leaves an error
    b = _adata(xy, y, Area=area)
    compensate_spillover(b, strength=0.15, size_key=None)
    assert np.abs(b.layers["spill_compensated"] - x).max() > 1e-2 * x.max()


@pytest.mark.parametrize(("planted", "reinforce"), [(0.0, True), (0.2, True), (0.2, False), (0.3, True)])
def test_estimated_strength_matches_the_planted_one(planted, reinforce):
    """Tolerance: 0.03 (noise of sd 1 on signals of ~30, 1600 cells, 6 channels)."""
    xy, x = _tissue(n_side=40, seed=2)
    y = _planted(xy, x, planted, reinforce=reinforce)
    y = np.maximum(y + 3.0 + np.random.default_rng(3).normal(0, 1.0, y.shape), 0)  # background and noise
    a = _adata(xy, y)
    compensate_spillover(a, reinforce=reinforce)
    u = a.uns["spillover"]
    assert u["estimated"] is True
    assert u["n_pairs"] >= 3
    assert u["strength"] == pytest.approx(planted, abs=0.03)
    est = a.var["spill_strength"].dropna().to_numpy()
    np.testing.assert_array_equal(np.asarray(u["strength_per_channel"]), a.var["spill_strength"].to_numpy())
    assert est.size >= 4
    assert np.median(est) == pytest.approx(planted, abs=0.03)
    # the leak into other lineages is gone: in cells of another lineage, a channel no longer follows the
    # neighbours' (clean) signal of that channel
    W, _, _ = _boundary_graph(xy, fov=None, sizes=None, n_neighbors=8, radius=None)
    exposure = W @ x
    lineage = x.argmax(1)
    out = a.layers["spill_compensated"]

    def follow(z):
        return np.mean([np.corrcoef(z[lineage != m, m], exposure[lineage != m, m])[0, 1] for m in range(x.shape[1])])

    if planted > 0:
        assert follow(y) > 0.5
        assert abs(follow(out)) < 0.1


def test_fovs_are_never_mixed():
    xy, x = _tissue(n_side=20, seed=4)
    half = xy.shape[0] // 2
    # two FOVs on top of each other: every cell of one has a cell of the other within a micrometre
    xy2 = np.vstack([xy[:half], xy[:half] + 0.5])
    x2 = np.vstack([x[:half], x[half : 2 * half]])
    fov = np.repeat(["a", "b"], half)
    y = _planted(xy2, x2, 0.2, reinforce=True, fov=fov)
    a = _adata(xy2, y, fov=fov)
    compensate_spillover(a, strength=0.2)
    np.testing.assert_allclose(a.layers["spill_compensated"], x2, atol=1e-4 * x2.max())
    W, _, caps = _boundary_graph(xy2, fov=fov, sizes=None, n_neighbors=8, radius=None)
    rows, cols = W.nonzero()
    assert np.all(fov[rows] == fov[cols])
    assert len(caps) == 2
    # the same as compensating each FOV alone
    alone = _adata(xy2[:half], y[:half])
    compensate_spillover(alone, strength=0.2)
    np.testing.assert_allclose(a.layers["spill_compensated"][:half], alone.layers["spill_compensated"], rtol=1e-5)


def test_cells_without_neighbours_are_unchanged():
    xy, x = _tissue(n_side=15, seed=5)
    xy = np.vstack([xy, [[5000.0, 5000.0], [-4000.0, 0.0]]])
    x = np.vstack([x, np.full((2, x.shape[1]), 7.0)])
    y = _planted(xy, x, 0.2, reinforce=True)
    a = _adata(xy, y)
    compensate_spillover(a, strength=0.2)
    W, _, _ = _boundary_graph(xy, fov=None, sizes=None, n_neighbors=8, radius=None)
    isolated = np.diff(W.indptr) == 0
    assert isolated[-2:].all()
    assert a.uns["spillover"]["n_isolated"] == isolated.sum()
    np.testing.assert_array_equal(a.layers["spill_compensated"][isolated], a.X[isolated])
    assert not np.allclose(a.layers["spill_compensated"][~isolated], a.X[~isolated])


def test_sparse_input_stays_sparse_and_matches_dense():
    xy, x = _tissue(n_side=20, seed=6)
    y = _planted(xy, x, 0.2, reinforce=True)
    y[y < 1.0] = 0.0  # counts-like: exact zeros
    dense = _adata(xy, y)
    compensate_spillover(dense, strength=0.2)
    a = _adata(xy, y)
    a.X = sp.csr_matrix(a.X)
    compensate_spillover(a, strength=0.2)
    out = a.layers["spill_compensated"]
    assert sp.issparse(out)
    assert out.shape == y.shape
    # a stored zero stays zero; elsewhere the same as the dense result (whose background is 0 here)
    assert not np.any(out.toarray()[y == 0])
    nz = y != 0
    np.testing.assert_allclose(out.toarray()[nz], dense.layers["spill_compensated"][nz], rtol=1e-5, atol=1e-4)


def test_excluded_channels_and_inplace_false():
    xy, x = _tissue(n_side=15, seed=7)
    y = _planted(xy, x, 0.2, reinforce=True)
    a = _adata(xy, y)
    a.var_names = ["PanCK", "CD3", "CD20", "CD68", "aSMA", "DAPI"]
    out = compensate_spillover(a, strength=0.2, inplace=False)
    assert "spill_compensated" not in a.layers
    assert "spillover" not in a.uns
    np.testing.assert_array_equal(out[:, 5], a.X[:, 5])  # DNA channel untouched
    assert not np.allclose(out[:, 0], a.X[:, 0])
    per = compensate_spillover(a, strength={"PanCK": 0.2, "CD3": float("nan")}, inplace=False)
    np.testing.assert_array_equal(per[:, 1:], a.X[:, 1:])


def test_unestimable_strength_warns_and_leaves_the_data():
    xy, x = _tissue(n_side=10, seed=8)
    a = _adata(xy, x[:, :1] + 1.0)
    with pytest.warns(UserWarning, match="could not be estimated"):
        compensate_spillover(a)
    assert a.uns["spillover"]["strength"] == 0.0
    np.testing.assert_allclose(a.layers["spill_compensated"], a.X)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"strength": 0.6}, "strength"),
        ({"strength": -0.1}, "strength"),
        ({"strength": "lots"}, "strength"),
        ({"strength": {"NOPE": 0.1}}, "strength"),
        ({"n_neighbors": 0}, "n_neighbors"),
        ({"radius": -5.0}, "radius"),
        ({"size_key": "nope"}, "size_key"),
        ({"layer": "nope"}, "layer"),
        ({"reinforce": "yes"}, "reinforce"),
        ({"layer_added": ""}, "layer_added"),
        ({"exclude_channels": 3}, "exclude_channels"),
    ],
)
def test_bad_arguments(kwargs, match):
    xy, x = _tissue(n_side=6)
    with pytest.raises(InputError, match=match):
        compensate_spillover(_adata(xy, x), **kwargs)


def test_bad_data():
    xy, x = _tissue(n_side=6)
    a = _adata(xy, x)
    del a.obsm["spatial"]
    with pytest.raises(InputError, match="spatial"):
        compensate_spillover(a, strength=0.1)
    b = _adata(xy, x - 1.0)
    with pytest.raises(InputError, match="intensities"):
        compensate_spillover(b, strength=0.1)
