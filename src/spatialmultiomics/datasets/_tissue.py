"""A realistic synthetic tumour section with known truth: 12 cell types, state programmes, spill-over, niches.

Built to be hard in the ways real data are hard, so that annotation and co-localization methods can be measured:

- 12 types, five of them rare (2.5-3 %): Tregs, plasma cells, NK cells, dendritic cells, neutrophils;
- markers shared between related types (CD3E in all T cells, CD68 in macrophages and DCs, HLA-DR on B cells,
  macrophages and DCs, SDC1/CD138 on plasma and epithelial cells, NKG7/GZMB in NK and CD8 T cells ...), lineage-
  and type-level differences on many non-marker genes, a strong housekeeping programme;
- cell-state programmes that cut across types: cycling (MKI67, TOP2A ...), interferon response in one region
  (ISG15, IFIT1 ..., PD-L1 and HLA-DR induced on tumour cells), hypoxia in tumour cores, a stress response;
- RNA: sparse negative-binomial counts (gamma-Poisson, gene-specific overdispersion) with log-normal library
  sizes and ambient / neighbour transcript contamination;
- proteins: 28 real channel names, per-channel background, cell-specific staining and noise, and lateral
  spill-over of neighbouring cells' signal (segmentation bleed);
- a layout with tumour nests, a follicle-like lymphoid aggregate (B cells in the core, CD4 T cells and DCs in the
  mantle), vessels, CD8 T cells and macrophages at the tumour border, neutrophils inside nests, B cells and CD4 T
  cells excluded from the tumour. The planted attraction and avoidance pairs are in ``uns['truth']``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from spatialmultiomics._keys import Keys
from spatialmultiomics._random import check_random_state
from spatialmultiomics._validate import check_positive, check_positive_int

if TYPE_CHECKING:
    from mudata import MuData

__all__ = ["TISSUE_MARKERS", "TISSUE_TYPES", "synthetic_tissue"]

_EPI, _FIB, _ENDO, _MAC = "Epithelial", "Fibroblasts", "Endothelial", "Macrophages"
_CD4, _CD8, _TREG, _B = "CD4 T cells", "CD8 T cells", "Tregs", "B cells"
_PC, _NK, _DC, _NEUT = "Plasma cells", "NK cells", "Dendritic cells", "Neutrophils"

#: type -> (fraction of cells, lineage, relative library size)
TISSUE_TYPES: dict[str, tuple[float, str, float]] = {
    _EPI: (0.30, "epithelial", 1.3),
    _FIB: (0.14, "stromal", 1.1),
    _ENDO: (0.07, "stromal", 0.9),
    _MAC: (0.11, "myeloid", 1.0),
    _CD4: (0.09, "T", 0.6),
    _CD8: (0.08, "T", 0.6),
    _B: (0.07, "B", 0.6),
    _TREG: (0.03, "T", 0.6),
    _PC: (0.03, "B", 1.2),
    _NK: (0.025, "NK", 0.6),
    _DC: (0.025, "myeloid", 0.9),
    _NEUT: (0.03, "myeloid", 0.4),
}
_T = (_CD4, _CD8, _TREG)
_IMMUNE = (_CD4, _CD8, _TREG, _B, _PC, _NK, _MAC, _DC, _NEUT)
_ALL = tuple(TISSUE_TYPES)

#: the marker reference a user would pass for this tissue (deliberately with shared markers)
TISSUE_MARKERS: dict[str, dict[str, list[str]]] = {
    _EPI: {"genes": ["EPCAM", "KRT8", "KRT18", "KRT19", "CDH1"], "proteins": ["PanCK", "E-cadherin"]},
    _FIB: {"genes": ["COL1A1", "COL1A2", "DCN", "LUM", "PDGFRA"], "proteins": ["aSMA", "Vimentin"]},
    _ENDO: {"genes": ["PECAM1", "VWF", "CDH5", "KDR", "CLDN5"], "proteins": ["CD31"]},
    _MAC: {"genes": ["CD68", "CD163", "CSF1R", "C1QA", "APOE"], "proteins": ["CD68", "CD163", "CD14"]},
    _CD4: {"genes": ["CD3E", "CD3D", "CD4", "IL7R", "CCR7"], "proteins": ["CD3", "CD4"]},
    _CD8: {"genes": ["CD3E", "CD3D", "CD8A", "CD8B", "GZMK"], "proteins": ["CD3", "CD8"]},
    _B: {"genes": ["MS4A1", "CD19", "CD79A", "PAX5", "BANK1"], "proteins": ["CD20", "HLA-DR"]},
    _TREG: {"genes": ["CD3E", "FOXP3", "IL2RA", "CTLA4", "TNFRSF18"], "proteins": ["CD3", "CD4", "FOXP3", "CD25"]},
    _PC: {"genes": ["JCHAIN", "MZB1", "IGKC", "XBP1", "SDC1"], "proteins": ["CD138", "CD38"]},
    _NK: {"genes": ["NCAM1", "KLRD1", "KLRF1", "GNLY", "NKG7"], "proteins": ["CD56", "CD16", "Granzyme B"]},
    _DC: {"genes": ["ITGAX", "CD1C", "FCER1A", "CLEC10A", "LAMP3"], "proteins": ["CD11c", "HLA-DR"]},
    _NEUT: {"genes": ["S100A8", "S100A9", "CSF3R", "FCGR3B", "CXCR2"], "proteins": ["CD66b", "MPO"]},
}

# (gene, mean counts per cell at size factor 1, types expressing it); a gene listed twice takes the max level
_GENE_TABLE: tuple[tuple[str, float, tuple[str, ...]], ...] = (
    # housekeeping
    ("MALAT1", 15.0, _ALL),
    ("B2M", 8.0, _ALL),
    ("ACTB", 8.0, _ALL),
    ("TMSB4X", 6.0, _ALL),
    ("EEF1A1", 8.0, _ALL),
    ("GAPDH", 4.0, _ALL),
    ("FTL", 4.0, _ALL),
    ("TPT1", 4.0, _ALL),
    ("RPLP0", 3.0, _ALL),
    ("RPS27A", 3.0, _ALL),
    ("HSP90AB1", 2.0, _ALL),
    ("UBC", 2.0, _ALL),
    # immune
    ("PTPRC", 3.0, _IMMUNE),
    ("PTPRC", 1.0, (_PC,)),
    ("CORO1A", 2.0, _IMMUNE),
    ("LCP1", 2.0, _IMMUNE),
    # T / NK
    ("CD3E", 3.0, _T),
    ("CD3D", 3.0, _T),
    ("CD3G", 1.5, _T),
    ("TRAC", 2.5, _T),
    ("LCK", 1.5, _T),
    ("CD2", 2.0, _T),
    ("CD2", 1.2, (_NK,)),
    ("CD247", 1.0, (*_T, _NK)),
    ("LCK", 0.6, (_NK,)),
    ("CD4", 1.5, (_CD4, _TREG)),
    ("CD4", 0.4, (_MAC, _DC)),
    ("IL7R", 3.0, (_CD4,)),
    ("IL7R", 0.5, (_CD8,)),
    ("CCR7", 1.5, (_CD4,)),
    ("TCF7", 1.2, (_CD4,)),
    ("SELL", 1.0, (_CD4,)),
    ("LEF1", 1.0, (_CD4,)),
    ("CD8A", 3.0, (_CD8,)),
    ("CD8B", 2.0, (_CD8,)),
    ("GZMK", 2.0, (_CD8,)),
    ("CCL5", 3.0, (_CD8,)),
    ("NKG7", 2.0, (_CD8,)),
    ("GZMA", 1.5, (_CD8, _NK)),
    ("PRF1", 0.8, (_CD8,)),
    ("PDCD1", 0.6, (_CD8, _TREG)),
    ("FOXP3", 0.9, (_TREG,)),
    ("IL2RA", 1.2, (_TREG,)),
    ("IL2RA", 0.2, (_CD4,)),
    ("CTLA4", 1.5, (_TREG,)),
    ("CTLA4", 0.3, (_CD4,)),
    ("TNFRSF18", 1.0, (_TREG,)),
    ("IKZF2", 0.8, (_TREG,)),
    ("TIGIT", 1.0, (_TREG, _CD8)),
    ("NCAM1", 1.0, (_NK,)),
    ("KLRD1", 2.5, (_NK,)),
    ("KLRD1", 0.4, (_CD8,)),
    ("KLRF1", 1.5, (_NK,)),
    ("GNLY", 4.0, (_NK,)),
    ("GNLY", 0.5, (_CD8,)),
    ("NKG7", 4.0, (_NK,)),
    ("GZMB", 2.5, (_NK,)),
    ("GZMB", 0.5, (_CD8,)),
    ("PRF1", 2.0, (_NK,)),
    ("CCL5", 2.0, (_NK,)),
    ("FCGR3A", 1.5, (_NK, _MAC)),
    ("TYROBP", 2.0, (_NK, _DC, _NEUT)),
    ("TYROBP", 3.0, (_MAC,)),
    # B / plasma
    ("CD79A", 2.5, (_B, _PC)),
    ("MS4A1", 3.0, (_B,)),
    ("CD19", 1.5, (_B,)),
    ("CD79B", 2.0, (_B,)),
    ("PAX5", 1.0, (_B,)),
    ("BANK1", 1.2, (_B,)),
    ("CR2", 0.8, (_B,)),
    ("CD22", 0.8, (_B,)),
    ("HLA-DRA", 3.0, (_B, _MAC)),
    ("HLA-DRA", 6.0, (_DC,)),
    ("CD74", 6.0, (_B, _MAC)),
    ("CD74", 12.0, (_DC,)),
    ("HLA-DPA1", 1.5, (_B, _MAC, _DC)),
    ("JCHAIN", 6.0, (_PC,)),
    ("MZB1", 4.0, (_PC,)),
    ("IGKC", 20.0, (_PC,)),
    ("IGKC", 0.8, (_B,)),
    ("XBP1", 3.0, (_PC,)),
    ("XBP1", 0.6, (_EPI,)),
    ("SDC1", 1.5, (_PC,)),
    ("SDC1", 1.0, (_EPI,)),
    ("PRDM1", 0.8, (_PC,)),
    ("IGHG1", 8.0, (_PC,)),
    ("CD38", 2.0, (_PC,)),
    ("CD38", 0.4, (_NK, _B)),
    # myeloid
    ("CD68", 3.0, (_MAC,)),
    ("CD68", 1.0, (_DC,)),
    ("CD68", 0.5, (_NEUT,)),
    ("CD163", 2.5, (_MAC,)),
    ("CSF1R", 2.0, (_MAC,)),
    ("CSF1R", 0.6, (_DC,)),
    ("C1QA", 3.0, (_MAC,)),
    ("C1QB", 3.0, (_MAC,)),
    ("C1QC", 2.5, (_MAC,)),
    ("APOE", 4.0, (_MAC,)),
    ("APOE", 0.5, (_FIB,)),
    ("MRC1", 1.5, (_MAC,)),
    ("CD14", 2.0, (_MAC,)),
    ("CD14", 0.6, (_DC, _NEUT)),
    ("FCER1G", 2.0, (_MAC, _DC, _NEUT)),
    ("AIF1", 3.0, (_MAC,)),
    ("AIF1", 2.0, (_DC,)),
    ("LYZ", 4.0, (_MAC,)),
    ("LYZ", 3.0, (_DC, _NEUT)),
    ("SPP1", 2.0, (_MAC,)),
    ("ITGAX", 1.5, (_DC,)),
    ("ITGAX", 0.5, (_MAC,)),
    ("CD1C", 1.5, (_DC,)),
    ("FCER1A", 1.2, (_DC,)),
    ("CLEC10A", 1.2, (_DC,)),
    ("LAMP3", 0.8, (_DC,)),
    ("CCR7", 0.8, (_DC,)),
    ("IRF8", 1.0, (_DC,)),
    ("S100A8", 6.0, (_NEUT,)),
    ("S100A8", 0.8, (_MAC,)),
    ("S100A9", 8.0, (_NEUT,)),
    ("S100A9", 1.0, (_MAC,)),
    ("CSF3R", 2.0, (_NEUT,)),
    ("FCGR3B", 3.0, (_NEUT,)),
    ("CXCR2", 1.5, (_NEUT,)),
    ("CXCL8", 2.0, (_NEUT,)),
    ("SOD2", 1.5, (_NEUT,)),
    ("MNDA", 1.5, (_NEUT,)),
    ("MNDA", 0.5, (_MAC,)),
    # epithelial (tumour)
    ("EPCAM", 3.0, (_EPI,)),
    ("KRT8", 6.0, (_EPI,)),
    ("KRT18", 5.0, (_EPI,)),
    ("KRT19", 5.0, (_EPI,)),
    ("CDH1", 2.0, (_EPI,)),
    ("KRT7", 2.0, (_EPI,)),
    ("MUC1", 1.5, (_EPI,)),
    ("CLDN4", 2.0, (_EPI,)),
    ("ELF3", 1.5, (_EPI,)),
    ("CEACAM5", 2.0, (_EPI,)),
    ("TACSTD2", 2.0, (_EPI,)),
    # stroma
    ("COL1A1", 8.0, (_FIB,)),
    ("COL1A2", 6.0, (_FIB,)),
    ("COL3A1", 6.0, (_FIB,)),
    ("DCN", 4.0, (_FIB,)),
    ("LUM", 4.0, (_FIB,)),
    ("PDGFRA", 1.2, (_FIB,)),
    ("PDGFRB", 1.2, (_FIB,)),
    ("PDGFRB", 0.3, (_ENDO,)),
    ("FAP", 1.0, (_FIB,)),
    ("THY1", 1.0, (_FIB,)),
    ("ACTA2", 2.0, (_FIB,)),
    ("ACTA2", 0.5, (_ENDO,)),
    ("FN1", 3.0, (_FIB,)),
    ("POSTN", 2.0, (_FIB,)),
    ("MMP2", 1.5, (_FIB,)),
    ("VIM", 6.0, (_FIB,)),
    ("VIM", 5.0, (_ENDO,)),
    ("VIM", 2.0, (_MAC, _DC)),
    ("VIM", 1.5, (*_T, _B, _NK)),
    ("SPARC", 4.0, (_FIB,)),
    ("SPARC", 3.0, (_ENDO,)),
    ("PECAM1", 3.0, (_ENDO,)),
    ("PECAM1", 0.3, (_MAC,)),
    ("VWF", 4.0, (_ENDO,)),
    ("CDH5", 2.0, (_ENDO,)),
    ("KDR", 1.5, (_ENDO,)),
    ("CLDN5", 2.0, (_ENDO,)),
    ("EMCN", 1.5, (_ENDO,)),
    ("PLVAP", 2.0, (_ENDO,)),
    ("ENG", 1.5, (_ENDO,)),
    ("RAMP2", 2.0, (_ENDO,)),
    ("AQP1", 1.5, (_ENDO,)),
)

# cell-state programmes: (gene, mean counts added in an active cell at size factor 1)
_PROGRAMMES: dict[str, tuple[tuple[str, float], ...]] = {
    "cycling": (
        ("MKI67", 0.8),
        ("TOP2A", 1.5),
        ("CDK1", 1.0),
        ("CCNB1", 1.2),
        ("CCNB2", 0.8),
        ("BIRC5", 1.0),
        ("UBE2C", 1.5),
        ("TYMS", 1.0),
        ("PCNA", 1.2),
        ("MCM2", 0.6),
        ("CENPF", 0.8),
        ("NUSAP1", 0.8),
        ("RRM2", 1.0),
        ("CDKN3", 0.6),
        ("TUBB", 2.0),
        ("HMGB2", 2.0),
        ("STMN1", 2.0),
    ),
    "interferon": (
        ("ISG15", 3.0),
        ("IFI6", 2.0),
        ("IFIT1", 1.5),
        ("IFIT3", 1.5),
        ("MX1", 1.5),
        ("OAS1", 1.0),
        ("STAT1", 2.0),
        ("IRF7", 1.0),
        ("IFI44L", 1.0),
        ("CXCL10", 1.5),
        ("GBP1", 1.5),
        ("IFITM3", 2.0),
        ("CD274", 0.5),
        ("HLA-DRA", 1.0),
        ("CD74", 2.0),
        ("B2M", 4.0),
    ),
    "hypoxia": (
        ("VEGFA", 2.0),
        ("CA9", 1.5),
        ("SLC2A1", 1.5),
        ("LDHA", 2.0),
        ("BNIP3", 1.0),
        ("NDRG1", 1.5),
        ("ADM", 1.0),
        ("PGK1", 1.5),
    ),
    "stress": (
        ("HSPA1A", 3.0),
        ("HSPA1B", 2.0),
        ("FOS", 3.0),
        ("JUN", 2.0),
        ("JUNB", 2.0),
        ("DUSP1", 2.0),
        ("EGR1", 1.5),
    ),
}
# probability that a cell of a type is cycling (default for unlisted types)
_CYCLING = {_EPI: 0.35, _CD8: 0.10, _CD4: 0.06, _TREG: 0.10, _B: 0.12, _NK: 0.05, _FIB: 0.04, _ENDO: 0.04}
_CYCLING_DEFAULT = 0.02

# protein channels and the true signal (intensity units before background, staining and noise) per type
_PROTEIN_TABLE: tuple[tuple[str, tuple[tuple[float, tuple[str, ...]], ...]], ...] = (
    ("CD45", ((20.0, (*_T, _B, _NK, _MAC, _DC)), (12.0, (_NEUT,)), (5.0, (_PC,)))),
    ("CD3", ((25.0, _T),)),
    ("CD4", ((20.0, (_CD4, _TREG)), (5.0, (_MAC, _DC)))),
    ("CD8", ((25.0, (_CD8,)),)),
    ("FOXP3", ((10.0, (_TREG,)),)),
    ("CD25", ((8.0, (_TREG,)), (3.0, (_CD4,)))),
    ("CD20", ((30.0, (_B,)),)),
    ("CD138", ((30.0, (_PC,)), (6.0, (_EPI,)))),
    ("CD38", ((30.0, (_PC,)), (8.0, (_NK,)), (4.0, (_B,)))),
    ("CD56", ((8.0, (_NK,)),)),
    ("CD16", ((12.0, (_NK, _NEUT)), (6.0, (_MAC,)))),
    ("CD68", ((30.0, (_MAC,)), (10.0, (_DC,)), (4.0, (_NEUT,)))),
    ("CD163", ((15.0, (_MAC,)),)),
    ("CD14", ((8.0, (_MAC,)), (4.0, (_NEUT,)), (3.0, (_DC,)))),
    ("CD11c", ((12.0, (_DC,)), (8.0, (_MAC,)))),
    ("HLA-DR", ((30.0, (_DC,)), (20.0, (_MAC, _B)))),
    ("CD66b", ((30.0, (_NEUT,)),)),
    ("MPO", ((10.0, (_NEUT,)),)),
    ("PanCK", ((40.0, (_EPI,)),)),
    ("E-cadherin", ((30.0, (_EPI,)),)),
    ("aSMA", ((20.0, (_FIB,)), (5.0, (_ENDO,)))),
    ("Vimentin", ((30.0, (_FIB,)), (25.0, (_ENDO,)), (10.0, (_MAC, _DC)), (4.0, (*_T, _B, _NK, _NEUT)))),
    ("CD31", ((30.0, (_ENDO,)), (3.0, (_MAC,)))),
    ("Ki67", ()),
    ("PD-1", ((6.0, (_CD8, _TREG)), (2.0, (_CD4,)))),
    ("PD-L1", ((4.0, (_MAC,)),)),
    ("Granzyme B", ((20.0, (_NK,)), (8.0, (_CD8,)))),
    ("Histone H3", ((20.0, _ALL),)),
)

_AREA_PER_CELL_UM2 = 150.0  # ~12 µm between cell centres
_TUMOUR_AREA_FRACTION = 0.33
_NEST_RADIUS_UM = (80.0, 150.0)
_FOLLICLE_B_FRACTION = 0.7  # share of B cells placed in follicles
_SPILL_RADIUS_UM = 15.0

#: planted spatial relations (attraction: more neighbours than random; avoidance: fewer)
_ATTRACTION = ((_B, _B), (_B, _CD4), (_CD8, _MAC), (_EPI, _EPI), (_ENDO, _ENDO), (_DC, _CD4))
_AVOIDANCE = ((_B, _EPI), (_CD4, _EPI), (_EPI, _FIB), (_B, _CD8))


def _type_counts(n_cells: int) -> np.ndarray:
    """Cells per type: fractions rounded by largest remainder so that they sum to ``n_cells``."""
    frac = np.array([v[0] for v in TISSUE_TYPES.values()])
    raw = frac / frac.sum() * n_cells
    counts = np.floor(raw).astype(np.int64)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: n_cells - counts.sum()]] += 1
    return counts


def _positions(n: int, side: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` cell centres on a jittered square grid over ``[0, side]^2`` (no two cells on top of each other)."""
    m = int(np.ceil(np.sqrt(n)))
    step = side / m
    grid = np.stack(np.meshgrid(np.arange(m), np.arange(m), indexing="xy"), axis=-1).reshape(-1, 2)
    pick = np.sort(rng.choice(grid.shape[0], size=n, replace=False))
    return (grid[pick] + 0.5 + rng.uniform(-0.35, 0.35, size=(n, 2))) * step


