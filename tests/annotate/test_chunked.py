"""annotate_chunked: the sample annotated in memory, the rest assigned chunk by chunk, equals the in-memory code."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import spatialmultiomics as smo
from spatialmultiomics._errors import InputError
from spatialmultiomics._mudata import mudata_options
from spatialmultiomics.annotate import _assign, _by_cluster
from spatialmultiomics.annotate._chunked import _Embedding
from spatialmultiomics.annotate._cluster import joint_embedding

da = pytest.importorskip("dask.array")
pytest.importorskip("leidenalg")

MAX_CELLS = 600


@pytest.fixture(scope="module")
def tissue():
    mdata = smo.datasets.synthetic_tissue(1800, seed=0, n_genes=300)
    smo.pp.preprocess(mdata)
    return mdata


def _blocks(mdata, rows=350):
    return {m: da.from_array(mdata[m].layers["preprocessed"], chunks=(rows, -1)) for m in mdata.mod}


def _chunked(mdata, **kwargs):
    return smo.annotate.annotate_chunked(
        _blocks(mdata),
        var_names={m: mdata[m].var_names for m in mdata.mod},
        highly_variable={m: mdata[m].var["highly_variable"].to_numpy() for m in mdata.mod},
        max_cells=MAX_CELLS,
        **kwargs,
    )


@pytest.fixture(scope="module")
def swapped(tissue):
    """The tissue with the proteins of 140 cells swapped with cells of other types, proteins out of the embedding.

    The genes put a swapped cell in its own type's cluster, its proteins say another type: the per-cell override.
    """
    with mudata_options():
        mdata = tissue.copy()
    P = mdata["protein"].layers["preprocessed"]
    truth = mdata.obs["true_cell_type"].astype(str).to_numpy()
    rng = np.random.default_rng(1)
    a, b = rng.choice(mdata.n_obs, 150, replace=False), rng.choice(mdata.n_obs, 150, replace=False)
    keep = truth[a] != truth[b]
    P[a[keep]] = P[b[keep]]
    hv = np.zeros(mdata["protein"].n_vars, dtype=bool)
    hv[0] = True  # one channel in the embedding: the genes place the cells
    mdata["protein"].var["highly_variable"] = hv
    return mdata


def _in_memory(mdata, monkeypatch):
    """The in-memory annotation, clustering the same seeded sample of MAX_CELLS cells and assigning the rest."""
    monkeypatch.setattr(
        _assign, "annotate_by_cluster", functools.partial(_by_cluster.annotate_by_cluster, max_cells=MAX_CELLS)
    )
    ref = smo.annotate.annotate(mdata, method="cluster", inplace=False)
    monkeypatch.undo()
    return ref


def test_overrides_of_assigned_cells_equal_the_in_memory_ones(swapped, monkeypatch) -> None:
    ref = _in_memory(swapped, monkeypatch)
    res = _chunked(swapped)
    table = res.table.compute()
    rest = np.setdiff1d(np.arange(swapped.n_obs), res.sample)
    assert table[rest, 3].sum() >= 10  # cells outside the sample overridden by their own proteins
    np.testing.assert_array_equal(res.names(table[:, 1]), ref.cell_type.astype(str).to_numpy())
    np.testing.assert_allclose(table[:, 2], ref.confidence, rtol=0, atol=1e-6)


def test_chunked_assignment_equals_the_in_memory_annotation(tissue, monkeypatch) -> None:
    ref = _in_memory(tissue, monkeypatch)
    res = _chunked(tissue)
    table = res.table.compute()
    assert table.shape == (tissue.n_obs, 4)
    assert res.sample.size == MAX_CELLS and len(res.table.chunks[0]) == 6
    calls = res.names(table[:, 1])
    np.testing.assert_array_equal(calls, ref.cell_type.astype(str).to_numpy())
    np.testing.assert_allclose(table[:, 2], ref.confidence, rtol=0, atol=1e-6)
    assert ref.params["clustering"]["n_clustered"] == MAX_CELLS
    # the clusters themselves, and most cells were assigned (not clustered) and are typed correctly
    truth = tissue.obs["true_cell_type"].astype(str).to_numpy()
    rest = np.setdiff1d(np.arange(tissue.n_obs), res.sample)
    assert rest.size == tissue.n_obs - MAX_CELLS
    assert np.mean(calls[rest] == truth[rest]) > 0.8
    # the lazy columns agree with the table
    np.testing.assert_array_equal(res.codes.compute(), table[:, 1].astype(np.int64))


def test_annotation_keeps_its_embedding_and_it_embeds_further_cells_alike(tissue, tmp_path) -> None:
    """The record's embedding (arrays, through .h5mu) reproduces the clustering embedding, fitted on a sample."""
    import mudata as md

    with mudata_options():
        sub = tissue[:500].copy()
    smo.annotate.annotate(sub, method="cluster", seed=0)
    with mudata_options():
        sub.write(tmp_path / "sub.h5mu")
        back = md.read_h5mu(tmp_path / "sub.h5mu")
    record = back.uns["annotation"]["embedding"]
    assert list(record["order"]) == ["rna", "protein"] and int(record["n_pcs"]) == 30
    blocks = record["blocks"]
    assert blocks["rna"]["components"].shape == (int(sub["rna"].var["highly_variable"].sum()), 30)
    assert "components" not in blocks["protein"]  # 28 channels: the centred columns themselves
    # applied to all 1,800 cells it equals the embedding fitted on the 500 (the in-memory route above max_cells)
    X, P = tissue["rna"].layers["preprocessed"], tissue["protein"].layers["preprocessed"]
    use = np.flatnonzero(tissue["rna"].var["highly_variable"].to_numpy())
    channels = np.flatnonzero(tissue["protein"].var["highly_variable"].to_numpy())  # DNA and blanks left out
    assert blocks["protein"]["features"].tolist() == channels.tolist() and channels.size < P.shape[1]
    ref = joint_embedding([X[:, use], P[:, channels]], seed=0, fit_rows=np.arange(500))
    parts = [
        _Embedding.from_record(blocks["rna"], X.shape[1]).apply(X),
        _Embedding.from_record(blocks["protein"], P.shape[1]).apply(P),
    ]
    np.testing.assert_allclose(np.hstack(parts), ref, rtol=1e-5, atol=1e-5)
    assert smo.annotate.annotate(sub, method="markers", inplace=False).embedding == {}


def test_chunked_annotation_rejects_mismatched_blocks(tissue) -> None:
    blocks = _blocks(tissue)
    blocks["protein"] = blocks["protein"].rechunk((500, -1))
    with pytest.raises(InputError, match="row chunks"):
        smo.annotate.annotate_chunked(blocks, var_names={m: tissue[m].var_names for m in tissue.mod})
    with pytest.raises(InputError, match="var_names"):
        smo.annotate.annotate_chunked(_blocks(tissue), var_names={"rna": ["a"]})
    with pytest.raises(InputError, match="Dask array"):
        smo.annotate.annotate_chunked({"rna": np.zeros((3, 3))}, var_names={"rna": ["a", "b", "c"]})
