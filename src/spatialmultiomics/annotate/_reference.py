"""Built-in marker references.

``immune_tme`` (the default): 18 cell types of solid tissues and the tumour microenvironment, each with canonical
marker genes (for spatial transcriptomics panels) and marker proteins (channel names of common multiplexed imaging
panels). Gene markers follow PanglaoDB and CellMarker 2.0, cross-checked against the Human Protein Atlas single
cell type atlas; protein markers follow the antibody panels of published CODEX, MIBI-TOF and IMC studies of
tumours. Names are matched to the data case-insensitively and through protein/gene aliases (see
:mod:`spatialmultiomics.annotate._markers`), so ``CD3`` finds a ``CD3e`` channel and ``PanCK`` a
``Pan-Keratin`` one. Types whose markers are absent from the data are ignored.

There is no generic "T cells" entry: CD4 T, CD8 T and regulatory T cells share CD3, and a generic type would
compete with all three. Epithelial covers carcinoma (tumour) cells.

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
"""

from __future__ import annotations

from spatialmultiomics._errors import InputError
from spatialmultiomics.annotate._markers import MarkerSet

__all__ = ["BUILTIN_REFERENCES", "builtin_markers"]

_IMMUNE_TME: dict[str, dict[str, list[str]]] = {
    "CD4 T cells": {"genes": ["CD3E", "CD3D", "CD4", "IL7R", "CCR7", "TCF7"], "proteins": ["CD3", "CD4"]},
    "CD8 T cells": {"genes": ["CD3E", "CD3D", "CD8A", "CD8B", "GZMK"], "proteins": ["CD3", "CD8"]},
    "Tregs": {
        "genes": ["CD3E", "FOXP3", "IL2RA", "CTLA4", "TNFRSF18", "IKZF2"],
        "proteins": ["CD3", "CD4", "FOXP3", "CD25"],
    },
    "NK cells": {"genes": ["NCAM1", "KLRD1", "KLRF1", "NKG7", "GNLY", "PRF1"], "proteins": ["CD56", "CD16", "NKp46"]},
    "B cells": {"genes": ["MS4A1", "CD19", "CD79A", "CD79B", "PAX5", "BANK1"], "proteins": ["CD20", "CD19"]},
    "Plasma cells": {"genes": ["JCHAIN", "MZB1", "IGKC", "XBP1", "SDC1", "PRDM1"], "proteins": ["CD138", "CD38"]},
    "Macrophages": {
        "genes": ["CD68", "CD163", "CSF1R", "C1QA", "C1QB", "APOE", "MRC1"],
        "proteins": ["CD68", "CD163", "CD206"],
    },
    "Monocytes": {"genes": ["CD14", "FCN1", "VCAN", "S100A12", "LYZ"], "proteins": ["CD14", "CD11b"]},
    "Dendritic cells": {
        "genes": ["ITGAX", "CD1C", "FCER1A", "CLEC10A", "CLEC9A", "XCR1", "LAMP3"],
        "proteins": ["CD11c", "CD1c", "HLA-DR"],
    },
    "pDCs": {"genes": ["LILRA4", "CLEC4C", "IL3RA", "IRF7", "TCF4"], "proteins": ["CD123", "CD303"]},
    "Neutrophils": {
        "genes": ["S100A8", "S100A9", "CSF3R", "FCGR3B", "CXCR2", "CEACAM8"],
        "proteins": ["CD66b", "MPO", "CD15"],
    },
    "Mast cells": {"genes": ["TPSAB1", "TPSB2", "CPA3", "KIT", "MS4A2", "HDC"], "proteins": ["Tryptase", "CD117"]},
    "Epithelial": {
        "genes": ["EPCAM", "KRT8", "KRT18", "KRT19", "CDH1", "KRT7"],
        "proteins": ["PanCK", "E-cadherin", "EpCAM"],
    },
    "Fibroblasts": {
        "genes": ["COL1A1", "COL1A2", "COL3A1", "DCN", "LUM", "PDGFRA"],
        "proteins": ["Vimentin", "aSMA", "FAP", "Podoplanin", "PDGFRB"],
    },
    "Endothelial": {"genes": ["PECAM1", "VWF", "CDH5", "KDR", "CLDN5", "EMCN"], "proteins": ["CD31", "CD34", "vWF"]},
    "Lymphatic endothelial": {"genes": ["PROX1", "LYVE1", "PDPN", "CCL21", "TFF3"], "proteins": ["LYVE1", "PROX1"]},
    "Smooth muscle": {
        "genes": ["ACTA2", "MYH11", "DES", "CNN1", "TAGLN", "ACTG2"],
        "proteins": ["aSMA", "Desmin", "SMMHC"],
    },
    "Pericytes": {"genes": ["RGS5", "PDGFRB", "KCNJ8", "NOTCH3", "MCAM"], "proteins": ["CD146", "PDGFRB"]},
}

#: name -> marker dict of the built-in references
BUILTIN_REFERENCES: dict[str, dict[str, dict[str, list[str]]]] = {"immune_tme": _IMMUNE_TME}


def builtin_markers(name: str = "immune_tme") -> MarkerSet:
    """Return a built-in marker reference as a :class:`~spatialmultiomics.annotate.MarkerSet`.

    Parameters
    ----------
    name
        ``'immune_tme'``: 18 common tissue and tumour-microenvironment types (T cell subsets, B, plasma, NK,
        macrophages, monocytes, dendritic cells, pDCs, neutrophils, mast cells, epithelial/tumour, fibroblasts,
        endothelial and lymphatic endothelial cells, smooth muscle, pericytes) with gene and protein markers.
    """
    key = str(name).lower() if isinstance(name, str) else name
    if key not in BUILTIN_REFERENCES:
        msg = f"unknown built-in marker reference {name!r}; available: {sorted(BUILTIN_REFERENCES)}."
        raise InputError(msg)
    return MarkerSet.from_dict(BUILTIN_REFERENCES[key], name=key)
