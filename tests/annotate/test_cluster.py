"""Clustering for annotation: joint embedding, shared-nearest-neighbour graph, Leiden (annotate._cluster)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from spatialmultiomics._errors import InputError
from spatialmultiomics.annotate._cluster import (
    _assign_rest,
    _igraph,
    _relabel_by_size,
    joint_embedding,
    leiden,
    snn_graph,
)

pytest.importorskip("leidenalg")
pytest.importorskip("igraph")


def _block_variance(Y: np.ndarray) -> float:
    return float(np.square(Y, dtype=np.float64).sum() / Y.shape[0])


# ---------------------------------------------------------------- embedding


def test_joint_embedding_balances_blocks_and_keeps_small_dense_blocks_as_columns():
    rng = np.random.default_rng(0)
    n = 200
    small = rng.normal(5.0, 1000.0, (n, 4))  # a panel of 4 channels on a huge scale
    mid = rng.gamma(2.0, 1.0, (n, 10))  # exactly n_pcs columns: kept too
    E = joint_embedding([small, mid], n_pcs=10)
    assert E.dtype == np.float32 and E.shape == (n, 14)
    assert _block_variance(E[:, :4]) == pytest.approx(1.0, rel=1e-5)
    assert _block_variance(E[:, 4:]) == pytest.approx(1.0, rel=1e-5)
    # the columns themselves, centred and divided by the square root of the block's total variance
    c = small - small.mean(axis=0)
    np.testing.assert_allclose(E[:, :4], c / np.sqrt(np.square(c).sum() / n), rtol=1e-4, atol=1e-5)
    c = mid - mid.mean(axis=0)
    np.testing.assert_allclose(E[:, 4:], c / np.sqrt(np.square(c).sum() / n), rtol=1e-4, atol=1e-5)


def test_joint_embedding_reduces_big_sparse_blocks_without_densifying(monkeypatch):
    rng = np.random.default_rng(1)
    n, p, k = 150, 60, 8
    # low-rank signal plus noise, then sparsified: the top k directions are well separated
    X = rng.normal(size=(n, 3)) @ rng.normal(size=(3, p)) * 3 + rng.normal(size=(n, p))
    X[rng.random((n, p)) < 0.6] = 0.0
    X = np.abs(X)
    S = sp.csr_matrix(X)
    dense_panel = rng.normal(size=(n, 3))

    def refuse(*_args, **_kwargs):
        msg = "densified"
        raise AssertionError(msg)

    for cls in (sp.csr_matrix, sp.csc_matrix, sp.coo_matrix, sp.csr_array, sp.csc_array):
        monkeypatch.setattr(cls, "toarray", refuse)
        monkeypatch.setattr(cls, "todense", refuse)
    E = joint_embedding([dense_panel, S], n_pcs=k, seed=0)
    monkeypatch.undo()
    assert E.shape == (n, 3 + k)
    assert _block_variance(E[:, :3]) == pytest.approx(1.0, rel=1e-5)
    assert _block_variance(E[:, 3:]) == pytest.approx(1.0, rel=1e-5)
    # the sparse block spans the top-k principal subspace of the centred data
    Xc = X - X.mean(axis=0)
    U, s, _ = np.linalg.svd(Xc, full_matrices=False)
    scores = U[:, :k] * s[:k]
    np.testing.assert_allclose(np.abs(E[:, 3:]), np.abs(scores / np.sqrt(np.square(scores).sum() / n)), atol=2e-3)


def test_joint_embedding_edge_cases():
    with pytest.raises(InputError, match="at least one modality block"):
        joint_embedding([])
    const = np.ones((20, 3))
    E = joint_embedding([const, np.arange(40.0).reshape(20, 2)])
    np.testing.assert_array_equal(E[:, :3], 0.0)  # no variance: zeros, not NaN
    assert _block_variance(E[:, 3:]) == pytest.approx(1.0, rel=1e-6)


# ---------------------------------------------------------------- shared-nearest-neighbour graph


def _brute_snn(E: np.ndarray, k: int) -> np.ndarray:
    n = E.shape[0]
    D = np.linalg.norm(E[:, None, :] - E[None, :, :], axis=2)
    np.fill_diagonal(D, np.inf)
    nn = np.argsort(D, axis=1)[:, :k]
    sets = [set(nn[i].tolist()) | {i} for i in range(n)]
    G = np.zeros((n, n))
    for i in range(n):
        for j in nn[i]:
            w = len(sets[i] & sets[j]) / len(sets[i] | sets[j])
            G[i, j] = max(G[i, j], w)
            G[j, i] = max(G[j, i], w)
    return G


@pytest.mark.parametrize(("d", "k"), [(3, 5), (20, 7)])  # cKDTree below 17 dimensions, brute force above
def test_snn_graph_is_the_jaccard_graph_of_the_knn_sets(d, k):
    E = np.random.default_rng(d).normal(size=(70, d)).astype(np.float32)
    G = snn_graph(E, n_neighbors=k)
    assert sp.issparse(G) and G.shape == (70, 70)
    A = G.toarray()
    np.testing.assert_array_equal(A, A.T)
    assert np.all(np.diag(A) == 0)
    assert A[A > 0].max() <= 1.0
    assert G.nnz == np.count_nonzero(A)  # no stored zeros
    np.testing.assert_allclose(A, _brute_snn(E.astype(np.float64), k), atol=1e-6)


def test_snn_graph_tiny_inputs():
    assert snn_graph(np.zeros((2, 3))).nnz == 0
    G = snn_graph(np.random.default_rng(0).normal(size=(5, 2)), n_neighbors=15)  # k capped at n - 1
    assert np.count_nonzero(G.toarray()) == 5 * 4


# ---------------------------------------------------------------- Leiden


def _planted_graph(sizes=(40, 30, 20), p_in=0.5, n_between=2, seed=0):
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(len(sizes)), sizes)
    n = truth.size
    A = np.zeros((n, n))
    for b in range(len(sizes)):
        idx = np.flatnonzero(truth == b)
        mask = np.triu(rng.random((idx.size, idx.size)) < p_in, 1)
        A[np.ix_(idx, idx)] = mask
    for a in range(len(sizes)):  # a few weak edges between every two blocks: one connected graph
        for b in range(a + 1, len(sizes)):
            for _ in range(n_between):
                i, j = rng.choice(np.flatnonzero(truth == a)), rng.choice(np.flatnonzero(truth == b))
                A[i, j] = 0.2
    A = A + A.T
    return sp.csr_matrix(A), truth


def test_leiden_recovers_planted_blocks_numbered_by_size():
    from sklearn.metrics import adjusted_rand_score

    G, truth = _planted_graph()
    lab = leiden(G, resolution=1.0, seed=0)
    assert adjusted_rand_score(truth, lab) == 1.0
    np.testing.assert_array_equal(lab, truth)  # block sizes 40 > 30 > 20: numbered 0, 1, 2
    # deterministic for a seed; the same with an igraph graph
    np.testing.assert_array_equal(leiden(G, resolution=1.0, seed=0), lab)
    np.testing.assert_array_equal(leiden(_igraph(G), resolution=1.0, seed=0), lab)
    for seed in (1, 7):
        assert adjusted_rand_score(truth, leiden(G, resolution=1.0, seed=seed)) == 1.0


def test_leiden_resolution_and_empty_graph():
    G, _ = _planted_graph()
    assert np.unique(leiden(G, resolution=0.001, seed=0)).size == 1  # one connected graph, one cluster
    assert np.unique(leiden(G, resolution=10.0, seed=0)).size > 3
    assert leiden(sp.csr_matrix((0, 0)), seed=0).size == 0


def test_igraph_conversion_keeps_edges_and_weights():
    G, _ = _planted_graph(sizes=(6, 5), p_in=0.7, n_between=3)
    g = _igraph(G)
    assert g.vcount() == 11 and not g.is_directed()
    assert g.ecount() == sp.triu(G, 1).nnz
    for e in g.es:
        assert G[e.source, e.target] == e["weight"]


def test_relabel_by_size():
    np.testing.assert_array_equal(_relabel_by_size(np.array([5, 5, 2, 2, 2, 9])), [1, 1, 0, 0, 0, 2])
    # equal sizes: first appearance first
    np.testing.assert_array_equal(_relabel_by_size(np.array([7, 3, 3, 7, 1])), [0, 1, 1, 0, 2])
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 9, 500)
    new = _relabel_by_size(lab)
    sizes = np.bincount(new)
    assert np.all(np.diff(sizes) <= 0)
    # a relabelling: the same partition
    pairs = set(zip(lab.tolist(), new.tolist(), strict=True))
    assert len(pairs) == np.unique(lab).size == np.unique(new).size


def test_assign_rest_is_the_majority_of_the_nearest_sampled_cells():
    rng = np.random.default_rng(2)
    E = rng.normal(size=(300, 3)).astype(np.float32)
    sample = np.sort(rng.choice(300, size=80, replace=False))
    lab = rng.integers(0, 4, 80)
    k = 7
    out = _assign_rest(E, sample, lab, k)
    np.testing.assert_array_equal(out[sample], lab)
    for i in np.setdiff1d(np.arange(300), sample):
        d = np.linalg.norm(E[sample] - E[i], axis=1)
        nearest = np.argsort(d)[:k]
        # majority vote; ties go to the smallest label
        assert out[i] == np.bincount(lab[nearest], minlength=4).argmax()


def test_merge_small_clusters_joins_the_most_connected_large_cluster():
    import scipy.sparse as sp

    from spatialmultiomics.annotate._cluster import merge_small_clusters

    # clusters: A (0-39), B (40-79), tiny t (80-84) wired to B by 3 edges and to A by 1
    n = 85
    edges = [(i, j) for i in range(40) for j in range(i + 1, 40) if (j - i) % 7 == 1]
    edges += [(i, j) for i in range(40, 80) for j in range(i + 1, 80) if (j - i) % 7 == 1]
    edges += [(80, 81), (81, 82), (82, 83), (83, 84), (80, 45), (81, 46), (82, 47), (84, 3)]
    r, c = np.array(edges).T
    G = sp.csr_matrix((np.ones(len(edges)), (r, c)), shape=(n, n))
    G = (G + G.T).tocsr()
    labels = np.r_[np.zeros(40, int), np.ones(40, int), np.full(5, 2)]
    out = merge_small_clusters(G, labels, min_size=30)
    assert set(out[80:]) == {out[40]} and out[0] != out[40]
    assert np.unique(out).size == 2
    # nothing below the size: unchanged (up to numbering by size)
    same = merge_small_clusters(G, labels, min_size=5)
    assert np.unique(same).size == 3
