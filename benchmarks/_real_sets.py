"""Loaders for the labelled real sets in ``../shared/data`` used by ``bench_real_annotation.py``.

Each loader returns a :class:`RealSet`: the protein / intensity AnnData that the methods see (raw values in ``X``,
coordinates in µm in ``obsm['spatial']``), the reference label of every cell, and the two explicit maps that put
the reference's labels and our built-in type names (``smo.annotate.builtin_markers()``, ``immune_tme``) on one
lineage scale for the named-type F1. ARI uses the reference labels as they are and needs no map.

Sets
----
``cycif``   MCMICRO exemplar-001 (11,201 cells, 9 markers + 3 DNA) vs scimap's gating phenotypes.
``vectra``  Akoya Vectra / inForm sample field (6,072 cells, 6 markers + DAPI + autofluorescence) vs inForm's
            trained phenotype classifier.
``eccite``  ECCITE-seq PBMCs (500 cells, 49 ADT; not spatial, dummy 20 µm grid): the methods see the ADT only; the
            reference comes from the cells' RNA (scanpy workflow + canonical PBMC marker genes, see
            :func:`eccite_rna_reference`).
``ark``     MIBI ark-analysis ``cell_table`` slice (300 cells, 2 FOVs, 43 channels) vs ark's ``cell_meta_cluster``
            (Pixie clustering of the same intensities, meta-clusters named by the analyst).

``mibi_tnbc_keren2018`` has published labels but no intensities: nothing to annotate, so it is not a set here.

A reference label mapped to ``None`` marks a cell that is left out of every metric (the reference cannot name it);
:data:`OTHER` is the lineage of "none of the named types" (scimap ``Unknown``, inForm ``other``, ark ``imm_other``)
and of our ``Unknown``: predicting a named type there is an error, but ``OTHER`` is not itself scored in the
macro-F1. Our types missing from a set's map are ``OTHER`` too.

The data folder is ``../shared/data`` relative to the project root (override with ``SMO_SHARED_DATA``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(os.environ.get("SMO_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CYCIF = DATA / "cycif_mcmicro_exemplar001_scimap"
VECTRA = DATA / "mif_vectra_phenoptr"
CITESEQ = DATA / "citeseq_eccite_citefuse"
ARK = DATA / "mibi_ark_cell_table_slice"
TNBC = DATA / "mibi_tnbc_keren2018"
TNBC_PHENO = TNBC / "TNBC_pheno.csv.gz"
#: the immune phenotypes of Keren et al. 2018 (the file's ``Phenotype`` column)
TNBC_IMMUNE = (
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
)


def tnbc_compartment(phenotype) -> np.ndarray:
    """``'Tumor'``, ``'Immune'`` (any of :data:`TNBC_IMMUNE`) or ``'Other'`` for each Keren 2018 phenotype."""
    phenotype = pd.Series(np.asarray(phenotype, dtype=object))
    return np.where(phenotype.isin(TNBC_IMMUNE), "Immune", np.where(phenotype == "Tumor", "Tumor", "Other"))


#: the lineage of "none of the reference's named types"
OTHER = "other/Unknown"

#: the lineage groups of the hierarchical built-in reference (a cell is called at the level the panel supports);
#: each set's map credits a group only where it is exactly one of the reference's lineages
GROUP_TYPES = ("Immune cells", "T cells", "Myeloid cells", "Stromal cells")

# ----------------------------------------------------------------------------------------------- label maps
#: scimap phenotype -> lineage. scimap's gates name three lineages at the top of its hierarchy (ECAD+, SMA+, CD45+
#: "Immune") and split only the CD45+ cells further (Treg, myeloid, NK, DC). Our built-in reference has no
#: CD45-only type, so every immune type of ours must count as "Immune"; the immune subtypes are merged into that
#: lineage too, which keeps the comparison at the granularity both sides share.
CYCIF_REF_LINEAGE: dict[str, str | None] = {
    "ECAD+": "Epithelial",
    "SMA+": "Stromal (SMA+)",
    "Immune": "Immune",
    "Treg": "Immune",
    "Other myeloid cells": "Immune",
    "Dendritic cells": "Immune",
    "NK cells": "Immune",
    "Unknown": OTHER,
}
_IMMUNE_TYPES = (
    "CD4 T cells",
    "CD8 T cells",
    "Tregs",
    "NK cells",
    "B cells",
    "Plasma cells",
    "Macrophages",
    "Monocytes",
    "Dendritic cells",
    "pDCs",
    "Neutrophils",
    "Mast cells",
)
#: our type -> CyCIF lineage. SMA+ cells are the smooth-muscle / myofibroblast / pericyte family; endothelial cells
#: cannot be called on this panel (no CD31) and would be stromal too.
CYCIF_OURS_LINEAGE: dict[str, str] = {
    **dict.fromkeys((*_IMMUNE_TYPES, "Immune cells", "T cells", "Myeloid cells"), "Immune"),
    "Epithelial": "Epithelial",
    **dict.fromkeys(
        ("Stromal cells", "Smooth muscle", "Fibroblasts", "Pericytes", "Endothelial", "Lymphatic endothelial"),
        "Stromal (SMA+)",
    ),
}

#: inForm phenotype -> lineage (phenoptr's R/data.R: CK+ tumour, CD8+ cytotoxic T, FoxP3+ Treg, CD68+ macrophage)
VECTRA_REF_LINEAGE: dict[str, str | None] = {
    "CK+": "Epithelial/tumour",
    "CD8+": "CD8 T cells",
    "FoxP3+": "Tregs",
    "CD68+": "Macrophages (CD68+)",
    "other": OTHER,
}
#: our type -> Vectra lineage. CD68 marks the whole monocyte-macrophage-DC family in such a panel, so our
#: myeloid cells, monocytes and dendritic cells count as CD68+ too; every other type is "other" (as inForm's other
#: class), including a bare "T cells" or "Immune cells" call (neither CD8+ nor FoxP3+ at the reference's level).
VECTRA_OURS_LINEAGE: dict[str, str] = {
    "Epithelial": "Epithelial/tumour",
    "CD8 T cells": "CD8 T cells",
    "Tregs": "Tregs",
    "Macrophages": "Macrophages (CD68+)",
    "Monocytes": "Macrophages (CD68+)",
    "Dendritic cells": "Macrophages (CD68+)",
    "Myeloid cells": "Macrophages (CD68+)",
}

#: RNA-derived PBMC reference (see :func:`eccite_rna_reference`) -> lineage; unresolved T clusters are not scored.
#: Monocytes and dendritic cells form one myeloid lineage: on 500 cells the RNA clustering finds no DC cluster of its
#: own (any DCs sit in the monocyte clusters), so the reference's "Monocytes" are its myeloid cells.
MYELOID_PBMC = "Monocytes/DCs"
ECCITE_REF_LINEAGE: dict[str, str | None] = {
    "CD4 T cells": "CD4 T cells",
    "CD8 T cells": "CD8 T cells",
    "NK cells": "NK cells",
    "B cells": "B cells",
    "Monocytes": MYELOID_PBMC,
    "Dendritic cells": MYELOID_PBMC,
    "pDCs": MYELOID_PBMC,
    "Platelets": "Platelets",
    "T cells (unresolved)": None,
    "Unresolved": None,
}
#: our type -> PBMC lineage (Tregs are CD4 T cells and plasma cells B-lineage at this resolution; macrophages and
#: neutrophils do not circulate among PBMCs: a call of either is counted with the monocytes, their nearest kin, as
#: is a "Myeloid cells" call). A bare "T cells" call names neither CD4 nor CD8 and counts as "other".
ECCITE_OURS_LINEAGE: dict[str, str] = {
    "CD4 T cells": "CD4 T cells",
    "Tregs": "CD4 T cells",
    "CD8 T cells": "CD8 T cells",
    "NK cells": "NK cells",
    "B cells": "B cells",
    "Plasma cells": "B cells",
    **dict.fromkeys(
        ("Monocytes", "Macrophages", "Neutrophils", "Dendritic cells", "pDCs", "Myeloid cells"), MYELOID_PBMC
    ),
}

#: ark cell_meta_cluster -> lineage (monocytes, macrophages, DC/mono and the giant cell form one myeloid lineage)
ARK_REF_LINEAGE: dict[str, str | None] = {
    "CD4_T": "CD4 T cells",
    "CD8_T": "CD8 T cells",
    "B_cell": "B cells",
    "CD14_Mono": "Myeloid",
    "CD16_CD14_Mono": "Myeloid",
    "CD68_Mac": "Myeloid",
    "CD206_Mac": "Myeloid",
    "CD11c_DC/Mono": "Myeloid",
    "giant_cell": "Myeloid",
    "neutrophil": "Neutrophils",
    "endothelial": "Endothelial",
    "fibroblast": "Stromal",
    "imm_other": OTHER,
}
ARK_OURS_LINEAGE: dict[str, str] = {
    "Myeloid cells": "Myeloid",
    "Stromal cells": "Stromal",
    "CD4 T cells": "CD4 T cells",
    "Tregs": "CD4 T cells",
    "CD8 T cells": "CD8 T cells",
    "B cells": "B cells",
    "Plasma cells": "B cells",
    "Monocytes": "Myeloid",
    "Macrophages": "Myeloid",
    "Dendritic cells": "Myeloid",
    "pDCs": "Myeloid",
    "Neutrophils": "Neutrophils",
    "Endothelial": "Endothelial",
    "Lymphatic endothelial": "Endothelial",
    "Fibroblasts": "Stromal",
    "Smooth muscle": "Stromal",
    "Pericytes": "Stromal",
}


@dataclass
class RealSet:
    """One labelled real set: what the methods see and what they are scored against."""

    name: str
    title: str
    adata: object  #: AnnData, raw intensities / counts in X, obsm['spatial'] in µm
    reference: pd.Series  #: reference label per cell (index = adata.obs_names)
    ref_lineage: dict[str, str | None]
    ours_lineage: dict[str, str]
    platform_prot: str
    peer_transform: str  #: 'arcsinh' (arcsinh(x/5) + z-score, imaging) or 'clr' (CLR + z-score, ADT counts)
    reference_source: str
    notes: list[str] = field(default_factory=list)

    def ref_lineages(self) -> pd.Series:
        """Lineage of every cell's reference label (None: not scored)."""
        return self.reference.map(lambda v: self.ref_lineage.get(v, OTHER))

    def ours_to_lineage(self, labels: pd.Series) -> pd.Series:
        """Our type names -> this set's lineages (Unknown and types not in the map -> OTHER)."""
        return labels.astype(str).map(lambda v: self.ours_lineage.get(v, OTHER))


