from pathlib import Path

import pandas as pd
import pytest

from spatialmultiomics._errors import InputError
from spatialmultiomics.cohort import SampleSheet, is_sample_sheet, read_sample_sheet


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for name in ("s1_rna.csv", "s1_prot.csv", "s2_rna.csv", "s2_prot.csv", "s3_prot.csv"):
        (tmp_path / "data").mkdir(exist_ok=True)
        (tmp_path / "data" / name).write_text("cell_id,x,y,A\nc1,0,0,1\n")
    return tmp_path


def _csv(folder: Path, text: str, name: str = "sheet.csv") -> Path:
    path = folder / name
    path.write_text(text)
    return path


GOOD = """sample,condition,patient,transcripts,transcripts_platform,proteins,proteins_platform,pixel_size_um,age,site
S1,resp,P1,data/s1_rna.csv,Xenium,data/s1_prot.csv,CODEX,0.5,61,breast
S2,nonresp,P2,data/s2_rna.csv,xenium,data/s2_prot.csv,codex,,70,lung
S3,nonresp,P2,,,data/s3_prot.csv,MIBI,0.39,55.5,lung
"""


def test_csv_sheet_read_with_paths_platforms_pixels_and_covariates(folder):
    sheet = read_sample_sheet(_csv(folder, GOOD))
    assert isinstance(sheet, SampleSheet)
    assert sheet.names == ["S1", "S2", "S3"]
    assert sheet.conditions == ["resp", "nonresp"]
    assert sheet.has_patient and [s.patient for s in sheet] == ["P1", "P2", "P2"]
    s1, s2, s3 = sheet.samples
    # relative paths are resolved against the sheet's folder
    assert s1.inputs == {
        "rna": (folder / "data/s1_rna.csv").resolve(),
        "protein": (folder / "data/s1_prot.csv").resolve(),
    }
    assert s1.platforms == {"rna": "xenium", "protein": "codex"}
    assert s1.pixel_size_um == {"rna": 0.5, "protein": 0.5}
    assert s2.pixel_size_um == {"rna": 1.0, "protein": 1.0}  # blank: 1 µm per unit
    assert set(s3.inputs) == {"protein"} and s3.platforms == {"protein": "mibi"}
    assert sheet.covariates == ("age", "site")
    assert [s.covariates["age"] for s in sheet] == [61.0, 70.0, 55.5]  # numeric when every value parses
    assert [s.covariates["site"] for s in sheet] == ["breast", "lung", "lung"]
    table = sheet.table()
    assert list(table.columns[:5]) == ["sample", "condition", "patient", "age", "site"]
    assert table["proteins_platform"].tolist() == ["codex", "codex", "mibi"]


def test_run_command_names_and_per_modality_pixel_size(folder):
    text = "Sample ID,Group,tx,tx-platform,prot,prot_platform,proteins_pixel_size_um\n"
    text += "a,x,data/s1_rna.csv,Visium,data/s1_prot.csv,IMC,2\nb,y,data/s2_rna.csv,,data/s2_prot.csv,,\n"
    sheet = read_sample_sheet(_csv(folder, text))
    assert sheet.names == ["a", "b"] and not sheet.has_patient
    assert sheet.samples[0].pixel_size_um == {"rna": 1.0, "protein": 2.0}
    assert sheet.samples[1].platforms == {"rna": "generic", "protein": "generic"}


def test_yaml_and_toml_sheets_equal_the_csv(folder):
    csv_sheet = read_sample_sheet(_csv(folder, GOOD))
    yaml_text = "samples:\n" + "".join(
        f"  - {{sample: {s.sample}, condition: {s.condition}, patient: {s.patient}, proteins: "
        f"data/{s.sample.lower()}_prot.csv, proteins_platform: {s.platforms['protein']}}}\n"
        for s in csv_sheet
    )
    toml_text = "".join(
        f'[[samples]]\nsample = "{s.sample}"\ncondition = "{s.condition}"\npatient = "{s.patient}"\n'
        f'proteins = "data/{s.sample.lower()}_prot.csv"\nproteins_platform = "{s.platforms["protein"]}"\n\n'
        for s in csv_sheet
    )
    for name, text in (("sheet.yaml", yaml_text), ("sheet.toml", toml_text)):
        sheet = read_sample_sheet(_csv(folder, text, name))
        assert sheet.names == csv_sheet.names
        assert [s.inputs["protein"] for s in sheet] == [s.inputs["protein"] for s in csv_sheet]
        assert [s.patient for s in sheet] == ["P1", "P2", "P2"]


