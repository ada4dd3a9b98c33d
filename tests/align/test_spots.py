from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from spatialmultiomics import InputError, Keys
from spatialmultiomics.align import aggregate_to_spots
from spatialmultiomics.align._spots import assign_cells_to_spots, looks_like_spots


def _cells(xy: list[list[float]], values: np.ndarray) -> ad.AnnData:
    adata = ad.AnnData(values.astype(np.float32), obs=pd.DataFrame(index=[f"c{i}" for i in range(len(xy))]))
    adata.var_names = [f"p{j}" for j in range(values.shape[1])]
    adata.obsm[Keys.SPATIAL] = np.asarray(xy, dtype=float)
    return adata


def test_hand_made_spots_exact_counts_mean_and_sum() -> None:
    spots = np.array([[0.0, 0.0], [100.0, 0.0], [50.0, 86.6], [300.0, 300.0]])
    # cells: 3 in spot 0 (one exactly on the 27.5 µm rim), 1 in spot 1, 0 in spot 2, 2 in spot 3, 2 outside
    xy = [[0, 0], [10, 10], [27.5, 0], [100, 20], [310, 300], [300, 290], [60, 0], [50, 40]]
    values = np.arange(16, dtype=float).reshape(8, 2)
    cells = _cells(xy, values)
    assign = assign_cells_to_spots(cells.obsm[Keys.SPATIAL], spots, spot_diameter=55.0)
    assert assign.tolist() == [0, 0, 0, 1, 3, 3, -1, -1]
    mean = aggregate_to_spots(cells, spots, spot_names=["s0", "s1", "s2", "s3"])
    assert list(mean.obs_names) == ["s0", "s1", "s2", "s3"]
    assert mean.obs["n_cells"].tolist() == [3, 1, 0, 2]
    np.testing.assert_allclose(mean.X, [values[:3].mean(0), values[3], [0, 0], values[4:6].mean(0)])
    total = aggregate_to_spots(cells, spots, how="sum")
    np.testing.assert_allclose(total.X, [values[:3].sum(0), values[3], [0, 0], values[4:6].sum(0)])
    np.testing.assert_array_equal(total.obsm[Keys.SPATIAL], spots)
    info = total.uns["spot_aggregation"]
    assert (info["n_cells_in_spots"], info["n_cells_outside"], info["n_empty_spots"]) == (6, 2, 1)
    assert list(total.var_names) == ["p0", "p1"]


def test_sparse_stays_sparse_and_spot_anndata_names(hex_spots) -> None:
    rng = np.random.default_rng(0)
    spots_xy = hex_spots(600.0)
    spots = ad.AnnData(
        np.zeros((spots_xy.shape[0], 1), dtype=np.float32),
        obs=pd.DataFrame(index=[f"AAAC-{i}" for i in range(spots_xy.shape[0])]),
    )
    spots.obsm[Keys.SPATIAL] = spots_xy
    xy = rng.uniform(0, 600, size=(3000, 2))
    counts = sp.random(3000, 40, density=0.1, format="csr", random_state=0, dtype=np.float32) * 10
    cells = ad.AnnData(counts)
    cells.obsm[Keys.SPATIAL] = xy
    out = aggregate_to_spots(cells, spots, how="sum")
    assert sp.issparse(out.X) and out.X.dtype == np.float32
    assert list(out.obs_names) == list(spots.obs_names)
    # brute force: sum over cells within 27.5 µm of each spot centre
    d = np.linalg.norm(xy[:, None] - spots_xy[None], axis=2)
    member = d <= 27.5
    np.testing.assert_array_equal(out.obs["n_cells"].to_numpy(), member.sum(0))
    np.testing.assert_allclose(out.X.toarray(), member.T.astype(float) @ counts.toarray(), rtol=1e-5)


def test_looks_like_spots(hex_spots, jittered_grid) -> None:
    lattice = ad.AnnData(np.zeros((hex_spots(800.0).shape[0], 1)))
    lattice.obsm[Keys.SPATIAL] = hex_spots(800.0)
    ok, why = looks_like_spots(lattice)
    assert ok and "regular lattice 100 µm apart" in why
    cells = ad.AnnData(np.zeros((500, 1)))
    cells.obsm[Keys.SPATIAL] = jittered_grid(500, np.random.default_rng(0))
    assert not looks_like_spots(cells)[0]
    cells.uns[Keys.PROVENANCE] = {"platform": "visium"}
    assert looks_like_spots(cells) == (True, "platform 'visium' in uns['provenance']")


def test_errors() -> None:
    cells = _cells([[0, 0]], np.ones((1, 1)))
    with pytest.raises(InputError, match=r"how must be one of \['mean', 'sum'\], got 'median'"):
        aggregate_to_spots(cells, np.zeros((1, 2)), how="median")
    with pytest.raises(InputError, match="spot_names has 2 entries for 1 spots"):
        aggregate_to_spots(cells, np.zeros((1, 2)), spot_names=["a", "b"])
    with pytest.raises(InputError, match="layer='raw' is not a layer of cells"):
        aggregate_to_spots(cells, np.zeros((1, 2)), layer="raw")
    del cells.obsm[Keys.SPATIAL]
    with pytest.raises(InputError, match=r"cells has no obsm\['spatial'\] coordinates"):
        aggregate_to_spots(cells, np.zeros((1, 2)))
    with pytest.raises(InputError, match="cells must be an AnnData"):
        aggregate_to_spots(np.zeros((2, 2)), np.zeros((1, 2)))