def _dummy_grid(n: int, spacing: float = 20.0) -> np.ndarray:
    side = int(np.ceil(np.sqrt(n)))
    return np.stack([np.arange(n) % side, np.arange(n) // side], axis=1).astype(np.float64) * spacing


# ----------------------------------------------------------------------------------------------------- CyCIF
def load_cycif() -> RealSet:
    """MCMICRO exemplar-001 through the CyCIF reader (all 12 channels; the pipeline drops DNA_* by default)."""
    import spatialmultiomics as smo

    adata = smo.io.read(CYCIF / "exemplar-001--unmicst_cell.csv", "cycif")
    ref = pd.read_csv(CYCIF / "scimap_reference_rescaled_and_phenotypes.csv.gz", usecols=["CellID", "phenotype"])
    ref.index = ref["CellID"].astype(str)
    reference = ref["phenotype"].reindex(adata.obs_names).astype(str)
    if reference.eq("nan").any():
        msg = "CyCIF: some cells have no scimap phenotype"
        raise ValueError(msg)
    return RealSet(
        name="cycif",
        title="CyCIF exemplar-001 vs scimap gating",
        adata=adata,
        reference=reference,
        ref_lineage=CYCIF_REF_LINEAGE,
        ours_lineage=CYCIF_OURS_LINEAGE,
        platform_prot="CyCIF",
        peer_transform="arcsinh",
        reference_source="scimap phenotype_cells on manual gates (phenotype_workflow.csv), not expert biology labels",
    )


# ---------------------------------------------------------------------------------------------------- Vectra
VECTRA_MARKERS = ("PDL1", "CD8", "FoxP3", "CD68", "PD1", "CK", "DAPI", "Autofluorescence")


def read_vectra(path: str | Path | None = None):
    """An inForm ``cell_seg_data`` table as AnnData.

    ``X`` = the ``Entire Cell <marker> Mean`` columns (marker names without the ``(Opal nnn)`` suffix; DAPI and
    autofluorescence kept: the pipeline leaves them out by default), ``obsm['spatial']`` = ``Cell X/Y Position``
    (µm), ``obs`` = ``Tissue Category``, ``Phenotype``, ``Confidence``; ``obs_names`` = ``Cell ID``.
    """
    import anndata as ad

    path = Path(path) if path is not None else VECTRA / "sample_cell_seg_data.csv.gz"
    table = pd.read_csv(path)
    cols, names = [], []
    for c in table.columns:
        if c.startswith("Entire Cell ") and c.endswith(" Mean"):
            name = c[len("Entire Cell ") : -len(" Mean")].split(" (")[0].strip()
            cols.append(c)
            names.append(name)
    if not cols:
        msg = f"{path}: no 'Entire Cell <marker> Mean' columns"
        raise ValueError(msg)
    ids = table["Cell ID"].astype(str) if "Cell ID" in table else pd.Series(np.arange(len(table)).astype(str))
    obs = table[[c for c in ("Tissue Category", "Phenotype", "Confidence") if c in table]].copy()
    obs.index = pd.Index(ids.to_numpy(), name=None)
    adata = ad.AnnData(table[cols].to_numpy(np.float32), obs=obs, var=pd.DataFrame(index=pd.Index(names, dtype=str)))
    adata.obsm["spatial"] = table[["Cell X Position", "Cell Y Position"]].to_numpy(np.float64)
    return adata


def load_vectra() -> RealSet:
    adata = read_vectra()
    reference = adata.obs["Phenotype"].astype(str)
    return RealSet(
        name="vectra",
        title="Vectra mIF (inForm) vs inForm phenotypes",
        adata=adata,
        reference=reference,
        ref_lineage=VECTRA_REF_LINEAGE,
        ours_lineage=VECTRA_OURS_LINEAGE,
        platform_prot="generic",
        peer_transform="arcsinh",
        reference_source="inForm's operator-trained phenotype classifier (vendor software), not independent experts",
        notes=["PDL1 and PD1 are functional markers; the phenotypes are mutually exclusive (one per cell)"],
    )


# ---------------------------------------------------------------------------------------------------- ECCITE
def read_eccite():
    """RNA (cells x genes, ``hg19_`` prefix removed) and ADT counts as AnnData, both on a dummy 20 µm grid."""
    import anndata as ad
    import scipy.io

    X = scipy.io.mmread(CITESEQ / "RNA_counts.mtx.gz").T.tocsr().astype(np.float32)
    genes = pd.read_csv(CITESEQ / "RNA_genes.tsv.gz", header=None)[0].astype(str).str.replace("hg19_", "", regex=False)
    barcodes = pd.read_csv(CITESEQ / "barcodes.tsv.gz", header=None)[0].astype(str).tolist()
    adt = pd.read_csv(CITESEQ / "ADT_counts.csv.gz", index_col=0).T
    adt.columns = adt.columns.astype(str)
    rna = ad.AnnData(X, obs=pd.DataFrame(index=barcodes), var=pd.DataFrame(index=pd.Index(genes.tolist())))
    rna.var_names_make_unique()
    prot = ad.AnnData(
        adt.loc[barcodes].to_numpy(np.float32), obs=pd.DataFrame(index=barcodes), var=pd.DataFrame(index=adt.columns)
    )
    xy = _dummy_grid(len(barcodes))
    rna.obsm["spatial"] = xy.copy()
    prot.obsm["spatial"] = xy.copy()
    return rna, prot


#: canonical PBMC marker genes used to name the RNA clusters (thresholds on the cluster mean of log1p(CP10k))
PBMC_GENES = {
    "B": ("MS4A1", "CD79A"),
    "myeloid": ("LYZ", "CST3"),
    "DC": ("FCER1A",),
    "CD14 mono": ("CD14",),
    "pDC": ("LILRA4",),
    "platelet": ("PPBP",),
    "T": ("CD3D",),
    "CD8": ("CD8A", "CD8B"),
    "cytotoxic": ("GNLY", "NKG7"),
}


def name_pbmc_cluster(means: pd.Series) -> str:
    """Name one RNA cluster from the mean log1p(CP10k) of canonical PBMC genes (``means``: gene -> mean).

    The rule, first match wins (``m(g1, g2)`` = mean of the genes' cluster means; 1.0 is about 2.7 CP10k):

    1. ``m(MS4A1, CD79A) >= 1`` -> B cells;
    2. ``m(LYZ, CST3) >= 1`` -> Dendritic cells if ``FCER1A >= 1`` and ``CD14 < 0.5``, else Monocytes
       (CD14+ and FCGR3A+ monocytes together);
    3. ``LILRA4 >= 1`` -> pDCs; ``PPBP >= 1`` -> Platelets;
    4. ``CD3D >= 0.5`` (T cell; CD3D rather than CD3E, whose mRNA NK cells also carry) -> CD8 T cells if
       ``m(CD8A, CD8B) >= 1``; CD4 T cells if not and the cluster is not cytotoxic (``m(GNLY, NKG7) < 1``; CD4 mRNA
       is too sparse in droplet data to be required); otherwise ``T cells (unresolved)`` (cytotoxic CD8-low T
       cells: MAIT / gamma-delta / double-negative, which the protein-level types cannot be matched to);
    5. ``m(GNLY, NKG7) >= 1`` without CD3D -> NK cells;
    6. otherwise ``Unresolved``.
    """

    def m(key: str) -> float:
        genes = [g for g in PBMC_GENES[key] if g in means.index]
        return float(means[genes].mean()) if genes else 0.0

    if m("B") >= 1:
        return "B cells"
    if m("myeloid") >= 1:
        return "Dendritic cells" if m("DC") >= 1 and m("CD14 mono") < 0.5 else "Monocytes"
    if m("pDC") >= 1:
        return "pDCs"
    if m("platelet") >= 1:
        return "Platelets"
    if m("T") >= 0.5:
        if m("CD8") >= 1:
            return "CD8 T cells"
        return "CD4 T cells" if m("cytotoxic") < 1 else "T cells (unresolved)"
    if m("cytotoxic") >= 1:
        return "NK cells"
    return "Unresolved"


#: Leiden resolution of the RNA reference: over-clustered, then named and merged (resolution 1.0 leaves NK cells
#: and CD3+ cytotoxic T cells in one cluster on these 500 cells)
ECCITE_RNA_RESOLUTION = 2.0


def eccite_rna_reference(rna, *, resolution: float = ECCITE_RNA_RESOLUTION, seed: int = 0):
    """Reference PBMC types from the RNA alone: the standard scanpy workflow, clusters named by marker genes.

    ``filter_genes(min_cells=3)``, ``normalize_total(1e4)``, ``log1p``, ``highly_variable_genes(n_top_genes=2000)``,
    ``scale(max_value=10)``, ``pca`` (50 components), ``neighbors`` (15, defaults), ``leiden`` (igraph,
    ``resolution``), each cluster named by :func:`name_pbmc_cluster`. Returns (labels per cell, per-cluster table).
    """
    import scanpy as sc

    a = rna.copy()
    sc.pp.filter_genes(a, min_cells=3)
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    genes = sorted({g for gs in PBMC_GENES.values() for g in gs if g in a.var_names})
    expr = pd.DataFrame(a[:, genes].X.toarray(), index=a.obs_names, columns=genes)
    sc.pp.highly_variable_genes(a, n_top_genes=2000)
    b = a[:, a.var["highly_variable"].to_numpy()].copy()
    b.X = b.X.toarray()  # scale densifies anyway (and says so)
    sc.pp.scale(b, max_value=10)
    sc.tl.pca(b, random_state=seed)
    sc.pp.neighbors(b, random_state=seed)
    sc.tl.leiden(b, resolution=resolution, flavor="igraph", n_iterations=2, directed=False, random_state=seed)
    clusters = b.obs["leiden"].astype(str)
    means = expr.groupby(clusters.to_numpy()).mean()
    names = {c: name_pbmc_cluster(means.loc[c]) for c in means.index}
    table = means.round(2)
    table.insert(0, "cells", clusters.value_counts().reindex(means.index).to_numpy())
    table.insert(0, "named", pd.Series(names))
    labels = clusters.map(names).rename("reference")
    return labels, table


def load_eccite(reference_fn: Callable | None = None) -> RealSet:
    """ADT counts (what the methods see) + the RNA-derived reference labels."""
    rna, prot = read_eccite()
    labels, table = (reference_fn or eccite_rna_reference)(rna)
    s = RealSet(
        name="eccite",
        title="ECCITE-seq PBMC: ADT only vs RNA-derived types",
        adata=prot,
        reference=labels.reindex(prot.obs_names).astype(str),
        ref_lineage=ECCITE_REF_LINEAGE,
        ours_lineage=ECCITE_OURS_LINEAGE,
        platform_prot="generic",
        peer_transform="clr",
        reference_source=(
            f"scanpy workflow on the RNA (Leiden resolution {ECCITE_RNA_RESOLUTION}), clusters named by canonical "
            "PBMC genes (name_pbmc_cluster); the methods see only the 49 ADT"
        ),
        notes=["not spatial: cells on a dummy 20 µm grid", "cells not demultiplexed by HTO (doublets kept)"],
    )
    s.rna_clusters = table  # type: ignore[attr-defined]
    return s


# ------------------------------------------------------------------------------------------------------- ark
def load_ark() -> RealSet:
    import spatialmultiomics as smo

    adata = smo.io.read(ARK / "cell_table_size_normalized.csv", "mibi")
    reference = adata.obs["cell_meta_cluster"].astype(str)
    return RealSet(
        name="ark",
        title="MIBI ark cell_table slice vs ark cell_meta_cluster",
        adata=adata,
        reference=reference,
        ref_lineage=ARK_REF_LINEAGE,
        ours_lineage=ARK_OURS_LINEAGE,
        platform_prot="MIBI",
        peer_transform="arcsinh",
        reference_source=(
            "ark Pixie clustering of these intensities, meta-clusters named by the analyst (not independent); "
            "300 cells (first 150 of each of 2 FOVs)"
        ),
        notes=["intensities already arcsinh-transformed and normalized (0..1) by ark"],
    )


LOADERS: dict[str, Callable[[], RealSet]] = {
    "cycif": load_cycif,
    "vectra": load_vectra,
    "eccite": load_eccite,
    "ark": load_ark,
}
FOLDERS = {"cycif": CYCIF, "vectra": VECTRA, "eccite": CITESEQ, "ark": ARK}

#: sets in ../shared/data that cannot be scored for annotation, and why
NOT_SCORED = {
    "mibi_tnbc_keren2018": (
        "16 published cell types (Keren 2018) but no intensities (coordinates + labels only): there is nothing to "
        "annotate; it serves co-localization (bench_mibi_tnbc.py)"
    ),
    "imc_steinbock_imcRtools_mock": "404 cells, 5 channels, no cell-type labels",
    "merscope_vpt_tests / visium_scanpy_fixture": "RNA reader fixtures without cell-type labels",
}
