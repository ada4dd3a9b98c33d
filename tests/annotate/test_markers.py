import json
from collections import defaultdict

import numpy as np
import pytest

from spatialmultiomics._errors import InputError
from spatialmultiomics.annotate import MarkerSet, builtin_markers, load_markers
from spatialmultiomics.annotate._markers import ALIASES, canonical_name, match_markers

SIMPLE = {
    "T cells": {"genes": ["CD3E", "CD2"], "proteins": ["CD3"]},
    "Epithelial": {"genes": ["EPCAM"], "proteins": ["PanCK", "E-cadherin"]},
}


def _match_one(marker, features, modality="protein"):
    ms = MarkerSet.from_dict({"T": {modality: [marker]}})
    idx = match_markers(ms, {modality: features})["T"][modality]
    return [features[j] for j in idx]


def test_from_dict_normalises_modality_keys_and_dedupes():
    ms = MarkerSet.from_dict({"A": {"rna": ["X", " Y ", "X"], "Protein": "P1; P2"}, "B": {"gene": ["Z"]}})
    assert ms.types == ["A", "B"]
    assert ms.get("A", "rna") == ("X", "Y")
    assert ms.get("A", "protein") == ("P1", "P2")
    assert ms.get("B", "rna") == ("Z",)
    assert ms.get("B", "protein") == ()
    assert ms.modalities == ["rna", "protein"]
    assert ms.to_dict() == {"A": {"genes": ["X", "Y"], "proteins": ["P1", "P2"]}, "B": {"genes": ["Z"]}}
    with pytest.raises(TypeError):
        ms.markers["C"] = {}


@pytest.mark.parametrize(
    ("marker", "feature"),
    [
        ("PanCK", "Pan-Keratin"),
        ("pan-cytokeratin", "PanCK"),
        ("KRT", "Pan-Cytokeratin"),
        ("aSMA", "ACTA2"),
        ("SMA", "alpha-SMA"),
        ("α-SMA", "aSMA"),
        ("CD3", "CD3e"),
        ("CD3E", "CD3"),
        ("E-cadherin", "ECAD"),
        ("CDH1", "E-Cadherin"),
        ("CD45", "PTPRC"),
        ("HLA-DR", "HLADR"),
        ("Ki67", "MKI67"),
        ("Ki-67", "Ki67"),
        ("cd68", "CD68"),
        ("Granzyme B", "GranzymeB"),
        ("PD-L1", "CD274"),
    ],
)
def test_aliases_and_case_insensitive_matching(marker, feature):
    assert _match_one(marker, ["DAPI", feature, "Other"]) == [feature]


def test_exact_name_beats_alias_and_duplicates_count_once():
    feats = ["KRT", "PanCK", "CD3e"]
    assert _match_one("PanCK", feats) == ["PanCK"]
    ms = MarkerSet.from_dict({"T": {"protein": ["CD3", "CD3E", "CD3e", "missing"]}})
    idx = match_markers(ms, {"protein": feats})["T"]["protein"]
    assert idx.tolist() == [2]


def test_unmatched_and_unrelated_names_do_not_match():
    assert _match_one("CD4", ["CD45", "CD40", "CD44"]) == []
    assert _match_one("CD8", ["CD8B"], modality="rna") == []


def test_alias_groups_are_disjoint():
    groups = defaultdict(set)
    for g, names in enumerate(ALIASES):
        for n in names:
            groups[canonical_name(n)].add(g)
    assert {c: gs for c, gs in groups.items() if len(gs) > 1} == {}
    assert canonical_name(" E-Cadherin ") == "ecadherin"
    assert canonical_name("α-SMA") == "asma"


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml", ".csv", ".tsv"])
def test_file_roundtrip(tmp_path, suffix):
    ms = MarkerSet.from_dict(SIMPLE)
    path = ms.write(tmp_path / f"m{suffix}")
    back = MarkerSet.read(path)
    assert back.to_dict() == ms.to_dict()
    assert back.name == str(path)
    assert load_markers(path).to_dict() == ms.to_dict()
    assert load_markers(str(path)).to_dict() == ms.to_dict()


