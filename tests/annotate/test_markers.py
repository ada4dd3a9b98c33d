import json
from collections import defaultdict

import numpy as np
import pytest

from spatialmultiomics._errors import InputError
from spatialmultiomics.annotate import MarkerSet, builtin_markers, load_markers, merge_markers
from spatialmultiomics.annotate._markers import ALIASES, canonical_name, feature_name_variants, match_markers

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


@pytest.mark.parametrize(
    ("feature", "variants"),
    [
        ("hg19_CD3E", ["CD3E"]),
        ("GRCh38_MS4A1", ["MS4A1"]),
        ("mm10---Cd3e", ["Cd3e"]),
        ("MHCII (HLA-DR)", ["MHCII", "HLA-DR"]),
        ("IL7Ralpha (CD127)", ["IL7Ralpha", "CD127"]),
        ("CD45", []),
        ("HLA-DR", []),
    ],
)
def test_feature_name_variants(feature, variants):
    assert feature_name_variants(feature) == variants


def test_genome_prefixes_and_adt_names_match_but_full_names_win():
    # real ECCITE-seq spellings: genes 'hg19_'-prefixed, antibodies as 'Name (CD name)'
    genes = ["hg19_MS4A1", "hg19_CD3E", "hg19_CD19"]
    adt = ["B220 (CD45R)", "MHCII (HLA-DR)", "PECAM (CD31)", "C-kit (CD117)", "CD45RA", "CD45"]
    ms = MarkerSet.from_dict(
        {
            "B": {"genes": ["MS4A1", "CD19"], "proteins": ["HLA-DR", "CD45R"]},
            "Endo": {"proteins": ["CD31"]},
            "Mast": {"proteins": ["KIT"]},
            "Immune": {"proteins": ["CD45"]},
        }
    )
    out = match_markers(ms, {"rna": genes, "protein": adt})
    assert out["B"]["rna"].tolist() == [0, 2]
    assert out["B"]["protein"].tolist() == [1, 0]
    assert out["Endo"]["protein"].tolist() == [2]
    assert out["Mast"]["protein"].tolist() == [3]  # alias group CD117 / KIT through the parenthesised name
    assert out["Immune"]["protein"].tolist() == [5]  # the full name CD45, not CD45RA or B220 (CD45R)


def test_merge_markers_replace_and_union():
    base = {"T": {"genes": ["CD3E"], "proteins": ["CD3"]}, "B": {"genes": ["MS4A1"]}}
    extra = {"T": {"genes": ["CD2"]}, "Mel": {"genes": ["PMEL"]}}
    replaced = merge_markers(base, extra)
    assert replaced.types == ["T", "B", "Mel"]
    assert replaced.to_dict()["T"] == {"genes": ["CD2"]}
    union = merge_markers(base, extra, how="union", name="mine")
    assert union.to_dict()["T"] == {"genes": ["CD3E", "CD2"], "proteins": ["CD3"]}
    assert union.name == "mine"
    with pytest.raises(InputError, match="how must be one of"):
        merge_markers(base, extra, how="add")


def test_load_markers_extend_and_lists(tmp_path):
    mine = {"Melanocytes": {"genes": ["PMEL", "MLANA"], "proteins": ["SOX10"]}, "B cells": {"genes": ["CD79A"]}}
    ext = load_markers(mine, extend=True)
    ref = builtin_markers()
    assert ext.types == [*ref.types, "Melanocytes"]
    assert ext.get("B cells", "rna") == ("CD79A",)  # the user's definition replaces the built-in one
    assert ext.get("CD8 T cells", "rna") == ref.get("CD8 T cells", "rna")
    assert load_markers(mine, extend="lymphoid").types[-2:] == ["Melanocytes", "B cells"]
    path = MarkerSet.from_dict(mine).write(tmp_path / "mine.yaml")
    both = load_markers(["immune_tme", path])
    assert both.to_dict() == ext.to_dict()
    assert both.name == f"immune_tme+{path}"
    assert load_markers(None, extend=True).to_dict() == ref.to_dict()
    from pathlib import Path

    assert load_markers(Path("lymphoid")).name == "lymphoid"  # a reference name given as a CLI path
    with pytest.raises(InputError, match="empty list"):
        load_markers([])
    with pytest.raises(InputError, match="extend must be"):
        load_markers(mine, extend=3)
    with pytest.raises(InputError, match="unknown built-in marker reference"):
        load_markers(mine, extend="brain")


def test_cd45_isoforms_stand_in_only_without_a_cd45_channel():
    from spatialmultiomics.annotate._markers import MarkerSet, match_markers

    ref = MarkerSet.from_dict({"Immune": {"proteins": ["CD45"]}})
    assert match_markers(ref, {"protein": ["CD3", "CD45RO", "CD45", "CD8"]})["Immune"]["protein"].tolist() == [2]
    assert match_markers(ref, {"protein": ["CD3", "CD45RO", "CD8"]})["Immune"]["protein"].tolist() == [1]
    assert match_markers(ref, {"protein": ["HLA.DR", "CD45RA"]})["Immune"]["protein"].tolist() == [1]
