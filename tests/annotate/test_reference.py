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
        assert len(ref.get(t, "rna")) >= 3, t
        assert len(ref.get(t, "protein")) >= 1, t


def test_reference_proteins_find_common_panel_spellings():
    ref = builtin_markers("immune_tme")
    panel = ["Pan-Keratin", "E-Cadherin", "alpha-SMA", "CD3e", "CD45", "HLADR", "CD8a", "CD20", "CD68", "FoxP3"]
    found = match_markers(ref, {"protein": panel})
    assert found["Epithelial"]["protein"].tolist() == [0, 1]
    assert found["CD8 T cells"]["protein"].tolist() == [3, 6]
    assert found["Tregs"]["protein"].tolist() == [3, 9]
    assert found["Smooth muscle"]["protein"].tolist() == [2]


def test_unknown_reference_name():
    with pytest.raises(InputError, match="unknown built-in marker reference 'mouse_brain'"):
        builtin_markers("mouse_brain")
