"""Known biology on real MIBI-TOF data (Keren et al. 2018); skipped where the shared data folder is absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spatialmultiomics import spatial
from spatialmultiomics.io import read_labelled_table

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "mibi_tnbc_keren2018" / "TNBC_pheno.csv.gz"
IMMUNE = [
    "CD8T",
    "CD4T",
    "CD3T",
    "Treg",
    "B",
    "NK",
    "Macrophage",
    "DC",
    "DCMono",
    "MonoNeu",
    "Neutrophil",
    "Otherimmune",
]
# the paper's classes (the file's Class column): 0 = mixed, 1 = compartmentalised
MIXED, COMPARTMENTALISED = ["2", "11", "18"], ["4", "5", "28"]

pytestmark = pytest.mark.skipif(not DATA.exists(), reason=f"real data not present: {DATA}")


@pytest.fixture(scope="module")
def mibi():
    adata = read_labelled_table(
        DATA, label_key="Phenotype", x="cellx", y="celly", fov_key="Person", pixel_size_um=800 / 2048
    )
    adata = adata[adata.obs["fov"].isin(MIXED + COMPARTMENTALISED)].copy()
    adata.obs["compartment"] = pd.Categorical(
        np.where(
            adata.obs["Phenotype"].isin(IMMUNE), "Immune", np.where(adata.obs["Phenotype"] == "Tumor", "Tumor", "Other")
        )
    )
    spatial.spatial_neighbors(adata, radius=25.0)
    return adata


def test_mibi_units_and_graph(mibi) -> None:
    coords = mibi.obsm["spatial"]
    assert coords.min() >= 0 and coords.max() <= 800  # one 800 µm FOV per patient
    assert 10 < mibi.obsp["spatial_connectivities"].nnz / mibi.n_obs < 30


def test_mibi_pooled_known_biology(mibi) -> None:
    res = spatial.colocalization(mibi, label_key="Phenotype", sample_key="fov", inplace=False)
    z = pd.DataFrame(res.zscore, index=res.categories, columns=res.categories)
    assert z.loc["Tumor", "Tumor"] > 10  # strong homotypic tumour attraction
    tumour_immune = z.loc["Tumor", [t for t in IMMUNE if t in z.columns]]
    assert (tumour_immune.dropna() < 0).all()  # every immune type avoids the tumour
    assert z.loc["CD8T", "CD4T"] > 10  # T cells sit together
    assert z.loc["B", "B"] > 10
    assert np.isfinite(res.by_sample["4"].zscore).any()


def test_mibi_compartmentalised_vs_mixed(mibi) -> None:
    spatial.colocalization(mibi, label_key="compartment", sample_key="fov")
    table = spatial.colocalization_table(mibi, label_key="compartment", by_sample=True).set_index(
        ["sample", "cell_type_pair"]
    )
    assert table.loc[("pooled", "Immune|Immune"), "z_score"] > 10  # immune cells enriched together
    assert table.loc[("pooled", "Tumor|Immune"), "z_score"] < -10
    score = {p: table.loc[(p, "Tumor|Immune"), "jones_scornecchi_score"] for p in MIXED + COMPARTMENTALISED}
    # compartmentalised tumours avoid immune cells more than mixed ones (effect size, comparable across patients)
    assert max(score[p] for p in COMPARTMENTALISED) < min(score[p] for p in MIXED)
    assert all(score[p] < -0.5 for p in COMPARTMENTALISED)
