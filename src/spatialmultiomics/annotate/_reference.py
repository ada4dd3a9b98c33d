"""Built-in marker references.

``immune_tme`` (the default): 18 cell types of solid tissues and the tumour microenvironment, each with canonical
marker genes (for spatial transcriptomics panels) and marker proteins (channel names of common multiplexed imaging
panels). Gene markers follow PanglaoDB and CellMarker 2.0, cross-checked against the Human Protein Atlas single
cell type atlas; protein markers follow the antibody panels of published CODEX, MIBI-TOF and IMC studies of
tumours.

``lymphoid``: 17 cell types of secondary lymphoid organs (lymph node, tonsil, spleen) and tertiary lymphoid
structures. B cell states follow the human tonsil atlas [7]_ and the germinal-centre literature [8]_; T follicular
helper cells [9]_; the stromal types (follicular dendritic cells, fibroblastic reticular cells, high endothelial
venules, lymphatic endothelium) the human lymph node stromal atlas [10]_, the mouse lymph node stromal atlas [11]_
and the HEV literature ([12]_, [13]_; PNAd is the MECA-79 epitope [14]_).

Names are matched to the data case-insensitively and through protein/gene aliases (see
:mod:`spatialmultiomics.annotate._markers`), so ``CD3`` finds a ``CD3e`` channel and ``PanCK`` a
``Pan-Keratin`` one. Types with too few of their markers in the data are ignored. Combine or extend the
references with :func:`~spatialmultiomics.annotate.merge_markers` or ``load_markers(..., extend=True)``.

``immune_tme`` is a lineage hierarchy, the way immunologists gate: ``Immune cells`` (CD45) -> ``T cells`` (CD3) ->
``CD4 T cells`` (CD4, not CD8) -> ``Tregs`` (FOXP3, CD25) and ``CD8 T cells`` (CD8, not CD4); ``NK cells`` (CD56 ...,
not CD3), ``B cells``; ``Myeloid cells`` (any of CD11b, CD33 or a myeloid subtype) -> macrophages, monocytes,
dendritic cells, pDCs, neutrophils, mast cells; ``Epithelial`` (not CD45; carcinoma cells too), ``Stromal cells``
(not CD45) -> fibroblasts, smooth muscle, pericytes; ``Endothelial`` (not CD45) -> lymphatic endothelial; plasma
cells (CD45-dim) stand alone. The clustering annotation (``method='cluster'``) names each cluster at the finest
level the panel supports (no FOXP3 in the panel: ``CD4 T cells``; CD45 but no lineage marker: ``Immune cells``).
The flat methods use the types that are not groups, each with the markers of its ancestors (so ``Tregs`` are
scored on CD3, CD4, FOXP3 and CD25, as before); they have no generic "T cells" type.

References
----------
.. [1] Franzén O., Gan L.-M., Björkegren J.L.M. (2019). PanglaoDB: a web server for exploration of mouse and
   human single-cell RNA sequencing data. Database, baz046.
.. [2] Hu C. et al. (2023). CellMarker 2.0: an updated database of manually curated cell markers in human/mouse
   and web tools based on scRNA-seq data. Nucleic Acids Research 51, D870-D876.
.. [3] Karlsson M. et al. (2021). A single-cell type transcriptomics map of human tissues. Science Advances 7,
   eabh2169.
.. [4] Schürch C.M. et al. (2020). Coordinated cellular neighborhoods orchestrate antitumoral immunity at the
   colorectal cancer invasive front. Cell 182, 1341-1359 (CODEX panel).
.. [5] Keren L. et al. (2018). A structured tumor-immune microenvironment in triple negative breast cancer
   revealed by multiplexed ion beam imaging. Cell 174, 1373-1387 (MIBI-TOF panel).
.. [6] Jackson H.W. et al. (2020). The single-cell pathology landscape of breast cancer. Nature 578, 615-620
   (IMC panel).
.. [7] Massoni-Badosa R. et al. (2024). An atlas of cells in the human tonsil. Immunity 57, 379-399.
.. [8] Victora G.D., Nussenzweig M.C. (2022). Germinal centers. Annual Review of Immunology 40, 413-442.
.. [9] Crotty S. (2014). T follicular helper cell differentiation, function, and roles in disease. Immunity 41,
   529-542.
.. [10] Abe Y. et al. (2022). A single-cell atlas of non-haematopoietic cells in human lymph nodes and lymphoma
   reveals a landscape of stromal remodelling. Nature Cell Biology 24, 565-578.
.. [11] Rodda L.B. et al. (2018). Single-cell RNA sequencing of lymph node stromal cells reveals
   niche-associated heterogeneity. Immunity 48, 1014-1028.
.. [12] Girard J.-P., Moussion C., Förster R. (2012). HEVs, lymphatics and homeostatic immune cell trafficking in
   lymph nodes. Nature Reviews Immunology 12, 762-773.
.. [13] Veerman K. et al. (2019). Single-cell analysis reveals heterogeneity of high endothelial venules and
   different regulation of genes controlling lymphocyte entry to lymph nodes. Cell Reports 26, 3116-3131.
.. [14] Streeter P.R., Rouse B.T., Butcher E.C. (1988). Immunohistologic and functional characterization of a
   vascular addressin involved in lymphocyte homing into peripheral lymph nodes. Journal of Cell Biology 107,
   1853-1862.
"""