def _segment_distance(xy: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of each point of ``xy`` (n, 2) to the segment ``a``-``b``."""
    ab = b - a
    t = np.clip(((xy - a) @ ab) / max(float(ab @ ab), 1e-12), 0.0, 1.0)
    return np.linalg.norm(xy - (a + t[:, None] * ab), axis=1)


def _layout(xy: np.ndarray, side: float, counts: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Place the types on the positions; returns type codes and the fields used (for states and truth)."""
    n = xy.shape[0]
    # tumour nests: union of wobbly disks; the boundary is set at the quantile that gives the wanted area
    n_nests = max(1, round(_TUMOUR_AREA_FRACTION * side**2 / (np.pi * np.mean(_NEST_RADIUS_UM) ** 2)))
    centres = rng.uniform(0.15 * side, 0.85 * side, size=(n_nests, 2))
    radii = rng.uniform(*_NEST_RADIUS_UM, size=n_nests)
    phases = rng.uniform(0, 2 * np.pi, size=(n_nests, 2))
    from scipy.spatial import cKDTree

    # signed distance-like field to the nearest wobbly disk (only the few nearest nests can matter)
    _, near = cKDTree(centres).query(xy, k=min(8, n_nests))
    near = near.reshape(n, -1)
    d = xy[:, None, :] - centres[near]
    theta = np.arctan2(d[..., 1], d[..., 0])
    wobble = 1.0 + 0.15 * np.sin(3 * theta + phases[near, 0]) + 0.08 * np.sin(5 * theta + phases[near, 1])
    f = (np.hypot(d[..., 0], d[..., 1]) - radii[near] * wobble).min(axis=1)
    d_tumour = f - np.quantile(f, _TUMOUR_AREA_FRACTION)  # µm, < 0 inside the tumour
    inside = 1.0 / (1.0 + np.exp(np.clip(d_tumour / 6.0, -50, 50)))
    stroma = 1.0 - inside
    border = np.exp(-(((d_tumour - 15.0) / 35.0) ** 2))

    # follicles in the stroma, far from the tumour
    names = list(TISSUE_TYPES)
    n_b = counts[names.index(_B)]
    n_foll = max(1, round(n / 5000))
    r_foll = float(np.sqrt(_FOLLICLE_B_FRACTION * n_b / n_foll * _AREA_PER_CELL_UM2 / np.pi))
    margin = np.minimum(np.minimum(xy[:, 0], side - xy[:, 0]), np.minimum(xy[:, 1], side - xy[:, 1]))
    d_foll = np.full(n, np.inf)
    foll_centres = []
    for _ in range(n_foll):
        room = np.minimum(d_tumour - 1.2 * r_foll, margin - 0.6 * r_foll)
        room = np.minimum(room, d_foll - 2.5 * r_foll)
        ok = np.flatnonzero(room > 0)
        idx = int(rng.choice(ok)) if ok.size else int(np.argmax(room))
        foll_centres.append(xy[idx])
        d_foll = np.minimum(d_foll, np.linalg.norm(xy - xy[idx], axis=1))
    core = 1.0 / (1.0 + np.exp(np.clip((d_foll - r_foll) / 8.0, -50, 50)))
    mantle = np.exp(-(((d_foll - 1.25 * r_foll) / (0.35 * r_foll)) ** 2))

    # vessels: straight segments across the section
    n_vessels = max(3, round(6 * np.sqrt(n / 5000)))  # segments span the section: constant vessel area fraction
    ends = rng.uniform(0, side, size=(n_vessels, 2, 2))
    d_vessel = np.full(n, np.inf)
    for a, b in ends:
        np.minimum(d_vessel, _segment_distance(xy, a, b), out=d_vessel)
    vessel = np.exp(-((d_vessel / 12.0) ** 2))

    weights = {
        _EPI: 1e-3 + inside,
        _B: (0.02 + core) * stroma**2,
        _ENDO: (0.03 + vessel) * (0.2 + stroma),
        _CD4: (0.12 + mantle + 0.4 * core) * (0.1 + stroma),
        _TREG: (0.15 + 0.6 * mantle + 0.6 * border) * (0.1 + stroma),
        _PC: (0.15 + 0.5 * mantle + 0.6 * vessel) * (0.05 + stroma),
        _DC: (0.08 + mantle + 0.3 * border) * (0.1 + stroma),
        _CD8: 0.04 + border + 0.25 * inside,
        _MAC: 0.08 + border + 0.3 * inside,
        _NK: 0.2 + 0.5 * border + 0.3 * vessel,
        _NEUT: 0.1 + 0.6 * inside + 0.3 * border,
    }
    codes = np.full(n, -1, dtype=np.int64)
    free = np.ones(n, dtype=bool)
    # weighted sampling without replacement (Gumbel top-k): P(chosen) grows with the weight
    for name, w in weights.items():
        k = counts[names.index(name)]
        key = np.where(free, np.log(np.maximum(w, 1e-12)) + rng.gumbel(size=n), -np.inf)
        chosen = np.argpartition(-key, k - 1)[:k] if k > 0 else np.empty(0, dtype=np.int64)
        codes[chosen] = names.index(name)
        free[chosen] = False
    codes[free] = names.index(_FIB)  # fibroblasts fill the rest
    fields = {
        "d_tumour": d_tumour,
        "inside": inside,
        "border": border,
        "nest_centres": centres,
        "follicle_centres": np.array(foll_centres),
        "follicle_radius": r_foll,
    }
    return codes, fields


def _neighbour_mean(xy: np.ndarray, radius: float) -> sp.csr_matrix:
    """Row-normalised adjacency of cells within ``radius`` µm (no self-loops; isolated cells get an empty row)."""
    from scipy.spatial import cKDTree

    pairs = cKDTree(xy).query_pairs(radius, output_type="ndarray")
    n = xy.shape[0]
    rows = np.concatenate([pairs[:, 0], pairs[:, 1]])
    cols = np.concatenate([pairs[:, 1], pairs[:, 0]])
    adj = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
    deg = np.asarray(adj.sum(axis=1)).ravel()
    return sp.diags(np.divide(1.0, deg, out=np.zeros(n), where=deg > 0)) @ adj


def _gene_profiles(rng: np.random.Generator, n_genes: int) -> tuple[list[str], np.ndarray, dict[str, np.ndarray]]:
    """Gene names, the (n_types, n_genes) mean-count matrix at size factor 1, and programme vectors."""
    names = list(TISSUE_TYPES)
    tidx = {t: i for i, t in enumerate(names)}
    named: list[str] = []
    for gene, _, _ in _GENE_TABLE:
        if gene not in named:
            named.append(gene)
    for prog in _PROGRAMMES.values():
        for gene, _ in prog:
            if gene not in named:
                named.append(gene)
    n_filler = max(0, n_genes - len(named))
    genes = named + [f"GENE_{i:04d}" for i in range(n_filler)]
    gidx = {g: i for i, g in enumerate(genes)}
    n_types, n_all = len(names), len(genes)

    # non-marker genes: log-normal base level, lineage- and type-level fold changes on a subset of genes
    base = np.exp(rng.normal(np.log(0.12), 1.1, size=n_all)).clip(0.005, 3.0)
    lineages = sorted({v[1] for v in TISSUE_TYPES.values()})
    lin_fc = rng.normal(0, 0.7, size=(len(lineages), n_all)) * (rng.random((len(lineages), n_all)) < 0.15)
    typ_fc = rng.normal(0, 0.4, size=(n_types, n_all)) * (rng.random((n_types, n_all)) < 0.10)
    lin_of = np.array([lineages.index(TISSUE_TYPES[t][1]) for t in names])
    profile = base[None, :] * np.exp(lin_fc[lin_of] + typ_fc)

    # named genes: their table levels where listed, ambient level (3 % of the top level) elsewhere
    levels = np.zeros((n_types, n_all))
    for gene, level, types in _GENE_TABLE:
        j = gidx[gene]
        for t in types:
            levels[tidx[t], j] = max(levels[tidx[t], j], level)
    listed = np.zeros(n_all, dtype=bool)
    listed[[gidx[g] for g, _, _ in _GENE_TABLE]] = True
    ambient = 0.01 + 0.03 * levels.max(axis=0)
    profile[:, listed] = np.maximum(levels[:, listed], ambient[listed][None, :])
    prog_only = np.zeros(n_all, dtype=bool)
    prog_only[[gidx[g] for p in _PROGRAMMES.values() for g, _ in p]] = True
    prog_only &= ~listed
    profile[:, prog_only] = 0.02
    programmes = {}
    for key, prog in _PROGRAMMES.items():
        vec = np.zeros(n_all)
        for gene, level in prog:
            vec[gidx[gene]] = level
        programmes[key] = vec
    return genes, profile, programmes


def _rna_counts(
    rng: np.random.Generator,
    profile: np.ndarray,
    states: list[tuple[np.ndarray, np.ndarray]],
    codes: np.ndarray,
    size: np.ndarray,
    neigh: sp.csr_matrix,
    contamination: float,
    chunk: int = 20000,
) -> sp.csr_matrix:
    """Gamma-Poisson counts, generated in blocks of ``chunk`` cells so memory stays O(chunk x genes)."""
    n, n_genes = codes.size, profile.shape[1]
    phi = rng.uniform(0.1, 0.8, size=n_genes)  # gene-specific overdispersion: var = mu + phi mu^2

    def expected(idx: np.ndarray) -> np.ndarray:
        mu = profile[codes[idx]]
        for flag, vec in states:
            mu[flag[idx]] += vec[None, :]
        mu *= size[idx, None]
        return mu

    blocks = []
    for start in range(0, n, chunk):
        idx = np.arange(start, min(n, start + chunk))
        mu = expected(idx)
        if contamination > 0:
            rows = neigh[idx]
            cols = np.unique(rows.indices)
            mu = (1.0 - contamination) * mu + contamination * (rows[:, cols] @ expected(cols))
        lam = mu * rng.gamma(1.0 / phi, phi, size=mu.shape)
        blocks.append(sp.csr_matrix(rng.poisson(lam).astype(np.float32)))
    return sp.vstack(blocks, format="csr") if len(blocks) > 1 else blocks[0]


def synthetic_tissue(
    n_cells: int = 5000,
    seed: int | None = 0,
    *,
    n_genes: int = 800,
    library_size_sd: float = 0.5,
    protein_spillover: float = 0.2,
    rna_contamination: float = 0.05,
) -> MuData:
    """Generate a realistic tumour section of ``n_cells`` cells with 12 known types, states and spatial structure.

    Parameters
    ----------
    n_cells
        Number of cells (at least 100). The section is square, with about 150 µm² per cell.
    seed
        Seed of the random generator; the same seed gives the same data.
    n_genes
        Number of genes (the ~230 named genes are always present; filler genes ``GENE_0000`` ... make up the
        rest).
    library_size_sd
        Standard deviation of the log-normal per-cell library size factor.
    protein_spillover
        Fraction of the mean true signal of the neighbours within 15 µm added to each cell's protein intensities.
    rna_contamination
        Fraction of each cell's expected counts that comes from its neighbours' profiles (transcript
        mis-assignment).

    Returns
    -------
    MuData with

    - ``mod['rna']``: ``X`` raw counts (CSR float32, ``n_cells x n_genes``), gamma-Poisson (negative binomial)
      with gene-specific overdispersion in [0.1, 0.8], ``var = mu + phi * mu**2``;
    - ``mod['protein']``: ``X`` intensities (dense float32, ``n_cells x 28``), real channel names;
    - ``obsm['spatial']`` (MuData and modalities): (n_cells, 2) float64 µm;
    - ``obs['true_cell_type']`` (categorical), ``obs['true_cycling']``, ``obs['true_interferon']``,
      ``obs['true_hypoxia']`` (bool), ``obs['true_size_factor']`` (float);
    - ``uns['markers']``: the marker reference a user would pass (genes and proteins per type);
    - ``uns['truth']``: planted facts: ``attraction`` and ``avoidance`` (``{"type_a": [...], "type_b": [...]}``),
      type fractions, section size, nest and follicle centres, the genes of each state programme.

    Examples
    --------
    >>> from spatialmultiomics.datasets import synthetic_tissue
    >>> mdata = synthetic_tissue(2000, seed=1)
    >>> mdata.obs["true_cell_type"].nunique()
    12
    """
    import anndata as ad

    from spatialmultiomics._mudata import make_mudata

    n_cells = check_positive_int(n_cells, name="n_cells", minimum=100)
    n_genes = check_positive_int(n_genes, name="n_genes", minimum=1)
    library_size_sd = check_positive(library_size_sd, name="library_size_sd", allow_zero=True)
    protein_spillover = check_positive(protein_spillover, name="protein_spillover", allow_zero=True)
    rna_contamination = check_positive(rna_contamination, name="rna_contamination", allow_zero=True)
    rng = check_random_state(seed)
    names = list(TISSUE_TYPES)
    n_types = len(names)

    counts_per_type = _type_counts(n_cells)
    side = float(np.sqrt(n_cells * _AREA_PER_CELL_UM2))
    xy = _positions(n_cells, side, rng)
    codes, fields = _layout(xy, side, counts_per_type, rng)
    neigh = _neighbour_mean(xy, _SPILL_RADIUS_UM)

    # cell states
    p_cyc = np.array([_CYCLING.get(t, _CYCLING_DEFAULT) for t in names])[codes]
    cycling = rng.random(n_cells) < p_cyc
    border_idx = np.flatnonzero(np.abs(fields["d_tumour"]) < 15.0)
    ifn_centre = xy[rng.choice(border_idx)] if border_idx.size else xy[rng.integers(n_cells)]
    d_ifn = np.linalg.norm(xy - ifn_centre, axis=1)
    p_ifn = 0.05 + 0.7 / (1.0 + np.exp(np.clip((d_ifn - 0.25 * side) / 15.0, -50, 50)))
    interferon = rng.random(n_cells) < p_ifn
    is_epi = codes == names.index(_EPI)
    p_hyp = np.where(fields["d_tumour"] < -40.0, 0.8, 0.1) * is_epi
    hypoxia = rng.random(n_cells) < p_hyp
    stress = rng.random(n_cells) < 0.15

    # RNA: expected counts, neighbour contamination, gamma-Poisson noise
    genes, profile, programmes = _gene_profiles(rng, n_genes)
    lib_type = np.array([TISSUE_TYPES[t][2] for t in names])
    size = lib_type[codes] * np.exp(rng.normal(-0.5 * library_size_sd**2, library_size_sd, size=n_cells))
    states = ((cycling, "cycling"), (interferon, "interferon"), (hypoxia, "hypoxia"), (stress, "stress"))
    X_rna = _rna_counts(
        rng,
        profile,
        [(flag, programmes[key]) for flag, key in states],
        codes,
        size,
        neigh,
        rna_contamination,
    )

    # proteins: true signal with cell-to-cell variation, spill-over, staining, background and noise
    protein_names = [p for p, _ in _PROTEIN_TABLE]
    level = np.zeros((n_types, len(protein_names)))
    for j, (_, spec) in enumerate(_PROTEIN_TABLE):
        for value, types in spec:
            for t in types:
                level[names.index(t), j] = max(level[names.index(t), j], value)
    true = level[codes] * np.exp(rng.normal(-0.125, 0.5, size=(n_cells, len(protein_names))))
    pj = {p: j for j, p in enumerate(protein_names)}
    true[:, pj["Ki67"]] += 30.0 * cycling * np.exp(rng.normal(0, 0.3, size=n_cells))
    ifn_targets = interferon & np.isin(codes, [names.index(_EPI), names.index(_MAC)])
    true[:, pj["PD-L1"]] += 15.0 * ifn_targets
    true[:, pj["HLA-DR"]] += 8.0 * (interferon & is_epi)
    is_cd8 = codes == names.index(_CD8)
    true[:, pj["PD-1"]] += 8.0 * is_cd8 * fields["border"]
    observed = true + protein_spillover * (neigh @ true)
    observed *= np.exp(rng.normal(0.0, 0.3, size=n_cells))[:, None]  # staining / cell size
    background = rng.uniform(1.0, 6.0, size=len(protein_names))
    observed += background[None, :] + rng.normal(0.0, 1.5, size=observed.shape)
    X_prot = np.maximum(observed, 0.0).astype(np.float32)

    obs_names = pd.Index([f"cell_{i:04d}" for i in range(n_cells)])
    mods = {}
    for name, X, var_names in ((Keys.RNA, X_rna, genes), (Keys.PROTEIN, X_prot, protein_names)):
        adata = ad.AnnData(X, obs=pd.DataFrame(index=obs_names.copy()), var=pd.DataFrame(index=pd.Index(var_names)))
        adata.obsm[Keys.SPATIAL] = xy.copy()
        adata.uns[Keys.PROVENANCE] = {
            "platform": "synthetic",
            "reader": "spatialmultiomics.datasets.synthetic_tissue",
            "pixel_size_um": 1.0,
            "kind": "counts" if name == Keys.RNA else "intensity",
        }
        mods[name] = adata
    mdata = make_mudata(mods)
    mdata.obsm[Keys.SPATIAL] = xy
    mdata.obs["true_cell_type"] = pd.Categorical.from_codes(codes, categories=names)
    mdata.obs["true_cycling"] = cycling
    mdata.obs["true_interferon"] = interferon
    mdata.obs["true_hypoxia"] = hypoxia
    mdata.obs["true_size_factor"] = size
    mdata.uns["markers"] = {t: {k: list(v) for k, v in m.items()} for t, m in TISSUE_MARKERS.items()}
    truth: dict[str, Any] = {
        "generator": "synthetic_tissue",
        "seed": int(seed) if isinstance(seed, int | np.integer) else str(seed),
        "section_um": [side, side],
        "type_fractions": {t: float(c / n_cells) for t, c in zip(names, counts_per_type, strict=True)},
        "attraction": {"type_a": [a for a, _ in _ATTRACTION], "type_b": [b for _, b in _ATTRACTION]},
        "avoidance": {"type_a": [a for a, _ in _AVOIDANCE], "type_b": [b for _, b in _AVOIDANCE]},
        "nest_centres_um": fields["nest_centres"],
        "follicle_centres_um": fields["follicle_centres"],
        "follicle_radius_um": fields["follicle_radius"],
        "programmes": {k: [g for g, _ in v] for k, v in _PROGRAMMES.items()},
        "protein_spillover": protein_spillover,
        "rna_contamination": rna_contamination,
    }
    mdata.uns["truth"] = truth
    return mdata
