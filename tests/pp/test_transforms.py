from __future__ import annotations

from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pytest
import scipy.sparse as sp

from spatialmultiomics import InputError, Keys
from spatialmultiomics.pp import (
    PROTEIN_TRANSFORMS,
    apply_intensity_scaling,
    preprocess,
    scale_intensities,
    stored_intensity_transform,
)
from spatialmultiomics.pp._transforms import (
    MASS_CYTOMETRY_COFACTOR,
    background_cofactors,
    choose_transform,
    clr,
    is_count_matrix,
)

ALLOWED = (
    r"protein_transform must be one of \['auto', 'arcsinh', 'arcsinh_background', 'clr', 'log1p', 'none'\], "
    r"got 'sqrt'"
)


def _modality(X: np.ndarray | sp.spmatrix, platform: str | None, names: list[str] | None = None) -> ad.AnnData:
    adata = ad.AnnData(X)
    adata.var_names = names or [f"ch{j}" for j in range(X.shape[1])]
    if platform is not None:
        adata.uns[Keys.PROVENANCE] = {"platform": platform, "kind": "intensity"}
    return adata


def _counts(seed: int = 0, n: int = 300, p: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.poisson(rng.gamma(2.0, 5.0, p), (n, p)).astype(np.float32)
    X[: n // 5, 0] += rng.poisson(200, n // 5)  # a positive population on channel 0
    X[7] = 0  # a cell without any count
    return X


def _intensities(seed: int = 1, n: int = 400) -> np.ndarray:
    rng = np.random.default_rng(seed)
    bg = rng.normal(1000, 50, (n, 3))
    bg[: n // 4, 0] += 20000  # bright positives on channel 0
    bg[:, 2] = np.abs(rng.normal(0, 2, n))  # a background-subtracted channel
    return bg.astype(np.float32)


def _seurat_clr_row(x: np.ndarray) -> np.ndarray:
    """Seurat's CLR kernel for one cell (margin = 2), written out literally."""
    return np.log1p(x / np.exp(np.sum(np.log1p(x[x > 0])) / len(x)))


def test_clr_matches_the_brute_force_formula_dense_and_sparse() -> None:
    X = _counts()
    want = np.vstack([_seurat_clr_row(row.astype(np.float64)) for row in X])
    np.testing.assert_allclose(clr(X), want, rtol=1e-5, atol=1e-6)
    assert np.all(clr(X)[7] == 0)  # an empty cell stays 0
    for S in (sp.csr_matrix(X), sp.csc_matrix(X), sp.coo_matrix(X)):
        before = S.copy()
        got = clr(S)
        assert got.dtype == np.float32 and got.shape == X.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(S.toarray(), before.toarray())  # the input is not modified
    # duplicate entries of a non-canonical CSR count once each, as in the dense matrix
    dup = sp.csr_matrix((np.array([1.0, 2.0, 3.0]), np.array([0, 0, 1]), np.array([0, 3])), shape=(1, 2))
    dup.has_canonical_format = False
    np.testing.assert_allclose(clr(dup), clr(np.array([[3.0, 3.0]])), rtol=1e-6)


def test_is_count_matrix() -> None:
    assert is_count_matrix(np.array([[0, 3], [2, 1]]))
    assert is_count_matrix(np.array([[0.0, 3.0], [2.0, 1.0]], dtype=np.float32))
    assert is_count_matrix(sp.csr_matrix(np.array([[0.0, 3.0], [2.0, 0.0]])))
    assert not is_count_matrix(np.array([[0.5, 3.0]]))
    assert not is_count_matrix(np.array([[-1, 3]]))
    assert not is_count_matrix(np.zeros((0, 3)))


@pytest.mark.parametrize(
    ("platform", "values", "transform", "rule"),
    [
        ("generic", "counts", "clr", ""),  # CITE-seq ADT table
        (None, "counts", "clr", ""),  # no provenance: generic
        ("xenium", "counts", "clr", ""),  # antibody counts of a sequencing-based platform
        ("imc", "counts", "arcsinh", "fixed"),  # ion counts: cofactor 5
        ("mibi", "counts", "arcsinh", "fixed"),
        ("mibi", "intensities", "arcsinh", "fixed"),  # size-normalised / per-pixel means: cofactor 5 as well
        ("imc", "intensities", "arcsinh", "fixed"),
        ("codex", "counts", "arcsinh", "fixed"),  # rounded fluorescence never gets CLR
        ("halo", "counts", "arcsinh", "fixed"),  # HALO's integer 0-255 intensities
        ("inform", "counts", "arcsinh", "fixed"),
        ("qupath", "intensities", "arcsinh", "fixed"),
        ("cosmx", "intensities", "arcsinh", "fixed"),  # CosMx protein panels: immunofluorescence
        ("cycif", "intensities", "arcsinh", "fixed"),
        ("generic", "intensities", "arcsinh", "fixed"),
        ("xenium", "intensities", "arcsinh", "fixed"),  # Xenium Protein mean intensities
    ],
)
def test_auto_choice_per_platform(platform: str | None, values: str, transform: str, rule: str) -> None:
    X = _counts() if values == "counts" else _intensities()
    adata = _modality(X, platform)
    scale_intensities(adata)
    record = adata.uns[Keys.INTENSITY_TRANSFORM]
    assert record["requested"] == "auto"
    assert record["transform"] == transform
    assert record["cofactor_rule"] == (rule or "none")
    assert f"platform {platform or 'generic'}" in record["reason"]
    c = adata.var[Keys.ARCSINH_COFACTOR].to_numpy()
    if transform != "arcsinh":
        assert np.isnan(c).all()
    else:  # every arcsinh of 'auto' has the fixed cofactor 5 (ion counts and intensities alike)
        np.testing.assert_array_equal(c, MASS_CYTOMETRY_COFACTOR)
        assert "cofactor 5" in record["reason"]


def test_explicit_transforms_are_kept_and_clr_needs_two_channels() -> None:
    X = _counts()
    for t in ("arcsinh", "clr", "log1p", "none"):
        choice = choose_transform(X, platform="mibi", transform=t, cofactor=7.0)
        assert choice.transform == t and choice.reason.startswith("requested")
    np.testing.assert_array_equal(
        choose_transform(X, platform="generic", transform="arcsinh", cofactor=7.0).cofactor, 7
    )
    # one channel of counts: CLR per cell would be constant, so auto falls back to arcsinh with cofactor 5
    one = choose_transform(X[:, :1], platform="generic")
    assert one.transform == "arcsinh" and one.rule == "fixed"
    np.testing.assert_array_equal(one.cofactor, 5.0)
    # a cofactor passed with 'auto' is the cofactor of the intensity rule (ion counts keep 5)
    np.testing.assert_array_equal(choose_transform(_intensities(), platform="cycif", cofactor=7.0).cofactor, 7.0)
    np.testing.assert_array_equal(choose_transform(X, platform="mibi", cofactor=7.0).cofactor, 5.0)


@pytest.mark.parametrize("platform", ["cycif", "generic", "mibi", None])
@pytest.mark.parametrize("values", ["intensities", "counts"])
def test_arcsinh_background_gives_the_background_cofactors(platform: str | None, values: str) -> None:
    X = _counts() if values == "counts" else _intensities()
    choice = choose_transform(X, platform=platform or "generic", transform="arcsinh_background")
    assert choice.transform == "arcsinh" and choice.rule == "background"
    assert choice.reason.startswith("requested") and "background" in choice.reason
    np.testing.assert_allclose(choice.cofactor, background_cofactors(X))
    adata = _modality(X, platform)
    scale_intensities(adata, transform="arcsinh_background")
    record = adata.uns[Keys.INTENSITY_TRANSFORM]
    assert record["requested"] == "arcsinh_background"
    assert record["transform"] == "arcsinh" and record["cofactor_rule"] == "background"
    np.testing.assert_allclose(adata.var[Keys.ARCSINH_COFACTOR].to_numpy(), background_cofactors(X))
    assert stored_intensity_transform(adata)["transform"] == "arcsinh"


def test_background_cofactor_on_a_planted_channel() -> None:
    rng = np.random.default_rng(3)
    n = 4000
    offset = rng.normal(1000, 50, n)  # background with a camera / autofluorescence offset, 70 % of the cells
    offset[: int(0.3 * n)] = rng.lognormal(np.log(20000), 0.3, int(0.3 * n))  # positive cells, 20x brighter
    subtracted = np.abs(rng.normal(0, 2.0, n))  # background subtracted: noise of width 2 around 0
    subtracted[: n // 10] = rng.lognormal(np.log(200), 0.3, n // 10)
    subtracted[n // 2 : n // 2 + 500] = 0  # values clipped at 0 are left out
    X = np.column_stack([offset, subtracted, np.zeros(n)]).astype(np.float32)
    c = background_cofactors(X)
    assert 900 < c[0] < 1000  # at the background level (lower quartile of N(1000, 50) is 966)
    assert 0.4 < c[1] < 2.0  # within the noise width, far below the positives
    assert c[2] == 1.0  # no positive value: any cofactor, the transform is 0
    np.testing.assert_allclose(background_cofactors(sp.csr_matrix(X)), c)
    # background at the bottom of the scaled range, positives at the top
    adata = _modality(X, "cycif")
    scale_intensities(adata, transform="arcsinh_background")
    Y = adata.layers[Keys.PREPROCESSED]
    assert Y[int(0.3 * n) :, 0].mean() < 0.1 and Y[: int(0.3 * n), 0].mean() > 0.7
    # the cofactor follows the channel's units: another exposure / bit depth gives the same scaled values,
    # which a fixed cofactor does not
    brighter = _modality(X * np.float32(1000), "cycif")
    scale_intensities(brighter, transform="arcsinh_background")
    c_bright = brighter.var[Keys.ARCSINH_COFACTOR].to_numpy()
    np.testing.assert_allclose(c_bright[:2], 1000 * c[:2], rtol=1e-5)
    np.testing.assert_allclose(brighter.layers[Keys.PREPROCESSED], Y, atol=1e-4)
    fixed, fixed_bright = _modality(X, "cycif"), _modality(X * np.float32(1000), "cycif")
    scale_intensities(fixed, transform="arcsinh")
    scale_intensities(fixed_bright, transform="arcsinh")
    assert np.abs(fixed.layers[Keys.PREPROCESSED] - fixed_bright.layers[Keys.PREPROCESSED]).max() > 0.05


@pytest.mark.parametrize(
    ("platform", "values", "transform"),
    [
        ("generic", "intensities", "auto"),  # fixed cofactor 5
        ("generic", "counts", "auto"),  # CLR
        ("mibi", "counts", "auto"),  # fixed cofactor 5
        ("generic", "intensities", "arcsinh_background"),  # per-channel cofactors
        ("cycif", "intensities", "arcsinh_background"),
        ("mibi", "counts", "arcsinh_background"),
        ("generic", "intensities", "arcsinh"),
        ("generic", "intensities", "log1p"),
        ("generic", "intensities", "none"),
        ("generic", "counts", "clr"),
    ],
)
@pytest.mark.parametrize("sparse", [False, True])
def test_apply_intensity_scaling_reproduces_the_layer(platform: str, values: str, transform: str, sparse: bool) -> None:
    X = _counts() if values == "counts" else _intensities()
    adata = _modality(sp.csr_matrix(X) if sparse else X, platform)
    scale_intensities(adata, transform=transform)
    got = apply_intensity_scaling(
        adata.X,
        adata.var[Keys.SCALE_LOW].to_numpy(),
        adata.var[Keys.SCALE_SPAN].to_numpy(),
        **stored_intensity_transform(adata),
    )
    np.testing.assert_allclose(got, adata.layers[Keys.PREPROCESSED], rtol=1e-6, atol=1e-7)
    # a subset of the cells is scaled exactly like the same cells in the layer (no refit)
    sub = apply_intensity_scaling(
        X[::3],
        adata.var[Keys.SCALE_LOW].to_numpy(),
        adata.var[Keys.SCALE_SPAN].to_numpy(),
        **stored_intensity_transform(adata),
    )
    np.testing.assert_allclose(sub, adata.layers[Keys.PREPROCESSED][::3], rtol=1e-6, atol=1e-7)


def test_stored_transform_of_a_layer_without_record_uses_the_preprocess_params() -> None:
    adata = _modality(_intensities(), "generic")
    assert stored_intensity_transform(adata, fallback={"protein_transform": "log1p"}) == {
        "transform": "log1p",
        "cofactor": 5.0,
    }
    assert stored_intensity_transform(adata) == {"transform": "arcsinh", "cofactor": 5.0}
    with pytest.raises(InputError, match="records no intensity transform"):
        stored_intensity_transform(adata, fallback={"protein_transform": "auto"})
    with pytest.raises(InputError, match="records no intensity transform"):
        stored_intensity_transform(adata, fallback={"protein_transform": "arcsinh_background"})


def test_preprocess_records_the_transform_of_every_modality(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    rna = ad.AnnData(rng.poisson(2.0, (300, 40)).astype(np.float32))
    rna.var_names = [f"g{j}" for j in range(40)]
    rna.uns[Keys.PROVENANCE] = {"platform": "visium", "kind": "counts"}
    mods = {
        "rna": rna,
        "protein": _modality(_counts(), "mibi", ["DNA1", *[f"p{j}" for j in range(11)]]),
        "adt": _modality(_counts(5), "generic"),
        "codex": _modality(_intensities(n=300), "codex", ["DAPI", "CD3", "CD20"]),
    }
    for a in mods.values():
        a.obs_names = [f"c{i}" for i in range(a.n_obs)]
    mdata = md.MuData(mods)
    preprocess(mdata, n_top_genes=20)
    params = mdata.uns["preprocess"]
    assert params["protein_transform"] == "auto" and params["cofactor"] == 5.0
    used = params["intensity_transforms"]
    assert set(used) == {"protein", "adt", "codex"}
    assert used["protein"]["transform"] == "arcsinh" and "platform mibi" in used["protein"]["reason"]
    assert "cofactor 5" in used["protein"]["reason"]
    assert used["adt"]["transform"] == "clr" and "antibody counts" in used["adt"]["reason"]
    assert used["codex"]["transform"] == "arcsinh" and "cofactor 5" in used["codex"]["reason"]
    for name in used:
        assert mdata[name].uns[Keys.INTENSITY_TRANSFORM]["transform"] == used[name]["transform"]
    assert np.isnan(mdata["adt"].var[Keys.ARCSINH_COFACTOR]).all()
    np.testing.assert_array_equal(mdata["protein"].var[Keys.ARCSINH_COFACTOR], 5.0)
    np.testing.assert_array_equal(mdata["codex"].var[Keys.ARCSINH_COFACTOR], 5.0)
    assert Keys.INTENSITY_TRANSFORM not in mdata["rna"].uns
    # the records are plain strings, numbers and lists: the container writes and reads back
    path = tmp_path / "pp.h5mu"
    mdata.write(path)
    back = md.read_h5mu(path)
    assert back.uns["preprocess"]["intensity_transforms"]["adt"]["transform"] == "clr"
    np.testing.assert_allclose(back["codex"].var[Keys.ARCSINH_COFACTOR], mdata["codex"].var[Keys.ARCSINH_COFACTOR])


def test_imputed_rows_do_not_turn_antibody_counts_into_fluorescence() -> None:
    # the alignment imputes a missing cell's ADT as the mean of 10 alike cells: not whole numbers
    counts = _counts(5)
    adt = _modality(counts, "generic")
    imputed = np.arange(adt.n_obs) % 10 == 0
    X = np.asarray(adt.X, dtype=np.float32).copy()
    X[imputed] = counts[np.flatnonzero(~imputed)[:10]].mean(axis=0) + 0.1
    adt.X = X
    adt.obs_names = [f"c{i}" for i in range(adt.n_obs)]
    mdata = md.MuData({"adt": adt})
    preprocess(mdata)  # nothing says those rows are imputed: the values are not counts
    assert mdata.uns["preprocess"]["intensity_transforms"]["adt"]["transform"] == "arcsinh"
    mdata.obs["adt_status"] = np.where(imputed, "imputed", "id")
    preprocess(mdata)  # decided on the measured rows
    assert mdata.uns["preprocess"]["intensity_transforms"]["adt"]["transform"] == "clr"


def test_preprocess_with_the_background_cofactor_option() -> None:
    X = _intensities(n=300)
    codex = _modality(X, "codex", ["DAPI", "CD3", "CD20"])
    codex.obs_names = [f"c{i}" for i in range(codex.n_obs)]
    mdata = md.MuData({"codex": codex})
    preprocess(mdata, protein_transform="arcsinh_background")
    assert mdata.uns["preprocess"]["protein_transform"] == "arcsinh_background"
    used = mdata.uns["preprocess"]["intensity_transforms"]["codex"]
    assert used["transform"] == "arcsinh" and "cofactor per channel" in used["reason"]
    assert mdata["codex"].uns[Keys.INTENSITY_TRANSFORM]["cofactor_rule"] == "background"
    np.testing.assert_allclose(mdata["codex"].var[Keys.ARCSINH_COFACTOR], background_cofactors(X))
    assert mdata["codex"].var[Keys.ARCSINH_COFACTOR].nunique() == 3


def test_unknown_transform_and_bad_cofactors_are_refused() -> None:
    assert PROTEIN_TRANSFORMS == ("auto", "arcsinh", "arcsinh_background", "clr", "log1p", "none")
    adata = _modality(_intensities(), "cycif")
    with pytest.raises(InputError, match=ALLOWED):
        scale_intensities(adata, transform="sqrt")
    mdata = md.MuData({"protein": adata})
    with pytest.raises(InputError, match=ALLOWED):
        preprocess(mdata, protein_transform="sqrt")
    assert Keys.PREPROCESSED not in adata.layers and "preprocess" not in mdata.uns  # refused before any change
    with pytest.raises(InputError, match="cofactor"):
        preprocess(mdata, protein_transform="arcsinh", cofactor=0)
    lo, span = np.zeros(3), np.ones(3)
    for unresolved in ("auto", "arcsinh_background"):  # resolved from the data: the stored transform is arcsinh
        with pytest.raises(InputError, match=r"transform must be one of \['arcsinh', 'clr', 'log1p', 'none'\]"):
            apply_intensity_scaling(adata.X, lo, span, transform=unresolved)
    with pytest.raises(InputError, match="3 positive numbers"):
        apply_intensity_scaling(adata.X, lo, span, transform="arcsinh", cofactor=np.ones(2))
    with pytest.raises(InputError, match="3 positive numbers"):
        apply_intensity_scaling(adata.X, lo, span, transform="arcsinh", cofactor=np.array([1.0, 0.0, 1.0]))
