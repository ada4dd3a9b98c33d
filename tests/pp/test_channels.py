from __future__ import annotations

import warnings
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pytest

import spatialmultiomics as smo
from spatialmultiomics import InputError, Keys
from spatialmultiomics._warnings import ConvergenceWarning
from spatialmultiomics.pp import NON_MARKER_CHANNELS, non_marker_channels, preprocess

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"

NUCLEAR_OR_BACKGROUND = [
    "DAPI",
    "dapi_2",
    "Hoechst33342",
    "DNA",
    "DNA1",
    "DNA2",
    "DNA_6",
    "dna 7",
    "Ir191",
    "Ir193",
    "191Ir",
    "Ir193Di",
    "DNA1(Ir191)",
    "DNA2 (Ir193)",
    "H3",
    "HH3",
    "HistoneH3",
    "Histone H3",
    "Histone.H3",
    "total H3",
    "DRAQ5",
    "SYTO13",
    "NucBlue",
    "Nuclear stain",
    "Background",
    "background_488",
    "BG1",
    "190BCKG",
    "Empty",
    "empty_cycle3",
    "Blank",
    "blank-2",
    "Autofluorescence",
    "Unstained",
    " C ",
    "Na",
    "Si",
    "Ta",
    "Au",
    "Xe131",
    "Ar80",
    "Pb208",
    "I127",
]
MARKERS = [
    "CD3",
    "CD45",
    "H3K27Ac",  # histone modifications and phospho-histone H3 (mitosis) are markers
    "H3K27me3",
    "H3K9Ac",
    "pHH3",
    "Phospho-Histone H3",
    "Ki67",
    "NaKATPase",
    "Cytokeratin 5",
    "Keratin.pan",
    "HLA.DR.DQ.DP",
    "Ag107",
    "Fe",
    "BGN",
    "DNAPK",
    "Nucleolin",
    "E.cadherin",
    "CA9",
]


def test_default_patterns_flag_nuclear_and_background_names_only() -> None:
    flags = non_marker_channels(NUCLEAR_OR_BACKGROUND + MARKERS)
    missed = [n for n, f in zip(NUCLEAR_OR_BACKGROUND, flags, strict=False) if not f]
    wrong = [n for n, f in zip(MARKERS, flags[len(NUCLEAR_OR_BACKGROUND) :], strict=True) if f]
    assert (missed, wrong) == ([], [])
    assert not non_marker_channels(["DAPI", "DNA1"], patterns=None).any()
    # a custom list replaces the default: names (also with brackets, compared as text) or regular expressions
    custom = non_marker_channels(["DAPI", "CD45RO (clone)", "CD45", "Ki-67"], patterns=["cd45ro (clone)", r"ki.?67"])
    assert custom.tolist() == [False, True, False, True]
    with pytest.raises(InputError, match="exclude_channels must be None, a channel name / pattern or a list"):
        non_marker_channels(["CD3"], patterns=[1, 2])


def _protein(names: list[str], n: int = 120, seed: int = 0) -> md.MuData:
    rng = np.random.default_rng(seed)
    adata = ad.AnnData(rng.gamma(2.0, 20.0, (n, len(names))).astype(np.float32))
    adata.var_names = names
    adata.obs_names = [f"c{i}" for i in range(n)]
    with md.set_options(pull_on_update=False):
        return md.MuData({"protein": adata})


