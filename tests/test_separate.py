"""Route 'separate' through the pipeline: adjacent sections whose panels share no linked feature."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

import spatialmultiomics as smo
from spatialmultiomics._keys import Keys

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_integration import adjacent_sections


@pytest.fixture(scope="module")
def unlinked():
    data = adjacent_sections(3000, notch=True)
    prot = data["protein"].copy()
    rename = {v: f"chan_{v}" for v in prot.var_names}  # channel names no link table knows
    prot.var_names = [rename[v] for v in prot.var_names]
    markers = {
        t: {**m, "proteins": [rename.get(p, p) for p in m.get("proteins", [])]} for t, m in data["markers"].items()
    }
    return data, prot, markers


def test_separate_route_is_never_worse_than_the_reference_alone(unlinked, tmp_path: Path) -> None:
    data, prot, markers = unlinked
    rna = data["rna"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alone = smo.run_pipeline(rna, None, n_factors=12, markers=markers, seed=0, figures=False)
        out = smo.run_pipeline(
            rna, prot, n_factors=12, markers=markers, seed=0, figures=False, output_dir=tmp_path / "res"
        )
    md = out.mdata
    entry = md.uns["alignment"]["modalities"]["protein"]
    assert entry["route"] == "separate" and "no linked feature" in entry["reason"]
    # the RNA cells are typed exactly as by RNA alone: the protein section cannot make them worse
    pd.testing.assert_series_equal(
        md.obs[Keys.CELL_TYPE].astype(str), alone.mdata.obs[Keys.CELL_TYPE].astype(str), check_names=False
    )
    # the protein cells are typed on their own, against their own truth
    typed = md.uns[Keys.SEPARATE]["protein"]
    cells = pd.DataFrame(typed["cells"])
    assert list(cells["cell_id"]) == list(prot.obs_names)
    assert f1_score(data["truth_protein"].to_numpy(), cells["cell_type"], average="macro") >= 0.9
    # placed on the RNA frame by the registration: within tens of µm of where the cells truly are
    true_xy = data["transform"].inverse().apply(np.asarray(prot.obsm[Keys.SPATIAL]))
    assert np.median(np.linalg.norm(cells[["x", "y"]].to_numpy() - true_xy, axis=1)) < 60.0
    # the two vocabularies meet through what lies around what
    conc = pd.DataFrame(typed["concordance"])
    best = conc[conc.best].set_index("ref_type")["other_type"]
    assert best["Epithelial"] == "Epithelial" and best["B cells"] == "B cells"
    frac = md.obsm["protein_type_fractions"]
    assert frac.shape[0] == md.n_obs and np.allclose(frac.sum(axis=1)[md.obs["protein_n_around"] > 0], 1.0)
    written = sorted(p.name for p in (tmp_path / "res").iterdir())
    assert {"cell_types_protein.csv", "type_concordance_protein.csv"} <= set(written)
    back = pd.read_csv(tmp_path / "res" / "cell_types_protein.csv")
    assert list(back.columns) == ["cell_id", "x", "y", "cell_type", "confidence"] and len(back) == prot.n_obs