from __future__ import annotations

from typing import Any

from spatialmultiomics._errors import InputError
from spatialmultiomics.annotate._markers import MarkerSet

__all__ = ["BUILTIN_REFERENCES", "DEFAULT_REFERENCE", "builtin_markers"]

_IMMUNE_TME: dict[str, dict[str, Any]] = {
    # lineage groups: valid names for clusters the panel cannot resolve further, not final types of flat methods
    "Immune cells": {"genes": ["PTPRC"], "proteins": ["CD45"], "group": True},
    "T cells": {"genes": ["CD3E", "CD3D", "CD3G"], "proteins": ["CD3"], "parent": "Immune cells", "group": True},
    "CD4 T cells": {
        "genes": ["CD4", "CD40LG"],
        "proteins": ["CD4"],
        "negative": {"genes": ["CD8A", "CD8B"], "proteins": ["CD8"]},
        "parent": "T cells",
    },
    "Tregs": {
        "genes": ["FOXP3", "IL2RA", "CTLA4", "TNFRSF18", "IKZF2"],
        "proteins": ["FOXP3", "CD25"],
        "parent": "CD4 T cells",
    },
    "CD8 T cells": {
        "genes": ["CD8A", "CD8B"],
        "proteins": ["CD8"],
        "negative": {"proteins": ["CD4"]},
        "parent": "T cells",
    },
    "NK cells": {
        "genes": ["NCAM1", "KLRD1", "KLRF1", "NKG7", "GNLY", "PRF1"],
        "proteins": ["CD56", "CD16", "NKp46", "CD57"],
        "negative": {"genes": ["CD3E", "CD3D"], "proteins": ["CD3"]},
        "parent": "Immune cells",
    },
    "B cells": {
        "genes": ["MS4A1", "CD19", "CD79A", "CD79B", "PAX5", "BANK1"],
        "proteins": ["CD20", "CD19", "CD79a", "PAX5"],
        "negative": {"proteins": ["CD3"]},
        "parent": "Immune cells",
    },
    "Myeloid cells": {
        "genes": ["ITGAM", "CD33", "LYZ"],
        "proteins": ["CD11b", "CD33"],
        "negative": {"proteins": ["CD3"]},
        "parent": "Immune cells",
        "group": True,
        "match": "any",
    },
    "Macrophages": {
        "genes": ["CD68", "CD163", "CSF1R", "C1QA", "C1QB", "APOE", "MRC1"],
        "proteins": ["CD68", "CD163", "CD206"],
        "parent": "Myeloid cells",
    },
    "Monocytes": {"genes": ["CD14", "FCN1", "VCAN", "S100A12"], "proteins": ["CD14"], "parent": "Myeloid cells"},
    "Dendritic cells": {
        "genes": ["ITGAX", "CD1C", "FCER1A", "CLEC10A", "CLEC9A", "XCR1", "LAMP3"],
        "proteins": ["CD11c", "CD1c", "HLA-DR"],
        # CD11c and HLA-DR are on monocytes too; CD14 tells them apart
        "negative": {"genes": ["CD14"], "proteins": ["CD14"]},
        "parent": "Myeloid cells",
    },
    "pDCs": {
        "genes": ["LILRA4", "CLEC4C", "IL3RA", "IRF7", "TCF4"],
        "proteins": ["CD123", "CD303"],
        "parent": "Myeloid cells",
    },
    "Neutrophils": {
        "genes": ["S100A8", "S100A9", "CSF3R", "FCGR3B", "CXCR2", "CEACAM8"],
        "proteins": ["CD66b", "MPO", "CD15", "ELANE"],
        "parent": "Myeloid cells",
    },
    "Mast cells": {
        "genes": ["TPSAB1", "TPSB2", "CPA3", "KIT", "MS4A2", "HDC"],
        "proteins": ["Tryptase", "CD117"],
        "parent": "Myeloid cells",
    },
    # plasma cells are CD45-dim and CD20-negative: a lineage of their own here, not gated through CD45
    "Plasma cells": {
        "genes": ["JCHAIN", "MZB1", "IGKC", "XBP1", "SDC1", "PRDM1"],
        "proteins": ["CD138", "CD38"],
        "negative": {"proteins": ["PanCK", "E-cadherin", "CD3"]},
    },
    "Epithelial": {
        "genes": ["EPCAM", "KRT8", "KRT18", "KRT19", "CDH1", "KRT7"],
        "proteins": ["PanCK", "E-cadherin", "EpCAM"],
        "negative": {"genes": ["PTPRC"], "proteins": ["CD45"]},
    },
    "Stromal cells": {
        "genes": ["COL1A1", "COL1A2", "COL3A1", "DCN"],
        "proteins": ["Vimentin", "aSMA"],
        "negative": {"genes": ["PTPRC"], "proteins": ["CD45"]},
        "group": True,
        "match": "any",
    },
    "Fibroblasts": {
        "genes": ["COL1A1", "COL1A2", "COL3A1", "DCN", "LUM", "PDGFRA"],
        "proteins": ["FAP", "Podoplanin", "PDGFRB", "Collagen I"],
        "parent": "Stromal cells",
    },
    "Smooth muscle": {
        "genes": ["ACTA2", "MYH11", "DES", "CNN1", "TAGLN", "ACTG2"],
        "proteins": ["aSMA", "Desmin", "SMMHC"],
        "parent": "Stromal cells",
    },
    "Pericytes": {
        "genes": ["RGS5", "PDGFRB", "KCNJ8", "NOTCH3", "MCAM"],
        "proteins": ["CD146", "PDGFRB"],
        "parent": "Stromal cells",
    },
    "Endothelial": {
        "genes": ["PECAM1", "VWF", "CDH5", "KDR", "CLDN5", "EMCN"],
        "proteins": ["CD31", "CD34", "vWF"],
        # CD31 (PECAM) is on monocytes, neutrophils, platelets and naive T cells too: no leukocyte lineage marker
        "negative": {"genes": ["PTPRC"], "proteins": ["CD45", "CD3", "CD14", "CD11b", "CD19", "CD20"]},
    },
    "Lymphatic endothelial": {
        "genes": ["PROX1", "LYVE1", "PDPN", "CCL21", "TFF3"],
        "proteins": ["LYVE1", "PROX1", "Podoplanin"],
        "parent": "Endothelial",
    },
}

