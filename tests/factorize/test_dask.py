"""backend='dask' on a LocalCluster (2 workers, threads): the NumPy backend's result, chunk-size independent."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from spatialmultiomics._errors import InputError
from spatialmultiomics._warnings import ConvergenceWarning
from spatialmultiomics.factorize import JointNMF, joint_nmf

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")


def _blocks(planted):
    _, _, Xs = planted(n_cells=300, sizes=(60, 12), k=4)
    rna = sp.csr_matrix(np.where(np.median(Xs[0]) < Xs[0], Xs[0], 0.0).astype(np.float32))
    return [rna, Xs[1].astype(np.float32)]


@pytest.mark.parametrize(("solver", "rtol"), [("hals", 1e-4), ("mu", 1e-4)])
def test_dask_backend_gives_the_numpy_result(planted, match, client, solver: str, rtol: float) -> None:
    blocks = _blocks(planted)
    kwargs = {"solver": solver, "max_iter": 15, "tol": 0.0}
    dask_blocks = [da.from_array(blocks[0], chunks=(70, -1), asarray=False), da.from_array(blocks[1], chunks=(100, -1))]
    reference, model = JointNMF(4, **kwargs), JointNMF(4, backend="dask", **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a fixed number of iterations on purpose
        W_ref = reference.fit_transform(blocks)
        W = model.fit_transform(dask_blocks)
    assert isinstance(W, da.Array)
    W = W.compute()
    assert W.dtype == np.float32
    np.testing.assert_allclose(W, W_ref, rtol=rtol, atol=rtol / 10 * W_ref.max())
    for H_ref, H in zip(reference.components_, model.components_, strict=True):
        np.testing.assert_allclose(H, H_ref, rtol=rtol, atol=rtol / 10 * H_ref.max())
    np.testing.assert_allclose(model.loss_curve_, reference.loss_curve_, rtol=rtol / 10)
    np.testing.assert_allclose(model.block_scales_, reference.block_scales_, rtol=1e-6)
    assert model.n_features_in_ == [60, 12]


def test_dask_backend_runs_each_chunk_once_and_repeats_exactly(planted, client) -> None:
    # regression: persisting the cell loadings and the sums of unpersisted chunk tasks together ran every chunk twice,
    # and the second run could see G already updated in place (in-process workers share its memory): results varied
    blocks = _blocks(planted)
    kwargs = {"solver": "mu", "max_iter": 15, "tol": 0.0}
    fits = []
    for _ in range(3):
        dask_blocks = [da.from_array(blocks[0], chunks=(70, -1), asarray=False), da.from_array(blocks[1], chunks=70)]
        model = JointNMF(4, backend="dask", **kwargs)
        with distributed.get_task_stream(client) as stream, warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            W = model.fit_transform(dask_blocks).compute()
        passes = [t for t in stream.data if distributed.utils.key_split(t["key"]) == "chunk_pass"]
        assert len(passes) == 5 * 15  # 300 rows in chunks of 70, 15 iterations
        fits.append((W, model.components_[0]))
    for W, H in fits[1:]:
        np.testing.assert_array_equal(W, fits[0][0])
        np.testing.assert_array_equal(H, fits[0][1])


def test_joint_nmf_on_dask_stores_numpy_results(planted, client) -> None:
    import anndata as ad
    import mudata as md

    blocks = _blocks(planted)
    rna, prot = ad.AnnData(blocks[0]), ad.AnnData(blocks[1])
    prot.obs_names = rna.obs_names
    prot.var_names = [f"p{i}" for i in range(12)]
    with md.set_options(pull_on_update=False):
        mdata = md.MuData({"rna": rna, "protein": prot})
    ref = joint_nmf(mdata, n_components=4, tol=1e-3, max_iter=200, inplace=False)
    joint_nmf(mdata, n_components=4, tol=1e-3, max_iter=200, backend="dask")
    assert isinstance(mdata.obsm["X_nmf"], np.ndarray)
    np.testing.assert_allclose(mdata.obsm["X_nmf"], ref.W, rtol=1e-4, atol=1e-5 * ref.W.max())
    assert mdata.uns["nmf"]["params"]["backend"] == "dask"


def test_dask_backend_errors(client) -> None:
    X = np.ones((20, 3))
    with pytest.raises(InputError, match="backend='dask' runs solver 'hals' or 'mu', got solver='minibatch'"):
        JointNMF(2, backend="dask", solver="minibatch").fit([X, X])
    bad = da.from_array(-np.ones((20, 3)), chunks=(5, -1))
    with pytest.raises(InputError, match=r"blocks\[1\] has negative values|blocks\[1\].*negative"):
        JointNMF(2, backend="dask").fit([X, bad])
    with pytest.raises(InputError, match="different row counts"):
        JointNMF(2, backend="dask").fit([X, np.ones((21, 3))])


def test_dask_sampled_initialisation_gives_the_numpy_result(planted, client, monkeypatch) -> None:
    import spatialmultiomics.factorize._init as init_module
    from spatialmultiomics.factorize._dask import _prepare
    from spatialmultiomics.factorize._rowpass import RowData

    blocks = _blocks(planted)
    data, scales, _ = _prepare(blocks, None, 70)
    rows = init_module.sample_rows(300, 60)
    got, expected = data.take_rows(rows), RowData.build(blocks, scales).take_rows(rows)
    np.testing.assert_array_equal(got.sparse.toarray(), expected.sparse.toarray())
    np.testing.assert_array_equal(got.dense, expected.dense)
    assert got.norm_x2 == pytest.approx(expected.norm_x2, rel=1e-12)
    # the large-input initialisation (power iterations on 60 of the 300 rows) on both backends
    monkeypatch.setattr(init_module, "LARGE_INPUT_WORK", 0.0)
    monkeypatch.setattr(init_module, "SAMPLE_ROWS", 60)
    kwargs = {"solver": "hals", "max_iter": 15, "tol": 0.0}
    dask_blocks = [da.from_array(blocks[0], chunks=(70, -1), asarray=False), da.from_array(blocks[1], chunks=(70, -1))]
    reference, model = JointNMF(4, **kwargs), JointNMF(4, backend="dask", **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        W_ref = reference.fit_transform(blocks)
        W = model.fit_transform(dask_blocks).compute()
    np.testing.assert_allclose(W, W_ref, rtol=1e-4, atol=1e-5 * W_ref.max())
    # X.T @ W is summed in float32 within chunks of rows by the numba kernels (one chunk of 300 rows in memory, five of
    # 70 here): the curves agree to float32 rounding carried through 15 iterations, not to the float64 sums' 1e-5
    np.testing.assert_allclose(model.loss_curve_, reference.loss_curve_, rtol=1e-4)


def test_the_test_cluster_starts_while_port_8787_is_taken(cluster_kwargs) -> None:
    # the cause of the flaky start: with the defaults the scheduler asks for port 8787 on every interface; when
    # another process holds it, distributed warns and tornado leaks the socket whose bind failed (both errors here)
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as hold:
        try:
            hold.bind(("0.0.0.0", 8787))
            hold.listen(1)
        except OSError:  # already held by another process: the same condition
            pass
        with distributed.LocalCluster(**cluster_kwargs) as cluster, distributed.Client(cluster) as c:
            assert c.submit(sum, [1, 2]).result() == 3
            assert cluster.scheduler.http_server.port != 8787


@pytest.mark.parametrize("thread_safe", [True, False])
def test_dask_chunk_tasks_run_the_numba_kernels_as_the_numpy_backend(planted, client, monkeypatch, thread_safe) -> None:
    """Above the size where the NumPy backend runs the numba kernels, the chunk tasks run them too (one thread
    each, two worker threads at once, or taking turns when numba's threading layer is not thread-safe): same result."""
    from spatialmultiomics.factorize import _rowpass
    from spatialmultiomics.factorize._dask import DaskRowData

    monkeypatch.setattr(_rowpass, "NUMBA_MIN_WORK", 0.0)  # the small test data take the numba path
    monkeypatch.setattr(_rowpass, "_thread_safe_layer", lambda: thread_safe)
    used = []
    original = DaskRowData.use_numba
    monkeypatch.setattr(DaskRowData, "use_numba", lambda self, k: used.append(original(self, k)) or used[-1])
    blocks = _blocks(planted)
    kwargs = {"solver": "hals", "max_iter": 15, "tol": 0.0}
    dask_blocks = [da.from_array(blocks[0], chunks=(70, -1), asarray=False), da.from_array(blocks[1], chunks=(100, -1))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reference = JointNMF(4, **kwargs)
        W_ref = reference.fit_transform(blocks)
        model = JointNMF(4, backend="dask", **kwargs)
        W = model.fit_transform(dask_blocks).compute()
    assert used and all(used)
    np.testing.assert_allclose(W, W_ref, rtol=1e-4, atol=1e-5 * W_ref.max())
    # X.T @ W is summed in float32 within chunks of rows by the numba kernels (one chunk of 300 rows in memory, five of
    # 70 here): the curves agree to float32 rounding carried through 15 iterations, not to the float64 sums' 1e-5
    np.testing.assert_allclose(model.loss_curve_, reference.loss_curve_, rtol=1e-4)


def test_dask_chunk_tasks_run_the_width_kernels_when_the_whole_matrix_is_large(planted, client, monkeypatch) -> None:
    """The kernels compiled for the width (float32 HALS sweeps in registers, the IR CSR products) run in the chunk
    tasks when the whole matrix passes the in-memory backend's size rule, though no chunk does: the in-memory
    result to the same tolerances."""
    from spatialmultiomics.factorize import _numba, _rowpass
    from spatialmultiomics.factorize._dask import DaskRowData

    monkeypatch.setattr(_rowpass, "NUMBA_MIN_WORK", 0.0)
    monkeypatch.setattr(_numba, "FIXED_MIN_WORK", 300 * 72 * 4 * 0.5)  # the whole matrix passes, a chunk does not
    decided = []
    original = DaskRowData.use_fixed
    monkeypatch.setattr(DaskRowData, "use_fixed", lambda self, k: decided.append(original(self, k)) or decided[-1])
    monkeypatch.setattr(_numba, "_ENTRIES", {})
    blocks = _blocks(planted)
    kwargs = {"solver": "hals", "max_iter": 15, "tol": 0.0}
    dask_blocks = [da.from_array(blocks[0], chunks=(70, -1), asarray=False), da.from_array(blocks[1], chunks=(100, -1))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        W_ref = JointNMF(4, **kwargs).fit_transform(blocks)
        reference_kernels = {key[0].py_func.__name__ for key in _numba._ENTRIES}
        _numba._ENTRIES.clear()
        model = JointNMF(4, backend="dask", **kwargs)
        W = model.fit_transform(dask_blocks).compute()
    assert decided == [True]
    assert (
        {key[0].py_func.__name__ for key in _numba._ENTRIES}
        == reference_kernels
        == {
            "_product_fixed",
            "_tproduct_fixed",
            "_sweep_rows_fixed",
        }
    )
    np.testing.assert_allclose(W, W_ref, rtol=1e-4, atol=1e-5 * W_ref.max())