def test_dataframe_sheet_holds_objects_and_resolves_against_base_dir(folder):
    import anndata as ad
    import numpy as np

    adata = ad.AnnData(np.ones((2, 2), dtype=np.float32))
    frame = pd.DataFrame({"sample": ["a", "b"], "condition": ["x", "y"], "proteins": [adata, "data/s1_prot.csv"]})
    sheet = read_sample_sheet(frame, base_dir=folder)
    assert sheet.samples[0].inputs["protein"] is adata
    assert sheet.samples[1].inputs["protein"] == (folder / "data/s1_prot.csv").resolve()
    assert sheet.source is None


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("sample,condition,proteins\nS1,a,data/nope.csv\nS2,b,data/s2_prot.csv\n",
         r"sheet\.csv, row 1, column 'proteins': file 'data/nope\.csv' not found"),
        ("sample,condition,proteins\nS1,a,data/s1_prot.csv\nS1,b,data/s2_prot.csv\n",
         r"row 2, column 'sample': sample 'S1' is already on row 1"),
        ("sample,condition,proteins,proteins_platform\nS1,a,data/s1_prot.csv,CODEX\nS2,b,data/s2_prot.csv,Phenix\n",
         r"row 2, column 'proteins_platform': proteins_platform='Phenix' is not a known platform"),
        ("sample,condition,proteins,proteins_platform\nS1,a,data/s1_prot.csv,Visium\nS2,b,data/s2_prot.csv,\n",
         r"row 1, column 'proteins_platform': 'Visium' is a rna platform"),
        ("sample,condition,proteins\nS1,a,data/s1_prot.csv\nS2,a,data/s2_prot.csv\n",
         r"column 'condition': 1 condition\(s\) \['a'\]; a comparison needs at least 2"),
        ("sample,condition,proteins\nS1,,data/s1_prot.csv\nS2,b,data/s2_prot.csv\n",
         r"row 1, column 'condition': sample 'S1' has no condition"),
        ("sample,condition,proteins\n,a,data/s1_prot.csv\nS2,b,data/s2_prot.csv\n", r"row 1, column 'sample': empty"),
        ("sample,condition,patient,proteins\nS1,a,P1,data/s1_prot.csv\nS2,b,,data/s2_prot.csv\n",
         r"row 2, column 'patient': sample 'S2' has no patient"),
        ("sample,condition,proteins,pixel_size_um\nS1,a,data/s1_prot.csv,-1\nS2,b,data/s2_prot.csv,1\n",
         r"row 1, column 'pixel_size_um': pixel size must be a positive number"),
        ("sample,condition,transcripts,proteins\nS1,a,,\nS2,b,data/s2_rna.csv,\n",
         r"row 1, column 'transcripts': sample 'S1' has no input file"),
        ("sample,proteins\nS1,data/s1_prot.csv\n", r"sheet\.csv: no 'condition' column; columns found"),
        ("sample,condition,age\nS1,a,3\n", r"no input column; give 'transcripts' and/or 'proteins'"),
        ("sample,condition,prot,proteins\nS1,a,data/s1_prot.csv,data/s1_prot.csv\n",
         r"columns 'prot' and 'proteins' both mean 'proteins'"),
        ("sample,condition,proteins\n", r"the sheet has no samples"),
    ],
)  # fmt: skip
def test_every_sheet_problem_is_one_line_naming_sheet_row_and_column(folder, text, match):
    with pytest.raises(InputError, match=match) as info:
        read_sample_sheet(_csv(folder, text))
    assert "\n" not in str(info.value)


def test_file_level_errors(folder):
    with pytest.raises(InputError, match=r"sample sheet '.*missing\.csv' not found"):
        read_sample_sheet(folder / "missing.csv")
    with pytest.raises(InputError, match=r"unknown sample sheet format '\.xlsx'"):
        read_sample_sheet(_csv(folder, "x", "sheet.xlsx"))
    with pytest.raises(InputError, match=r"not valid YAML"):
        read_sample_sheet(_csv(folder, "samples: [a: b: c", "sheet.yaml"))
    with pytest.raises(InputError, match=r"not valid TOML"):
        read_sample_sheet(_csv(folder, "[[samples]\n", "sheet.toml"))
    with pytest.raises(InputError, match=r"a sample sheet is a list of samples"):
        read_sample_sheet(_csv(folder, "samples: 3\n", "sheet.yml"))
    with pytest.raises(InputError, match=r"min_conditions must be an integer >= 1"):
        read_sample_sheet(_csv(folder, GOOD), min_conditions=0)
    # one condition is fine for a joint model alone
    one = "sample,condition,proteins\nS1,a,data/s1_prot.csv\nS2,a,data/s2_prot.csv\n"
    assert read_sample_sheet(_csv(folder, one), min_conditions=1).conditions == ["a"]


def test_is_sample_sheet_tells_a_sheet_from_a_labelled_cell_table(folder):
    assert is_sample_sheet(_csv(folder, GOOD))
    assert is_sample_sheet(_csv(folder, "anything", "s.yaml"))
    assert is_sample_sheet(_csv(folder, "sample\tcondition\tproteins\nS1\ta\tx\n", "s.tsv"))
    cells = "cell_id,x,y,cell_type,sample,condition\nc1,0,0,T,S1,a\n"
    assert not is_sample_sheet(_csv(folder, cells, "cells.csv"))
    # a cell table whose sample column is next to a protein intensity column named like an input is still cells
    assert not is_sample_sheet(_csv(folder, "x,y,sample,protein\n0,0,S1,3\n", "cells2.csv"))
    assert not is_sample_sheet(folder / "missing.csv")
    assert not is_sample_sheet(_csv(folder, "", "cells.parquet"))