_LYMPHOID: dict[str, dict[str, list[str]]] = {
    "Germinal centre B cells": {
        "genes": ["BCL6", "AICDA", "RGS13", "MEF2B", "LMO2", "S1PR2", "SERPINA9", "MME"],
        "proteins": ["BCL6", "CD10", "CD20"],
    },
    "Naive B cells": {
        "genes": ["MS4A1", "CD19", "IGHD", "FCER2", "TCL1A", "IL4R", "CD79A"],
        "proteins": ["CD20", "CD19", "IgD", "CD23"],
    },
    "Memory B cells": {"genes": ["MS4A1", "CD19", "CD27", "TNFRSF13B", "AIM2"], "proteins": ["CD20", "CD27"]},
    "Plasma cells": {
        "genes": ["JCHAIN", "MZB1", "XBP1", "PRDM1", "SDC1", "IGHG1"],
        "proteins": ["CD138", "CD38", "IRF4"],
    },
    "T follicular helper cells": {
        "genes": ["CXCR5", "PDCD1", "ICOS", "CXCL13", "BCL6", "MAF", "TOX2", "CD4"],
        "proteins": ["CD3", "CD4", "PD-1", "CXCR5", "ICOS"],
    },
    "CD4 T cells": {
        "genes": ["CD3E", "CD3D", "CD4", "CCR7", "SELL", "TCF7", "LEF1", "IL7R"],
        "proteins": ["CD3", "CD4", "CCR7", "CD62L"],
    },
    "CD8 T cells": {"genes": ["CD3E", "CD3D", "CD8A", "CD8B", "GZMK", "CCL5"], "proteins": ["CD3", "CD8"]},
    "Tregs": {
        "genes": ["CD3E", "FOXP3", "IL2RA", "CTLA4", "TNFRSF18", "IKZF2"],
        "proteins": ["CD3", "CD4", "FOXP3", "CD25"],
    },
    "NK cells": {"genes": ["NCAM1", "KLRD1", "KLRF1", "NKG7", "GNLY", "PRF1"], "proteins": ["CD56", "CD16", "NKp46"]},
    "Follicular dendritic cells": {
        "genes": ["CR2", "FDCSP", "CLU", "CXCL13", "FCAMR", "CR1", "MFGE8", "VCAM1"],
        "proteins": ["CD21", "CD35", "CD23"],
    },
    "Fibroblastic reticular cells": {
        "genes": ["CCL19", "CCL21", "PDPN", "PDGFRB", "COL3A1", "LUM"],
        "proteins": ["Podoplanin", "PDGFRB"],
    },
    "HEV endothelial cells": {
        "genes": ["CHST4", "FUT7", "ACKR1", "SELP", "GLYCAM1", "PECAM1", "CDH5"],
        "proteins": ["PNAd", "CD31", "CD34"],
    },
    "Lymphatic endothelial": {
        "genes": ["PROX1", "LYVE1", "PDPN", "TFF3", "CCL21"],
        "proteins": ["LYVE1", "PROX1", "Podoplanin"],
    },
    "Macrophages": {
        "genes": ["CD68", "CD163", "C1QA", "C1QB", "APOE", "MERTK", "CSF1R"],
        "proteins": ["CD68", "CD163"],
    },
    "Dendritic cells": {
        "genes": ["ITGAX", "CD1C", "FCER1A", "CLEC10A", "CLEC9A", "XCR1", "LAMP3"],
        "proteins": ["CD11c", "HLA-DR", "CD1c"],
    },
    "pDCs": {"genes": ["LILRA4", "CLEC4C", "IL3RA", "IRF7", "TCF4"], "proteins": ["CD123", "CD303"]},
}

