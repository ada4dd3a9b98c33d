"""The worked example on real data: MIBI TNBC (Keren et al. 2018), compartmentalised vs mixed tumours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spatialmultiomics.cohort import compare

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mibi_tnbc_keren2018" / "TNBC_pheno.csv.gz"
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


@pytest.mark.skipif(not DATA.is_file(), reason="needs ../shared/data/mibi_tnbc_keren2018")
def test_tumour_immune_mixing_is_lower_in_compartmentalised_tumours() -> None:
    raw = pd.read_csv(DATA)
    cells = pd.DataFrame(
        {
            "x": raw["cellx"] * 800 / 2048,  # 800 µm FOV of 2048 pixels
            "y": raw["celly"] * 800 / 2048,
            "patient": raw["Person"],
            "condition": raw["Class"].map({0: "mixed", 1: "compartmentalised"}),
            "compartment": np.where(
                raw["Phenotype"].isin(IMMUNE), "Immune", np.where(raw["Phenotype"] == "Tumor", "Tumor", "Other")
            ),
        }
    )
    res = compare(
        cells,
        label_key="compartment",
        sample_key="patient",
        condition_key="condition",
        reference_condition="mixed",
        n_niches=0,
    )
    assert res.sample_table.groupby("condition").size().to_dict() == {"compartmentalised": 15, "mixed": 18}
    table = res.differential_colocalization.set_index(["cell_type_a", "cell_type_b"])
    ti = table.loc[("Immune", "Tumor")]
    assert ti["effect"] < -0.3 and ti["ci_high"] < 0 and ti["q_value"] < 0.01  # less mixing
    assert table.loc[("Tumor", "Tumor"), "effect"] > 0 and table.loc[("Tumor", "Tumor"), "q_value"] < 0.01
    assert ti["n_samples"] == 33 and ti["n_not_estimable"] == 0
