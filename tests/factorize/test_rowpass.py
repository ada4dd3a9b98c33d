"""RowData and the fused row pass: NumPy reference vs brute force, numba kernels vs the NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from spatialmultiomics.factorize._rowpass import RowData, row_sweeps

numba = pytest.importorskip("numba")


def _blocks(n: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    X1 = sp.random(n, 30, density=0.2, format="csr", dtype=np.float32, random_state=seed)
    X2 = rng.random((n, 7)).astype(np.float32)
    X3 = sp.csc_matrix(sp.random(n, 5, density=0.3, dtype=np.float32, random_state=seed + 1))
    X4 = rng.random((n, 3)).astype(np.float32)
    scales = np.array([0.5, 2.0, 1.5, 0.3])
    joint = np.hstack(
        [s * (X.toarray() if sp.issparse(X) else X) for X, s in zip([X1, X2, X3, X4], scales, strict=True)]
    )
    return [X1, X2, X3, X4], scales, joint.astype(np.float64)


def _brute_sweeps(w, xg, gram, update, max_inner, delta):
    """Row by row, coordinate by coordinate: the rule as written in the docstring."""
    w = w.copy()
    for r in range(w.shape[0]):
        first = 0.0
        for it in range(max_inner):
            before = w[r].copy()
            if update == 1:
                for j in range(w.shape[1]):
                    if gram[j, j] > 0:
                        w[r, j] = max(0.0, w[r, j] + (xg[r, j] - gram[j] @ w[r]) / gram[j, j])
            else:
                den = gram @ w[r]
                w[r] = w[r] * xg[r] / np.maximum(den, np.finfo(np.float32).eps * den.max() + 1e-30)
            move = float(np.sum((w[r] - before) ** 2))
            if it == 0:
                first = move
                if first == 0:
                    break
            elif move <= delta**2 * first:
                break
    return w


def test_build_keeps_columns_scales_and_norm() -> None:
    blocks, scales, joint = _blocks()
    data = RowData.build(blocks, scales)
    assert data.sparse.format == "csr"
    assert data.sparse.shape == (300, 35)
    assert data.dense.shape == (300, 10)
    np.testing.assert_array_equal(data.cols_s, np.r_[0:30, 37:42])
    np.testing.assert_array_equal(data.cols_d, np.r_[30:37, 42:45])
    assert data.norm_x2 == pytest.approx(np.sum(joint**2), rel=1e-6)
    assert data.total_sum() == pytest.approx(joint.sum(), rel=1e-6)
    np.testing.assert_allclose(data.row_norms2(), np.sum(joint**2, axis=1), rtol=1e-5)
    single = RowData.build([blocks[0]], [1.0])
    assert single.sparse is blocks[0]  # one CSR block: no copy
    assert single.dense is None


@pytest.mark.parametrize("use_numba", [False, True])
def test_products_match_dense(use_numba: bool) -> None:
    blocks, scales, joint = _blocks()
    data = RowData.build(blocks, scales)
    rng = np.random.default_rng(1)
    M, B = rng.random((45, 4)), rng.random((300, 4)).astype(np.float32)
    np.testing.assert_allclose(data.dot(M, use_numba=use_numba), joint @ M, rtol=1e-5)
    np.testing.assert_allclose(data.tdot(B, use_numba=use_numba), joint.T @ B, rtol=1e-5)


def test_orthonormal_spans_the_columns() -> None:
    rng = np.random.default_rng(0)
    Y = (rng.random((500, 6)) @ np.diag([1, 10, 100, 1, 1, 1e3])).astype(np.float32)
    Q = RowData.orthonormal(Y)
    np.testing.assert_allclose(Q.T.astype(np.float64) @ Q, np.eye(6), atol=1e-5)
    proj = Q @ (Q.T @ Y)
    np.testing.assert_allclose(proj, Y, rtol=1e-3, atol=1e-3 * np.abs(Y).max())
    rank_deficient = np.hstack([Y[:, :3], Y[:, :3]])  # falls back to Householder QR
    Q2 = RowData.orthonormal(rank_deficient)
    assert Q2.shape == (500, 6)
    assert np.isfinite(Q2).all()


@pytest.mark.parametrize("update", [1, 2])
def test_row_sweeps_equal_the_row_by_row_rule(update: int) -> None:
    rng = np.random.default_rng(update)
    B = rng.random((4, 12))
    gram = B @ B.T
    w = rng.random((50, 4))
    xg = rng.random((50, 12)) @ B.T
    expected = _brute_sweeps(w, xg, gram, update, 6, 0.1)
    np.testing.assert_allclose(row_sweeps(w.copy(), xg, gram, update, 6, 0.1), expected, rtol=1e-10)


@pytest.mark.parametrize("update", ["none", "hals", "mu"])
def test_numpy_row_pass_is_exact(update: str) -> None:
    blocks, scales, joint = _blocks()
    data = RowData.build(blocks, scales)
    rng = np.random.default_rng(2)
    G = rng.random((4, 45)).astype(np.float32)
    W0 = rng.random((300, 4)).astype(np.float32)
    W = W0.copy()
    stats = data.row_pass(G, W, update=update, max_inner=4, use_numba=False)
    G64 = G.astype(np.float64)
    if update == "none":
        np.testing.assert_array_equal(W, W0)
    else:
        code = {"hals": 1, "mu": 2}[update]
        ref = _brute_sweeps(W0.astype(np.float64), joint @ G64.T, G64 @ G64.T, code, 4, 0.1)
        np.testing.assert_allclose(W, ref, rtol=1e-5, atol=1e-6)
    W64 = W.astype(np.float64)
    np.testing.assert_allclose(stats.XtW, joint.T @ W64, rtol=1e-10)
    np.testing.assert_allclose(stats.WtW, W64.T @ W64, rtol=1e-10)
    assert stats.cross == pytest.approx(np.sum(W64 * (joint @ G64.T)), rel=1e-10)
    assert stats.quad == pytest.approx(np.sum((W64 @ (G64 @ G64.T)) * W64), rel=1e-10)
    # the loss of the pass is the exact squared error of (W, G)
    loss = data.norm_x2 - 2 * stats.cross + stats.quad
    assert loss == pytest.approx(np.sum((joint - W64 @ G64) ** 2), rel=1e-8)


@pytest.mark.parametrize("update", ["none", "hals", "mu"])
@pytest.mark.parametrize("rows", [None, (37, 211)])
def test_numba_row_pass_matches_numpy(update: str, rows) -> None:
    blocks, scales, _ = _blocks()
    data = RowData.build(blocks, scales)
    rng = np.random.default_rng(3)
    G = rng.random((4, 45)).astype(np.float32)
    W0 = rng.random((300, 4)).astype(np.float32)
    Wa, Wb = W0.copy(), W0.copy()
    a = data.row_pass(G, Wa, update=update, max_inner=5, rows=rows, use_numba=True)
    b = data.row_pass(G, Wb, update=update, max_inner=5, rows=rows, use_numba=False)
    np.testing.assert_allclose(Wa, Wb, rtol=1e-4, atol=1e-6)
    if rows is not None:  # rows outside the batch are untouched
        np.testing.assert_array_equal(Wa[: rows[0]], W0[: rows[0]])
        np.testing.assert_array_equal(Wa[rows[1] :], W0[rows[1] :])
    np.testing.assert_allclose(a.XtW, b.XtW, rtol=1e-5, atol=1e-6 * np.abs(b.XtW).max())
    np.testing.assert_allclose(a.WtW, b.WtW, rtol=1e-5)
    assert a.cross == pytest.approx(b.cross, rel=1e-6)
    assert a.quad == pytest.approx(b.quad, rel=1e-6)


def test_numba_row_pass_does_not_depend_on_the_number_of_threads() -> None:
    blocks, scales, _ = _blocks(n=5000)
    rng = np.random.default_rng(4)
    G = rng.random((4, 45)).astype(np.float32)
    W0 = rng.random((5000, 4)).astype(np.float32)
    out = []
    for threads in (1, 2):
        data = RowData.build(blocks, scales, n_threads=threads)
        W = W0.copy()
        stats = data.row_pass(G, W, update="hals", max_inner=3, use_numba=True)
        out.append((W, stats, data.tdot(W, use_numba=True)))
    np.testing.assert_array_equal(out[0][0], out[1][0])
    np.testing.assert_array_equal(out[0][1].XtW, out[1][1].XtW)
    assert out[0][1].cross == out[1][1].cross
    np.testing.assert_array_equal(out[0][2], out[1][2])


def test_take_rows_and_concat() -> None:
    blocks, scales, joint = _blocks()
    data = RowData.build(blocks, scales)
    rows = np.array([0, 3, 4, 150, 299])
    part = data.take_rows(rows)
    assert part.n_rows == 5
    assert part.n_features == data.n_features
    assert part.norm_x2 == pytest.approx(np.sum(joint[rows] ** 2), rel=1e-6)
    assert part.total_sum() == pytest.approx(joint[rows].sum(), rel=1e-6)
    M = np.random.default_rng(2).random((45, 3))
    np.testing.assert_allclose(part.dot(M, use_numba=False), joint[rows] @ M, rtol=1e-5)
    joined = RowData.concat([data.take_rows(rows[:2]), data.take_rows(rows[2:])])
    np.testing.assert_array_equal(joined.sparse.toarray(), part.sparse.toarray())
    np.testing.assert_array_equal(joined.dense, part.dense)
    assert joined.norm_x2 == pytest.approx(part.norm_x2, rel=1e-12)


def test_sums_given_to_build_are_used() -> None:
    from spatialmultiomics.factorize._kernels import sum_and_squared_norm

    blocks, scales, joint = _blocks()
    sums, squares = zip(*[sum_and_squared_norm(X) for X in blocks], strict=True)
    data = RowData.build(blocks, scales, squared_norms=squares, sums=sums)
    assert data.weighted_sum == pytest.approx(joint.sum(), rel=1e-6)
    assert data.total_sum() == data.weighted_sum
    assert data.norm_x2 == pytest.approx(np.sum(joint**2), rel=1e-6)
    one_sparse = RowData.build([blocks[0]], [0.5])  # one scale for the CSR part: sum of its values
    assert one_sparse.total_sum() == pytest.approx(0.5 * blocks[0].toarray().astype(np.float64).sum(), rel=1e-12)


def test_orthonormal_one_round() -> None:
    rng = np.random.default_rng(0)
    Y = (rng.random((500, 6)) @ np.diag([1, 10, 100, 1, 1, 1e3])).astype(np.float32)
    Q = RowData.orthonormal(Y, rounds=1)
    np.testing.assert_allclose(Q.T.astype(np.float64) @ Q, np.eye(6), atol=1e-3)
    proj = Q @ np.linalg.lstsq(Q, Y, rcond=None)[0]
    np.testing.assert_allclose(proj, Y, atol=1e-4 * np.abs(Y).max())


@pytest.mark.parametrize("update", [1, 2])
def test_numba_sweeps_equal_the_rule_row_by_row(update: int) -> None:
    """The numba sweeps (rows in lockstep groups, rows that stopped skipped) give every row the rule's result."""
    from spatialmultiomics.factorize._numba import sweep_rows

    rng = np.random.default_rng(7)
    n, k = 203, 6  # not a multiple of the group size; some rows stop after one sweep, others run to max_inner
    G = rng.random((k, 30))
    if update == 1:
        G[2] *= 0.0  # an empty component: coordinate descent never updates its coordinate
    gram = G @ G.T
    W0 = (rng.random((n + 5, k)) * (rng.random((n + 5, k)) < 0.6)).astype(np.float32)
    xg = (rng.random((n, k)) * 3.0).astype(np.float32)
    xg[::7] = (W0[5::7] @ gram).astype(np.float32)  # rows already at their optimum: the first sweep barely moves
    W = W0.copy()
    cross0, quad0 = sweep_rows(W, xg, gram, 5, update, 6, 0.1, 3)
    expected = _brute_sweeps(W0[5:].astype(np.float64), xg.astype(np.float64), gram, update, 6, 0.1)
    np.testing.assert_allclose(W[5:], expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(W[:5], W0[:5])
    w0 = W0[5:].astype(np.float64)
    assert cross0 == pytest.approx(np.sum(w0 * xg), rel=1e-12)
    assert quad0 == pytest.approx(np.sum((w0 @ gram) * w0), rel=1e-12)


def test_numba_hals_blocks_equal_the_row_kernel_bit_for_bit() -> None:
    """The HALS sweeps on blocks of rows along the SIMD lanes give each row exactly the row-by-row kernel's values."""
    from spatialmultiomics.factorize._numba import _BLOCK, _sweep_block_hals, _sweep_chunk

    rng = np.random.default_rng(3)
    n, k = 3 * _BLOCK + 17, 7  # a last block part full; rows stopping at every sweep count
    G = rng.random((k, 40))
    G[4] *= 0.0  # an empty component (its coordinate is never updated)
    gram = G @ G.T
    inv = np.array([1.0 / gram[j, j] if gram[j, j] > 0 else 0.0 for j in range(k)])
    W0 = (rng.random((n + 3, k)) * (rng.random((n + 3, k)) < 0.6)).astype(np.float32)
    xg = (rng.random((n, k)) * 3.0).astype(np.float32)
    xg[::5] = (W0[3::5] @ gram).astype(np.float32)  # rows at their optimum stop after the first sweep
    for max_inner in (1, 3, 8):
        W_row, W_block = W0.copy(), W0.copy()
        expected = _sweep_chunk(W_row, xg, gram, inv, 3, 5, n, 1, max_inner, 0.01)
        got = _sweep_block_hals(W_block, xg, gram, inv, 3, 5, n, max_inner, 0.01)
        np.testing.assert_array_equal(W_block, W_row)
        assert got == expected


@pytest.mark.parametrize(("width", "index_dtype"), [(3, np.int32), (20, np.int32), (20, np.int64)])
def test_numba_fixed_width_scatter_equals_the_generic_kernel(width: int, index_dtype: type) -> None:
    """X.T @ B compiled for one width (the LLVM IR row kernel) gives the generic loop's sums bit for bit."""
    from spatialmultiomics.factorize._numba import _tproduct_any, csr_dense_tproduct

    rng = np.random.default_rng(width)
    X = sp.random(1500, 90, density=0.2, format="csr", rng=rng, dtype=np.float32)
    X.indptr, X.indices = X.indptr.astype(index_dtype), X.indices.astype(index_dtype)
    B = rng.random((1500, width), dtype=np.float32)
    expected = _tproduct_any(X.indptr, X.indices, X.data, B, 90, 3)
    got = csr_dense_tproduct(X.indptr, X.indices, X.data, B, 90, 3, fixed=True)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_allclose(got, X.T.astype(np.float64) @ B.astype(np.float64), rtol=1e-5)


def test_numba_fixed_width_scatter_of_a_matrix_that_is_not_canonical() -> None:
    """Rows with unsorted and repeated columns (a CSR matrix that is not canonical): the kernel for one width, which
    updates four rows of the output at once where the columns increase, still gives the generic loop's sums bit for
    bit, and the product with the duplicates added."""
    from spatialmultiomics.factorize._numba import _tproduct_any, csr_dense_tproduct

    rng = np.random.default_rng(11)
    n, m, width = 300, 12, 20
    counts = rng.integers(0, 30, size=n)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    indices = rng.integers(0, m, size=indptr[-1]).astype(np.int32)  # unsorted, with repeats in most rows
    indices[indptr[7] : indptr[7] + 4] = 5  # four equal columns in one step
    data = rng.random(indptr[-1], dtype=np.float32)
    B = rng.random((n, width), dtype=np.float32)
    X = sp.csr_matrix((data, indices, indptr), shape=(n, m))
    assert not X.has_canonical_format
    expected = _tproduct_any(indptr, indices, data, B, m, 2)
    got = csr_dense_tproduct(indptr, indices, data, B, m, 2, fixed=True)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_allclose(got, X.T.astype(np.float64) @ B.astype(np.float64), rtol=1e-5)


@pytest.mark.parametrize(("width", "index_dtype"), [(3, np.int32), (20, np.int32), (20, np.int64), (40, np.int32)])
def test_numba_fixed_width_product_equals_the_product(width: int, index_dtype: type) -> None:
    """X @ B compiled for one width (<= 32; the generic loop above, whatever ``fixed``) gives the float64 product to
    float32 rounding, rows with every number of stored values modulo the kernel's four per step and empty rows alike."""
    from spatialmultiomics.factorize._numba import csr_dense_product

    rng = np.random.default_rng(width)
    keep = np.ones(700, dtype=np.float32)
    keep[5] = 0.0  # an empty row
    X = (sp.diags(keep) @ sp.random(700, 90, density=0.15, format="csr", rng=rng, dtype=np.float32)).tocsr()
    X.eliminate_zeros()
    X.indptr, X.indices = X.indptr.astype(index_dtype), X.indices.astype(index_dtype)
    B = rng.random((90, width), dtype=np.float32)
    got = csr_dense_product(X.indptr, X.indices, X.data, B, fixed=True)
    assert got.dtype == np.float32
    assert set(np.diff(X.indptr) % 4) == {0, 1, 2, 3}
    np.testing.assert_allclose(got, X.astype(np.float64) @ B.astype(np.float64), rtol=2e-6, atol=1e-6)
    assert not got[5].any()


def test_numba_pass_with_a_scratch_array_gives_the_same_pass() -> None:
    """A scratch array kept across passes (the solver's) gives the same loadings and sums as a fresh one, for
    all rows and for a mini-batch of rows, with a CSR and a dense block and with the dense block alone."""
    rng = np.random.default_rng(5)
    n, k = 900, 6
    rna = sp.random(n, 70, density=0.2, format="csr", rng=rng, dtype=np.float32)
    prot = rng.random((n, 9), dtype=np.float32)
    for blocks, scales in (([rna, prot], [1.0, 0.4]), ([prot], [1.0])):
        data = RowData.build(blocks, scales)
        G = rng.random((k, data.n_features)).astype(np.float32)
        W0 = rng.random((n, k), dtype=np.float32)
        scratch = np.full((n, k), np.nan, dtype=np.float32)
        for rows in (None, (100, 437)):
            W_fresh, W_kept = W0.copy(), W0.copy()
            fresh = data.row_pass(G, W_fresh, update="hals", max_inner=3, rows=rows, use_numba=True)
            kept = data.row_pass(G, W_kept, update="hals", max_inner=3, rows=rows, use_numba=True, scratch=scratch)
            np.testing.assert_array_equal(W_kept, W_fresh)
            np.testing.assert_array_equal(kept.XtW, fresh.XtW)
            assert (kept.cross, kept.quad, kept.cross0, kept.quad0) == (
                fresh.cross,
                fresh.quad,
                fresh.cross0,
                fresh.quad0,
            )


@pytest.mark.parametrize("k", [1, 7, 20])
def test_numba_hals_sweeps_in_registers_match_the_float64_kernel(k: int) -> None:
    """The HALS sweeps compiled for one width (float32, ``gram @ w`` of a tile of rows in registers) reach the
    float64 block kernel's rows to float32 rounding after one sweep, and after several sweeps each row's objective
    ``w @ gram @ w / 2 - w @ x`` within 1e-5 of it (a row may stop one sweep apart at the threshold); the traces
    of the rows as they came agree to 1e-6. Rows stopping after every number of sweeps, an empty component (its
    coordinate skipped), a last block part full, rows that never move; the same result on any number of chunks."""
    from spatialmultiomics.factorize._numba import _sweep_rows_any, sweep_rows

    rng = np.random.default_rng(k)
    n = 5 * 64 + 29
    G = rng.random((k, 40))
    if k > 4:
        G[4] = 0.0
    gram = G @ G.T
    W0 = (rng.random((n + 3, k)) * (rng.random((n + 3, k)) < 0.6)).astype(np.float32)
    xg = (rng.random((n, k)) * 3.0).astype(np.float32)
    xg[::5] = (W0[3::5] @ gram).astype(np.float32)  # rows at their optimum stop after the first sweep

    def objective(W: np.ndarray) -> np.ndarray:
        w = W[3:].astype(np.float64)
        return 0.5 * np.einsum("ij,jk,ik->i", w, gram, w) - np.einsum("ij,ij->i", w, xg)

    for max_inner in (1, 3, 8):
        W_any, W_fixed = W0.copy(), W0.copy()
        expected = _sweep_rows_any(W_any, xg, gram, 3, 1, max_inner, 0.1, 3)
        got = sweep_rows(W_fixed, xg, gram, 3, 1, max_inner, 0.1, 3, fixed=True)
        np.testing.assert_allclose(got, expected, rtol=1e-6)
        np.testing.assert_array_equal(W_fixed[:3], W0[:3])  # rows outside the range untouched
        scale = float(np.abs(objective(W0)).max())
        if max_inner == 1:
            np.testing.assert_allclose(W_fixed, W_any, rtol=1e-5, atol=1e-5 * float(W_any.max()))
        np.testing.assert_allclose(objective(W_fixed), objective(W_any), rtol=0, atol=1e-5 * scale)
        assert np.all(objective(W_fixed) <= objective(W0) + 1e-6 * scale)  # every row improved or stayed
        W_other = W0.copy()
        assert sweep_rows(W_other, xg, gram, 3, 1, max_inner, 0.1, 7, fixed=True) == pytest.approx(got, rel=1e-12)
        np.testing.assert_array_equal(W_other, W_fixed)