#: the reference used when none is given
DEFAULT_REFERENCE = "immune_tme"

#: name -> marker dict of the built-in references
BUILTIN_REFERENCES: dict[str, dict[str, dict[str, Any]]] = {"immune_tme": _IMMUNE_TME, "lymphoid": _LYMPHOID}


def builtin_markers(name: str = DEFAULT_REFERENCE) -> MarkerSet:
    """Return a built-in marker reference as a :class:`~spatialmultiomics.annotate.MarkerSet`.

    Parameters
    ----------
    name
        ``'immune_tme'`` (default): 18 common tissue and tumour-microenvironment types (T cell subsets, B,
        plasma, NK, macrophages, monocytes, dendritic cells, pDCs, neutrophils, mast cells, epithelial/tumour,
        fibroblasts, endothelial and lymphatic endothelial cells, smooth muscle, pericytes).
        ``'lymphoid'``: 17 types of lymph nodes, tonsils, spleen and tertiary lymphoid structures (germinal centre,
        naive and memory B cells, plasma cells, T follicular helper, CD4, CD8 and regulatory T cells, NK cells,
        follicular dendritic cells, fibroblastic reticular cells, high endothelial venule and lymphatic
        endothelial cells, macrophages, dendritic cells, pDCs). Both give gene and protein markers; sources in
        the module notes and ``docs/markers.md``.

    Examples
    --------
    >>> from spatialmultiomics.annotate import builtin_markers
    >>> builtin_markers("lymphoid").get("Follicular dendritic cells", "protein")
    ('CD21', 'CD35', 'CD23')
    """
    key = str(name).lower() if isinstance(name, str) else name
    if key not in BUILTIN_REFERENCES:
        msg = f"unknown built-in marker reference {name!r}; available: {sorted(BUILTIN_REFERENCES)}."
        raise InputError(msg)
    return MarkerSet.from_dict(BUILTIN_REFERENCES[key], name=key)