def test_wide_csv_and_long_csv_variants(tmp_path):
    wide = tmp_path / "wide.csv"
    wide.write_text('cell_type,genes,proteins\nT cells,"CD3E;CD2",CD3\nEpithelial,EPCAM,"PanCK, E-cadherin"\n')
    assert MarkerSet.read(wide).to_dict() == SIMPLE
    long = tmp_path / "long.csv"
    long.write_text("CellType,Marker,Modality\nT cells,CD3E,gene\nT cells,CD3,protein\nB,MS4A1,rna\n")
    assert MarkerSet.read(long).to_dict() == {
        "T cells": {"genes": ["CD3E"], "proteins": ["CD3"]},
        "B": {"genes": ["MS4A1"]},
    }


def test_load_markers_forms():
    assert load_markers(None).name == "immune_tme"
    assert load_markers("IMMUNE_TME").to_dict() == builtin_markers().to_dict()
    ms = MarkerSet.from_dict(SIMPLE)
    assert load_markers(ms) is ms
    assert load_markers(SIMPLE).to_dict() == ms.to_dict()
    assert load_markers({"A": {"metab": ["glucose"]}}, extra_modalities=["metab"]).get("A", "metab") == ("glucose",)


@pytest.mark.parametrize(
    ("content", "suffix", "match"),
    [
        ('["CD3", "CD4"]', ".json", "expected a mapping"),
        ("{}", ".json", "empty"),
        ('{"T": ["CD3"]}', ".json", "must map modalities"),
        ('{"T": {"genes": []}}', ".json", "has no markers"),
        ('{"T": {"peptides": ["X"]}}', ".json", "unknown modality key 'peptides'"),
        ('{"T": {"genes": [1.5]}}', ".json", "not a name"),
        ('{"T": {"genes": {"a": 1}}}', ".json", "must be a list"),
        ('{"T": ', ".json", "not valid JSON"),
        ("just text", ".yaml", "expected a mapping"),
        ("T: [unclosed", ".yaml", "not valid YAML"),
        ("a,b\n1,2\n", ".csv", "needs columns cell_type"),
        ("cell_type,marker\nT,CD3\n", ".csv", "no 'modality' column"),
        ("cell_type,marker,modality\nT,CD3,peptide\n", ".csv", "unknown modality key"),
        ("x", ".txtx", "unknown marker file type"),
    ],
)
def test_wrong_shapes_raise_one_line_input_error_naming_the_file(tmp_path, content, suffix, match):
    path = tmp_path / f"markers{suffix}"
    path.write_text(content)
    with pytest.raises(InputError, match=match) as info:
        MarkerSet.read(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message


def test_load_markers_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="neither a marker file nor a built-in reference"):
        load_markers(str(tmp_path / "nope.json"))
    with pytest.raises(InputError, match="markers must be None"):
        load_markers(42)
    with pytest.raises(FileNotFoundError):
        MarkerSet.read(tmp_path / "absent.yaml")
    with pytest.raises(InputError, match="unknown modality key 'metab'"):
        load_markers({"A": {"metab": ["glucose"]}})


def test_match_markers_returns_every_type_and_modality():
    ms = MarkerSet.from_dict(SIMPLE)
    out = match_markers(ms, {"rna": ["EPCAM", "CD3E"], "protein": ["E-Cadherin", "CD3e", "Pan-Keratin"]})
    assert out["T cells"]["rna"].tolist() == [1]
    assert out["T cells"]["protein"].tolist() == [1]
    assert out["Epithelial"]["protein"].tolist() == [2, 0]
    assert all(v.dtype == np.int64 for t in out.values() for v in t.values())
    json.dumps({t: {m: v.tolist() for m, v in d.items()} for t, d in out.items()})
