from __future__ import annotations

import pandas as pd
import pytest

from spatialmultiomics.io._common import _header_names
from spatialmultiomics.io._names import (
    clean_marker_names,
    coordinate_unit,
    find_coordinates,
    marker_name,
    parse_channel,
    unnamed_index_columns,
)


@pytest.mark.parametrize(
    ("column", "marker", "layout", "compartment", "statistic", "channel"),
    [
        ("CD8 - cytotoxic T cells:Cyc_3_ch_2", "CD8", "codex", "", "", "Cyc_3_ch_2"),
        ("CD45:Cyc_2_ch_2", "CD45", "codex", "", "", "Cyc_2_ch_2"),
        ("cyc003_ch002:PanCK", "PanCK", "codex", "", "", "cyc003_ch002"),
        (
            "Entire Cell CD8 (Opal 540) Mean (Normalized Counts, Total Weighting)",
            "CD8",
            "inform",
            "entire cell",
            "mean",
            "Opal 540",
        ),
        ("Entire Cell PD-L1 (Opal 520) Mean", "PD-L1", "inform", "entire cell", "mean", "Opal 520"),
        ("Nucleus DAPI Std Dev", "DAPI", "inform", "nucleus", "std", ""),
        ("Membrane CK (Opal 690) Total", "CK", "inform", "membrane", "total", "Opal 690"),
        ("Cell: CD8: Mean", "CD8", "qupath", "cell", "mean", ""),
        ("CD8: Cytoplasm: Median", "CD8", "qupath", "cytoplasm", "median", ""),
        ("Nucleus: Opal 480 mean", "Opal 480", "qupath", "nucleus", "mean", ""),
        ("Cell: FOXP3: Std.Dev.", "FOXP3", "qupath", "cell", "std", ""),
        ("CD8 Cell Intensity", "CD8", "halo", "cell", "", ""),
        ("CD8 (Opal 540) Nucleus Intensity", "CD8", "halo", "nucleus", "", "Opal 540"),
    ],
)
def test_channel_names_of_the_tools(column, marker, layout, compartment, statistic, channel) -> None:
    parsed = parse_channel(column)
    assert parsed is not None
    assert (parsed.marker, parsed.layout, parsed.compartment, parsed.statistic, parsed.channel) == (
        marker,
        layout,
        compartment,
        statistic,
        channel,
    )
    assert marker_name(column) == marker


@pytest.mark.parametrize(
    "column",
    [
        "CD8",
        "HLA-DR",
        "Nucleus Area (sq microns)",
        "Entire Cell Axis Ratio",
        "Nucleus Minor Axis",
        "Nucleus: Area µm^2",
        "Cell: Max caliper µm",
        "Cell Area",
        "GENE_1",
        "x:x",
        "Blank-1",
    ],
)
def test_other_names_are_left_alone(column: str) -> None:
    assert parse_channel(column) is None
    assert marker_name(column) == column


def test_cleaning_never_merges_two_columns() -> None:
    names = ["CD8 - cytotoxic T cells:Cyc_3_ch_2", "CD4:Cyc_2_ch_3", "DAPI"]
    assert clean_marker_names(names) == (["CD8", "CD4", "DAPI"], ["Cyc_3_ch_2", "Cyc_2_ch_3", ""], True)
    twice = ["CD8:Cyc_3_ch_2", "CD8:Cyc_5_ch_2"]
    assert clean_marker_names(twice) == (twice, ["", ""], False)


def test_repeated_unnamed_header_cells_get_pandas_names() -> None:
    # ark-analysis cell tables: pandas wrote its index twice, the first header cell empty
    assert _header_names(",Unnamed: 0,cell_size,CD45", ",") == ["Unnamed: 0", "Unnamed: 0.1", "cell_size", "CD45"]
    assert _header_names(",,x", ",") == ["Unnamed: 0", "Unnamed: 1", "x"]
    assert _header_names("a,a", ",") == ["a", "a"]  # named repeats stay repeats: the reader refuses them


def test_stray_index_columns_are_whole_numbers_without_a_name() -> None:
    frame = pd.DataFrame(
        {
            "Unnamed: 0": [0, 1, 2],
            "Unnamed: 0.1": [5.0, 9.0, 11.0],
            "Unnamed: 3": ["c1", "c2", "c3"],
            "Unnamed: 4": [0.5, 1.0, 2.0],
            "x": [1, 2, 3],
        }
    )
    assert unnamed_index_columns(frame) == ["Unnamed: 0", "Unnamed: 0.1"]


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        (["CellID", "X_position", "Y_position", "CD3"], ("X_position", "Y_position", "")),
        (["Cell X Position", "Cell Y Position"], ("Cell X Position", "Cell Y Position", "")),
        (["Centroid X µm", "Centroid Y µm"], ("Centroid X µm", "Centroid Y µm", "um")),
        (["Centroid X μm", "Centroid Y μm"], ("Centroid X μm", "Centroid Y μm", "um")),  # Greek mu
        (["Centroid X px", "Centroid Y px"], ("Centroid X px", "Centroid Y px", "px")),
        (["label", "centroid-0", "centroid-1"], ("centroid-1", "centroid-0", "")),
        (["x_um", "y_um", "x"], ("x_um", "y_um", "um")),
        (["x", "y", "X_centroid", "Y_centroid"], ("x", "y", "")),
        (["X_centroid", "Y_centroid"], ("X_centroid", "Y_centroid", "")),
        (["cellx", "celly"], ("cellx", "celly", "")),
        (["x", "CD3"], ("x", None, "")),
    ],
)
def test_coordinate_spellings_of_the_common_tools(columns, expected) -> None:
    assert find_coordinates(columns) == expected


def test_units_said_by_a_name() -> None:
    assert [coordinate_unit(n) for n in ("x_um", "Cell X Position (microns)", "x_px", "Centroid X pixels", "x")] == [
        "um",
        "um",
        "px",
        "px",
        "",
    ]
