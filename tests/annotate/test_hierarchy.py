"""Marker hierarchies: negative markers, parents, groups; files, flattening, merging, matching."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spatialmultiomics._errors import InputError
from spatialmultiomics.annotate import MarkerSet, builtin_markers, load_markers, merge_markers
from spatialmultiomics.annotate._markers import match_markers

TREE = {
    "Immune": {"proteins": ["CD45"], "genes": ["PTPRC"], "group": True},
    "T": {"proteins": ["CD3"], "parent": "Immune", "group": "yes"},
    "CD4 T": {"proteins": ["CD4"], "negative": {"proteins": ["CD8"], "genes": ["CD8A"]}, "parent": "T"},
    "NK": {"proteins": ["CD56"], "negative": ["CD3"], "parent": "Immune"},
    "Myeloid": {"proteins": ["CD11b", "CD33"], "parent": "Immune", "group": True, "match": "any"},
    "Macrophages": {"proteins": ["CD68"], "parent": "Myeloid"},
    "Epithelial": {"proteins": ["PanCK"], "not": {"proteins": ["CD45"]}},
}
GROUPS = {"Immune cells", "T cells", "Myeloid cells", "Stromal cells"}


def test_from_dict_reads_negatives_parents_and_groups():
    ms = MarkerSet.from_dict(TREE)
    assert ms.types == list(TREE)
    # structure keys are not modalities
    assert ms.markers["CD4 T"] == {"protein": ("CD4",)}
    assert ms.modalities == ["protein", "rna"]
    # negative as a dict: per modality
    assert ms.get_negative("CD4 T", "protein") == ("CD8",)
    assert ms.get_negative("CD4 T", "rna") == ("CD8A",)
    # negative as a list: every modality
    assert ms.get_negative("NK", "protein") == ("CD3",)
    assert ms.get_negative("NK", "rna") == ("CD3",)
    assert ms.get_negative("Epithelial", "protein") == ("CD45",)  # 'not' is an accepted spelling
    assert ms.get_negative("Immune", "protein") == ()
    assert dict(ms.parent) == {
        "T": "Immune",
        "CD4 T": "T",
        "NK": "Immune",
        "Myeloid": "Immune",
        "Macrophages": "Myeloid",
    }
    assert dict(ms.group) == {"Immune": "all", "T": "all", "Myeloid": "any"}
    assert ms.hierarchical
    assert ms.ancestors("CD4 T") == ["T", "Immune"]
    assert ms.ancestors("Macrophages") == ["Myeloid", "Immune"]
    assert ms.ancestors("Immune") == [] and ms.ancestors("Epithelial") == []
    assert not MarkerSet.from_dict({"A": {"proteins": ["X"]}}).hierarchical
    assert MarkerSet.from_dict({"A": {"proteins": ["X"], "negative": ["Y"]}}).hierarchical


@pytest.mark.parametrize(
    ("markers", "match"),
    [
        ({"A": {"proteins": ["X"], "parent": "B"}, "B": {"proteins": ["Y"], "parent": "A"}}, r"type '[AB]'.*cycle"),
        ({"A": {"proteins": ["X"], "parent": "A"}}, r"type 'A'.*cycle"),
        ({"A": {"proteins": ["X"], "match": "any"}}, r"type 'A' has match: any but is not a group"),
        ({"A": {"proteins": ["X"], "group": True, "match": "some"}}, r"type 'A' has match='some'"),
        ({"A": {"proteins": ["X"], "group": "maybe"}}, r"type 'A' has group='maybe'"),
        ({"A": {"negative": ["X"]}}, r"type 'A' has no markers"),
        ({"A": {"proteins": ["X"], "negative": {"lipids": ["Y"]}}}, r"unknown modality key 'lipids' of type 'A'"),
        ({"A": {"proteins": ["X"], "negative": 3}}, r"type 'A'"),
    ],
)
def test_structure_errors_name_the_type(markers, match):
    with pytest.raises(InputError, match=match):
        MarkerSet.from_dict(markers)


def test_constructor_checks_the_tree():
    with pytest.raises(InputError, match=r"type 'A'.*cycle"):
        MarkerSet({"A": {"protein": ("X",)}, "B": {"protein": ("Y",)}}, parent={"A": "B", "B": "A"})
    # a parent defined elsewhere is allowed in a partial reference (a file adding a subtype to a built-in
    # lineage) and refused in the reference finally used
    partial = MarkerSet({"A": {"protein": ("X",)}}, parent={"A": "C"})
    with pytest.raises(InputError, match=r"type 'A' names parent 'C'"):
        load_markers(partial)
    with pytest.raises(InputError, match=r"type 'A' names parent 'Nope'"):
        load_markers({"A": {"proteins": ["X"], "parent": "Nope"}})


# ---------------------------------------------------------------- the built-in hierarchy


def test_builtin_reference_is_a_tree():
    ref = builtin_markers()
    assert set(ref.group) == GROUPS
    assert ref.group["Myeloid cells"] == "any" and ref.group["Stromal cells"] == "any"
    assert ref.group["Immune cells"] == "all" and ref.group["T cells"] == "all"
    assert ref.ancestors("Tregs") == ["CD4 T cells", "T cells", "Immune cells"]
    assert ref.ancestors("Macrophages") == ["Myeloid cells", "Immune cells"]
    assert ref.ancestors("Smooth muscle") == ["Stromal cells"]
    assert ref.ancestors("Lymphatic endothelial") == ["Endothelial"]
    assert ref.ancestors("Plasma cells") == []  # CD45-dim: a lineage of its own
    assert ref.get_negative("NK cells", "protein") == ("CD3",)
    assert "CD45" in ref.get_negative("Epithelial", "protein")
    roots = {t for t in ref.types if t not in ref.parent}
    assert roots == {"Immune cells", "Plasma cells", "Epithelial", "Stromal cells", "Endothelial"}


def test_flat_drops_groups_and_inherits_all_but_any_group_markers():
    ref = builtin_markers()
    flat = ref.flat()
    assert flat.types == [t for t in ref.types if t not in GROUPS]
    assert not flat.hierarchical and dict(flat.group) == {} and dict(flat.parent) == {}
    tregs = flat.markers["Tregs"]
    # own markers first, then the ancestors' in order: CD4 T cells, T cells, Immune cells
    assert tregs["protein"] == ("FOXP3", "CD25", "CD4", "CD3", "CD45")
    assert {"FOXP3", "CD4", "CD3E", "PTPRC"} <= set(tregs["rna"])
    # Myeloid cells are a match-any group: macrophages need not be CD11b+ / CD33+, but are CD45+ (Immune cells)
    mac = flat.markers["Macrophages"]
    assert "CD45" in mac["protein"] and not {"CD11b", "CD33"} & set(mac["protein"])
    assert not {"ITGAM", "CD33", "LYZ"} & set(mac["rna"])
    # Stromal cells too: fibroblasts do not inherit vimentin / aSMA
    assert not {"Vimentin", "aSMA"} & set(flat.markers["Fibroblasts"]["protein"])
    # roots keep their own markers
    assert flat.markers["Epithelial"] == ref.markers["Epithelial"]
    # a reference without hierarchy is returned as is
    lym = builtin_markers("lymphoid")
    assert lym.flat() is lym


def test_flat_of_only_groups_is_an_error():
    ms = MarkerSet.from_dict({"A": {"proteins": ["X"], "group": True}})
    with pytest.raises(InputError, match="every type is a group"):
        ms.flat()


# ---------------------------------------------------------------- files


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_yaml_and_json_round_trip_keep_the_structure(tmp_path, suffix):
    ref = builtin_markers()
    path = ref.write(tmp_path / f"ref{suffix}")
    back = MarkerSet.read(path)
    assert back.to_dict() == ref.to_dict()
    assert back.types == ref.types
    assert dict(back.parent) == dict(ref.parent)
    assert dict(back.group) == dict(ref.group)
    assert {t: dict(v) for t, v in back.negative.items()} == {t: dict(v) for t, v in ref.negative.items()}
    if suffix == ".json":
        data = json.loads(path.read_text())
        assert data["Myeloid cells"]["group"] is True and data["Myeloid cells"]["match"] == "any"
        assert data["T cells"]["group"] is True and "match" not in data["T cells"]
        assert data["CD8 T cells"]["negative"] == {"proteins": ["CD4"]}
        assert data["Tregs"]["parent"] == "CD4 T cells"


def test_csv_long_form_with_sign_and_parent(tmp_path):
    path = tmp_path / "tree.csv"
    path.write_text(
        "cell_type,marker,modality,sign,parent\n"
        "Immune,CD45,protein,+,\n"
        "T,CD3,protein,+,Immune\n"
        "CD4 T,CD4,protein,+,T\n"
        "CD4 T,CD8,protein,-,T\n"
        "CD4 T,CD8A,gene,neg,T\n"
        "NK,CD56,protein,pos,Immune\n"
        "NK,CD3,protein,negative,Immune\n"
        "Epithelial,PanCK,protein,,\n"
    )
    ms = MarkerSet.read(path)
    assert ms.types == ["Immune", "T", "CD4 T", "NK", "Epithelial"]
    assert ms.get("CD4 T", "protein") == ("CD4",)
    assert ms.get_negative("CD4 T", "protein") == ("CD8",)
    assert ms.get_negative("CD4 T", "rna") == ("CD8A",)
    assert ms.get_negative("NK", "protein") == ("CD3",)
    assert ms.get("Epithelial", "protein") == ("PanCK",)  # empty sign: positive
    assert dict(ms.parent) == {"T": "Immune", "CD4 T": "T", "NK": "Immune"}
    # and back: write keeps sign and parent
    again = MarkerSet.read(ms.write(tmp_path / "again.csv"))
    assert again.to_dict() == ms.to_dict()
    bad = tmp_path / "bad.csv"
    bad.write_text("cell_type,marker,modality,sign\nA,X,protein,maybe\n")
    with pytest.raises(InputError, match="'maybe' for type 'A'"):
        MarkerSet.read(bad)


def test_csv_cannot_hold_groups(tmp_path):
    with pytest.raises(InputError, match="cannot say which types are groups"):
        builtin_markers().write(tmp_path / "ref.csv")


def test_csv_wide_form_with_negative_and_parent(tmp_path):
    path = tmp_path / "wide.csv"
    path.write_text('cell_type,genes,proteins,negative,parent\nImmune,PTPRC,CD45,,\nNK,"NCAM1;KLRD1",CD56,CD3,Immune\n')
    ms = MarkerSet.read(path)
    assert ms.get("NK", "rna") == ("NCAM1", "KLRD1")
    assert ms.get_negative("NK", "protein") == ("CD3",) and ms.get_negative("NK", "rna") == ("CD3",)
    assert dict(ms.parent) == {"NK": "Immune"}


# ---------------------------------------------------------------- merging


def test_merge_replace_keeps_the_structure_of_the_other_types():
    ref = builtin_markers()
    merged = merge_markers(ref, {"Tumour": {"proteins": ["SOX10"], "negative": ["CD45"]}})
    assert merged.types == [*ref.types, "Tumour"]
    assert dict(merged.parent) == dict(ref.parent)
    assert dict(merged.group) == dict(ref.group)
    assert merged.get_negative("CD8 T cells", "protein") == ("CD4",)
    assert merged.get_negative("Tumour", "protein") == ("CD45",)
    # a redefined root takes the later markers and negatives; the types under it keep it as their parent
    redo = merge_markers(ref, {"Endothelial": {"proteins": ["CD31", "CD34"], "negative": {"proteins": ["CD45"]}}})
    assert redo.types == ref.types
    assert redo.get("Endothelial", "protein") == ("CD31", "CD34")
    assert redo.get("Endothelial", "rna") == ()  # replaced, not joined
    assert redo.get_negative("Endothelial", "protein") == ("CD45",)
    assert redo.get_negative("Endothelial", "rna") == ()
    assert redo.parent["Lymphatic endothelial"] == "Endothelial"


@pytest.mark.parametrize(
    "extra",
    [
        {"Th17": {"proteins": ["IL17A"], "parent": "CD4 T cells"}},
        {"CD4 T cells": {"proteins": ["CD4", "CD40L"], "parent": "T cells", "negative": {"proteins": ["CD8"]}}},
    ],
)
def test_merge_accepts_parents_from_the_earlier_reference(extra):
    merged = merge_markers(builtin_markers(), extra)
    (t,) = extra
    assert merged.parent[t] == extra[t]["parent"]
    assert load_markers(extra, extend=True).parent[t] == extra[t]["parent"]


def test_merge_union_joins_markers_and_negatives_and_keeps_parents():
    ref = builtin_markers()
    merged = merge_markers(
        ref,
        {"CD4 T cells": {"proteins": ["CD40L"], "negative": {"proteins": ["CD56"]}}, "New": {"proteins": ["X"]}},
        how="union",
    )
    assert merged.get("CD4 T cells", "protein") == ("CD4", "CD40L")
    assert merged.get("CD4 T cells", "rna") == ref.get("CD4 T cells", "rna")
    assert merged.get_negative("CD4 T cells", "protein") == ("CD8", "CD56")
    assert merged.get_negative("CD4 T cells", "rna") == ("CD8A", "CD8B")
    assert dict(merged.parent) == dict(ref.parent)
    assert dict(merged.group) == dict(ref.group)
    assert merged.types[-1] == "New"


def test_load_markers_extend_keeps_the_builtin_tree():
    ref = load_markers({"Melanocytes": {"genes": ["PMEL", "MLANA"]}}, extend=True)
    assert ref.parent["Tregs"] == "CD4 T cells" and ref.group["Myeloid cells"] == "any"
    assert ref.types[-1] == "Melanocytes"


# ---------------------------------------------------------------- matching


@pytest.mark.parametrize(
    ("negative", "features", "expected"),
    [
        ("CD45", ["PanCK", "PTPRC"], ["PTPRC"]),
        ("PTPRC", ["CD45", "PanCK"], ["CD45"]),
        ("CD3", ["CD3e", "PanCK"], ["CD3e"]),
        ("aSMA", ["ACTA2", "PanCK"], ["ACTA2"]),
        ("CD4", ["CD45", "PanCK"], []),
    ],
)
def test_match_markers_finds_negative_markers_through_aliases(negative, features, expected):
    ms = MarkerSet.from_dict({"Epithelial": {"proteins": ["Pan-Keratin"], "negative": {"proteins": [negative]}}})
    neg = match_markers(ms, {"protein": features}, negative=True)["Epithelial"]["protein"]
    pos = match_markers(ms, {"protein": features})["Epithelial"]["protein"]
    assert [features[j] for j in neg] == expected
    assert [features[j] for j in pos] == ["PanCK"]  # the positives alone, through their alias too


def test_match_markers_negative_per_modality():
    ref = builtin_markers()
    found = match_markers(ref, {"rna": ["CD8A", "PTPRC", "CD3E"], "protein": ["CD8", "CD45"]}, negative=True)
    assert found["CD4 T cells"]["rna"].tolist() == [0]
    assert found["CD4 T cells"]["protein"].tolist() == [0]
    assert found["Epithelial"]["rna"].tolist() == [1]
    assert found["Epithelial"]["protein"].tolist() == [1]
    assert found["NK cells"]["rna"].tolist() == [2]  # CD3E
    assert found["Tregs"]["protein"].size == 0
    assert all(isinstance(v, np.ndarray) for v in found["Tregs"].values())
