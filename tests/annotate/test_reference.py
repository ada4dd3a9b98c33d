import pytest

from spatialmultiomics._errors import InputError
from spatialmultiomics.annotate import builtin_markers
from spatialmultiomics.annotate._markers import match_markers


def test_immune_tme_reference_content():
    ref = builtin_markers()
    assert ref.name == "immune_tme"
    assert len(ref) >= 15
    needed = {
        "CD4 T cells", "CD8 T cells", "Tregs", "B cells", "Plasma cells", "NK cells", "Macrophages", "Monocytes",
        "Dendritic cells", "Neutrophils", "Mast cells", "Epithelial", "Fibroblasts", "Endothelial", "Smooth muscle",
    }  # fmt: skip
    assert needed <= set(ref.types)
    for t in ref.types:
        assert len(ref.get(t, "protein")) >= 1, t
    # the final types of the flat methods carry their lineage's markers: at least 3 genes each
    flat = ref.flat()
    assert needed <= set(flat.types)
    for t in flat.types:
        assert len(flat.get(t, "rna")) >= 3, t
    # the lineage hierarchy an immunologist gates by
    assert ref.ancestors("Tregs") == ["CD4 T cells", "T cells", "Immune cells"]
    assert ref.ancestors("Macrophages") == ["Myeloid cells", "Immune cells"]
    assert ref.ancestors("Smooth muscle") == ["Stromal cells"]
    assert ref.get_negative("NK cells", "protein") == ("CD3",)
    assert "CD45" in ref.get_negative("Epithelial", "protein")
    assert set(ref.group) == {"Immune cells", "T cells", "Myeloid cells", "Stromal cells"}


def test_reference_proteins_find_common_panel_spellings():
    ref = builtin_markers("immune_tme")
    panel = ["Pan-Keratin", "E-Cadherin", "alpha-SMA", "CD3e", "CD45", "HLADR", "CD8a", "CD20", "CD68", "FoxP3"]
    found = match_markers(ref, {"protein": panel})
    assert found["Epithelial"]["protein"].tolist() == [0, 1]
    assert found["T cells"]["protein"].tolist() == [3]
    assert found["Immune cells"]["protein"].tolist() == [4]
    assert found["CD8 T cells"]["protein"].tolist() == [6]
    assert found["Tregs"]["protein"].tolist() == [9]
    assert found["Smooth muscle"]["protein"].tolist() == [2]
    flat = match_markers(ref.flat(), {"protein": panel})
    assert flat["CD8 T cells"]["protein"].tolist() == [6, 3, 4]  # own marker, then T cells', then Immune cells'
    assert flat["Tregs"]["protein"].tolist() == [9, 3, 4]


def test_unknown_reference_name():
    with pytest.raises(InputError, match="unknown built-in marker reference 'mouse_brain'"):
        builtin_markers("mouse_brain")


def test_lymphoid_reference_loads_with_genes_and_proteins():
    ref = builtin_markers("lymphoid")
    assert ref.name == "lymphoid"
    needed = {
        "Germinal centre B cells", "Naive B cells", "Memory B cells", "Plasma cells", "T follicular helper cells",
        "Tregs", "Follicular dendritic cells", "Fibroblastic reticular cells", "HEV endothelial cells",
        "Lymphatic endothelial",
    }  # fmt: skip
    assert needed <= set(ref.types)
    for t in ref.types:
        assert len(ref.get(t, "rna")) >= 3, t
        assert len(ref.get(t, "protein")) >= 1, t
    assert "BCL6" in ref.get("Germinal centre B cells", "rna")
    assert {"CXCR5", "PD-1"} <= set(ref.get("T follicular helper cells", "protein"))
    assert {"CD21", "CD35"} <= set(ref.get("Follicular dendritic cells", "protein"))


def test_lymphoid_reference_finds_common_panel_spellings():
    ref = builtin_markers("lymphoid")
    panel = ["CD3e", "CD4", "PD1", "CD185", "BCL-6", "CD10", "CD20", "CR2", "CD35", "MECA-79", "CD31", "IgD", "Ki67"]
    found = match_markers(ref, {"protein": panel})
    names = {t: [panel[j] for j in found[t]["protein"]] for t in ref.types}
    assert names["T follicular helper cells"] == ["CD3e", "CD4", "PD1", "CD185"]
    assert names["Germinal centre B cells"] == ["BCL-6", "CD10", "CD20"]
    assert names["Follicular dendritic cells"] == ["CR2", "CD35"]
    assert names["HEV endothelial cells"] == ["MECA-79", "CD31"]
    assert names["Naive B cells"] == ["CD20", "IgD"]


def test_tme_reference_covers_cycif_neutrophil_and_nk_channels():
    ref = builtin_markers()
    found = match_markers(ref, {"protein": ["ELANE", "CD57", "NCAM", "CD16"]})
    assert found["Neutrophils"]["protein"].tolist() == [0]
    assert found["NK cells"]["protein"].tolist() == [2, 3, 1]
