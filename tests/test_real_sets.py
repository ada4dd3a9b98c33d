"""The loaders and label maps of the real-data annotation benchmark (benchmarks/_real_sets.py); cheap checks only."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "_real_sets.py"
_spec = importlib.util.spec_from_file_location("smo_bench_real_sets", _PATH)
rsets = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = rsets  # dataclasses look their module up
_spec.loader.exec_module(rsets)


def test_our_maps_name_builtin_types_only():
    from spatialmultiomics.annotate import builtin_markers

    types = set(builtin_markers().types)
    for m in (rsets.CYCIF_OURS_LINEAGE, rsets.VECTRA_OURS_LINEAGE, rsets.ECCITE_OURS_LINEAGE, rsets.ARK_OURS_LINEAGE):
        assert set(m) - set(rsets.GROUP_TYPES) <= types  # a renamed built-in type must be renamed in the maps too


def test_maps_send_ours_to_reference_lineages():
    pairs = (
        (rsets.CYCIF_REF_LINEAGE, rsets.CYCIF_OURS_LINEAGE),
        (rsets.VECTRA_REF_LINEAGE, rsets.VECTRA_OURS_LINEAGE),
        (rsets.ECCITE_REF_LINEAGE, rsets.ECCITE_OURS_LINEAGE),
        (rsets.ARK_REF_LINEAGE, rsets.ARK_OURS_LINEAGE),
    )
    for ref, ours in pairs:
        assert set(ours.values()) <= set(ref.values())  # every lineage we can call is one the reference has


def test_pbmc_cluster_rule():
    def means(**kw):
        genes = sorted({g for gs in rsets.PBMC_GENES.values() for g in gs})
        return pd.Series({g: kw.get(g, 0.0) for g in genes})

    assert rsets.name_pbmc_cluster(means(MS4A1=2.3, CD79A=2.2)) == "B cells"
    assert rsets.name_pbmc_cluster(means(LYZ=4, CST3=3.7, CD14=1.4)) == "Monocytes"
    assert rsets.name_pbmc_cluster(means(LYZ=2, CST3=3, FCER1A=1.5)) == "Dendritic cells"
    assert rsets.name_pbmc_cluster(means(CD3D=1.5, CD8A=2.1, CD8B=1.0, GNLY=4)) == "CD8 T cells"
    assert rsets.name_pbmc_cluster(means(CD3D=1.4, CD8A=0.2)) == "CD4 T cells"
    assert rsets.name_pbmc_cluster(means(CD3D=1.4, CD8A=0.5, GNLY=2.5, NKG7=3)) == "T cells (unresolved)"
    assert rsets.name_pbmc_cluster(means(CD3D=0.05, GNLY=4.7, NKG7=4)) == "NK cells"
    assert rsets.name_pbmc_cluster(means(PPBP=3)) == "Platelets"
    assert rsets.name_pbmc_cluster(means()) == "Unresolved"


@pytest.mark.skipif(not rsets.VECTRA.is_dir(), reason="real Vectra data (../shared/data) not available")
def test_read_vectra():
    adata = rsets.read_vectra()
    assert adata.shape == (6072, 8)
    assert list(adata.var_names) == list(rsets.VECTRA_MARKERS)
    assert adata.obs_names.is_unique
    assert adata.obsm["spatial"].shape == (6072, 2)
    assert np.isfinite(adata.X).all()
    assert set(adata.obs["Phenotype"]) == set(rsets.VECTRA_REF_LINEAGE)
    assert set(adata.obs["Tissue Category"]) == {"Tumor", "Stroma"}


@pytest.mark.skipif(not rsets.CYCIF.is_dir(), reason="real CyCIF data (../shared/data) not available")
def test_reference_labels_are_all_mapped():
    cycif = pd.read_csv(rsets.CYCIF / "scimap_reference_rescaled_and_phenotypes.csv.gz", usecols=["phenotype"])
    assert set(cycif["phenotype"]) == set(rsets.CYCIF_REF_LINEAGE)
    ark = pd.read_csv(rsets.ARK / "cell_table_size_normalized.csv", usecols=["cell_meta_cluster"])
    assert set(ark["cell_meta_cluster"]) == set(rsets.ARK_REF_LINEAGE)
