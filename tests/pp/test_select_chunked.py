"""select_columns_chunked: the in-memory X[:, keep], exactly, lazily and one task per row chunk."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from spatialmultiomics import InputError
from spatialmultiomics.pp import highly_variable_genes_chunked, select_columns_chunked

da = pytest.importorskip("dask.array")


@pytest.fixture(scope="module")
def matrix() -> sp.csr_matrix:
    rng = np.random.default_rng(0)
    X = sp.random(1001, 60, density=0.15, format="csr", rng=rng, dtype=np.float32)
    X.data = np.log1p(rng.poisson(3.0, X.nnz) + 1).astype(np.float32)
    return X


@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("form", ["mask", "indices", "shuffled"])
def test_equals_the_in_memory_selection(matrix, sparse, form) -> None:
    rng = np.random.default_rng(1)
    mask = rng.random(60) < 0.3
    keep = {"mask": mask, "indices": np.flatnonzero(mask), "shuffled": rng.permutation(np.flatnonzero(mask))}[form]
    X = matrix if sparse else matrix.toarray()
    lazy = da.from_array(X, chunks=(128, -1), asarray=False)
    out = select_columns_chunked(lazy, keep=keep)
    # lazy, with the row chunks, the kept width, the dtype and the chunk type of the input
    assert out.chunks == (lazy.chunks[0], (int(mask.sum()),)) and out.dtype == np.float32
    assert type(out._meta) is type(lazy._meta)
    graph = out.__dask_graph__()  # one selection task per row chunk, on the input's chunks, nothing computed
    assert len(graph.layers[out.name]) == lazy.numblocks[0] and graph.dependencies[out.name] == {lazy.name}
    got = out.compute()
    expected = X[:, keep]
    if sparse:
        assert isinstance(got, sp.csr_matrix) and got.dtype == np.float32
        assert (got != expected).nnz == 0
        np.testing.assert_array_equal(got.toarray(), expected.toarray())
    else:
        np.testing.assert_array_equal(got, expected)
    # every chunk alone is the same slice of the in-memory selection
    block = out.blocks[3].compute()
    np.testing.assert_array_equal(
        block.toarray() if sparse else block, (expected[384:512].toarray() if sparse else expected[384:512])
    )


def test_column_chunks_negative_indices_and_in_memory_input(matrix) -> None:
    lazy = da.from_array(matrix.toarray(), chunks=(300, 25))  # three column chunks: merged first
    keep = np.array([-1, 0, 31, 31])
    out = select_columns_chunked(lazy, keep=keep)
    assert out.chunks == ((300, 300, 300, 101), (4,))
    np.testing.assert_array_equal(out.compute(), matrix.toarray()[:, [59, 0, 31, 31]])
    assert (select_columns_chunked(matrix.tocoo(), keep=keep) != matrix[:, [59, 0, 31, 31]]).nnz == 0


def test_after_the_chunked_hvg_selection(matrix) -> None:
    lazy = da.from_array(matrix, chunks=(250, -1), asarray=False)
    stats = highly_variable_genes_chunked(lazy, n_top_genes=12)
    kept = select_columns_chunked(lazy, keep=stats.highly_variable)
    assert kept.shape == (1001, 12)
    assert (kept.compute() != matrix[:, np.flatnonzero(stats.highly_variable)]).nnz == 0


def test_bad_keep_raises_naming_the_argument(matrix) -> None:
    lazy = da.from_array(matrix, chunks=(250, -1), asarray=False)
    with pytest.raises(
        InputError, match=r"keep: a boolean mask needs one entry per column of X \(60\), got shape \(59,\)"
    ):
        select_columns_chunked(lazy, keep=np.ones(59, dtype=bool))
    with pytest.raises(InputError, match="keep selects no column of X's 60"):
        select_columns_chunked(lazy, keep=np.zeros(60, dtype=bool))
    with pytest.raises(InputError, match="keep selects no column"):
        select_columns_chunked(lazy, keep=np.array([], dtype=np.int64))
    with pytest.raises(InputError, match=r"keep: column indices must lie in \[-60, 60\).*\[60\]"):
        select_columns_chunked(lazy, keep=[0, 60])
    with pytest.raises(InputError, match="keep must be a boolean mask .* got dtype <U1"):
        select_columns_chunked(lazy, keep=["a"])
    with pytest.raises(InputError, match="X must be a two-dimensional"):
        select_columns_chunked(np.zeros(5), keep=[0])


def test_on_a_zarr_store_opened_lazily(matrix, tmp_path) -> None:
    # the out-of-core route: CSR chunks read by anndata from a zarr store (docs/scale.md)
    zarr = pytest.importorskip("zarr")
    from anndata.experimental import read_elem_lazy
    from anndata.io import write_elem

    root = zarr.open_group(tmp_path / "s.zarr", mode="w")
    write_elem(root, "X", matrix, dataset_kwargs={"chunks": (4096,), "shards": None})
    lazy = read_elem_lazy(root["X"], chunks=(200, -1))
    keep = np.arange(0, 60, 7)
    out = select_columns_chunked(lazy, keep=keep)
    assert type(out._meta) is type(lazy._meta) and out.chunks == (lazy.chunks[0], (keep.size,))
    got = out.compute()
    assert sp.issparse(got) and got.format == "csr" and (got != matrix[:, keep]).nnz == 0