def test_preprocess_flags_channels_keeps_them_and_stores_what_it_left_out() -> None:
    mdata = _protein(["DAPI", "CD3", "CD20", "Background", "CD68"])
    preprocess(mdata)
    prot = mdata["protein"]
    assert prot.var[Keys.HVG].tolist() == [False, True, True, False, True]
    assert prot.shape == (120, 5) and prot.layers[Keys.PREPROCESSED].shape == (120, 5)
    assert mdata.uns["preprocess"]["excluded_channels"] == {"protein": ["DAPI", "Background"]}
    assert mdata.uns["preprocess"]["exclude_channels"] == "smo.pp.NON_MARKER_CHANNELS"
    keep = _protein(["DAPI", "CD3", "CD20", "Background", "CD68"])
    preprocess(keep, exclude_channels=None)
    assert keep["protein"].var[Keys.HVG].all()
    assert keep.uns["preprocess"]["excluded_channels"] == {"protein": []}
    custom = _protein(["DAPI", "CD3", "CD20", "Background", "CD68"])
    preprocess(custom, exclude_channels=[*NON_MARKER_CHANNELS, "CD68"])
    assert custom["protein"].var[Keys.HVG].tolist() == [False, True, True, False, False]


def test_preprocess_refuses_to_leave_a_modality_without_channels() -> None:
    mdata = _protein(["DAPI", "DNA2", "Background"])
    with pytest.raises(InputError, match=r"modality 'protein': every channel \(\['DAPI', 'DNA2', 'Background'\]\)"):
        preprocess(mdata)
    assert Keys.PREPROCESSED not in mdata["protein"].layers  # checked before anything changed
    preprocess(mdata, exclude_channels=None)
    assert mdata["protein"].var[Keys.HVG].all()


# (folder, file or folder read, platform, channels flagged by default)
REAL = [
    (
        "cycif_mcmicro_exemplar001_scimap",
        "exemplar-001--unmicst_cell.csv",
        "cycif",
        ["DNA_6", "DNA_7", "DNA_8"],
    ),
    (
        "mibi_ark_cell_table_slice",
        "cell_table_size_normalized.csv",
        "mibi",
        ["C", "Na", "Si", "HH3", "Background", "Ta", "Au"],
    ),
    # steinbock mock panel: Ag107, Cytokeratin 5, Laminin, YBX1, H3K27Ac (a histone mark, kept)
    ("imc_steinbock_imcRtools_mock", "", "imc", []),
]


def _factorize(mdata: md.MuData, k: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        smo.factorize.joint_nmf(mdata, n_components=k, seed=0, max_iter=150)
    return np.asarray(mdata["protein"].varm[Keys.NMF_LOADINGS])


@pytest.mark.parametrize(("folder", "name", "platform", "flagged"), REAL, ids=[r[2] for r in REAL])
def test_real_panels_nuclear_and_background_channels_get_no_loadings(folder, name, platform, flagged) -> None:
    if not (DATA / folder).is_dir():
        pytest.skip(f"real vendor files not available at {DATA / folder}")
    adata = smo.io.read(DATA / folder / name, platform)
    adata = adata[:3000].copy()  # CyCIF: 11,201 cells; the first 3,000 are enough
    with md.set_options(pull_on_update=False):
        mdata = md.MuData({"protein": adata})
    preprocess(mdata)
    names = list(adata.var_names)
    is_flagged = np.isin(names, flagged)
    assert mdata.uns["preprocess"]["excluded_channels"]["protein"] == flagged
    np.testing.assert_array_equal(mdata["protein"].var[Keys.HVG].to_numpy(), ~is_flagged)
    H = _factorize(mdata, 4)
    assert H.shape == (len(names), 4)
    assert np.all(H[is_flagged] == 0)  # left out of the factorization, still in the data
    assert np.mean(H[~is_flagged].sum(axis=1) > 0) >= 0.5  # (a rare marker may get no loading with k = 4)
    assert mdata["protein"].n_vars == len(names)

    # kept (exclude_channels=None), the DNA channels of CyCIF take a factor of their own
    with md.set_options(pull_on_update=False):
        kept = md.MuData({"protein": adata.copy()})
    preprocess(kept, exclude_channels=None)
    H_all = _factorize(kept, 4)
    if platform == "cycif":
        share = H_all[is_flagged].sum(axis=0) / H_all.sum(axis=0)
        assert share.max() > 0.6
        assert np.all(H_all[is_flagged].sum(axis=1) > 0)
