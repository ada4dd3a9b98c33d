"""Bad input: every case exits with code 2 and one line naming the file, column or argument and what is allowed.

Each case runs the real command line in-process (``main(argv)``); the one subprocess test checks that a real
process prints no traceback without ``--debug`` and one with it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import spatialmultiomics as smo
from spatialmultiomics.cli import main

PROT_COLS = [
    "cell_id",
    "x",
    "y",
    "CD3",
    "CD8",
    "CD68",
    "CD163",
    "PanCK",
    "E-cadherin",
    "aSMA",
    "Vimentin",
    "Ki67",
    "HistoneH3",
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    mdata = smo.datasets.paper_benchmark(seed=0)
    return smo.datasets.write_tables(mdata, tmp_path_factory.mktemp("good"))


def _cli(argv: list[str], capsys) -> tuple[int, list[str]]:
    """Run the CLI in-process; return the exit code and the non-empty stderr lines."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    return exc.value.code, [ln.strip() for ln in err.replace("\r", "\n").splitlines() if ln.strip()]


def _prot(inputs) -> pd.DataFrame:
    return pd.read_csv(inputs["protein"])


def _write(tmp_path: Path, name: str, content: pd.DataFrame | str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, pd.DataFrame):
        content.to_csv(path, index=False)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


# (case id, builder of the broken protein table or None, extra CLI arguments, expected error line)
# In the expected line, {f} is the broken file, {o} the output folder, {d} the test's folder.
TABLE_CASES = [
    ("empty file", "", [], "{f}: the file is empty; expected a header line and one row per cell."),
    ("header only", ",".join(PROT_COLS) + "\n", [], "{f}: has a header but no rows; at least one cell is needed."),
    (
        "missing x",
        lambda p: p.drop(columns=["x"]),
        [],
        "{f}: no 'x' coordinate column; columns are " + str([c for c in PROT_COLS if c != "x"]) + ".",
    ),
    (
        "missing y",
        lambda p: p.drop(columns=["y"]),
        [],
        "{f}: no 'y' coordinate column; columns are " + str([c for c in PROT_COLS if c != "y"]) + ".",
    ),
    (
        "no coordinates at all",
        lambda p: p[["cell_id", "CD3"]],
        [],
        "{f}: no 'x' / 'y' coordinate column; columns are ['cell_id', 'CD3'].",
    ),
    (
        "duplicate ids",
        lambda p: p.assign(cell_id=p["cell_id"].where(p.index != 1, p["cell_id"].iloc[0])),
        [],
        "{f}: 1 duplicate ids in column 'cell_id' (e.g. 'cell_0000'); ids must be unique.",
    ),
    (
        "NaN intensity",
        lambda p: p.assign(CD3=p["CD3"].where(p.index != 3, np.nan)),
        [],
        "{f}: column 'CD3' has 1 missing (NaN) or infinite values; fill or drop them first.",
    ),
    (
        "infinite intensity",
        lambda p: p.assign(CD68=p["CD68"].where(p.index > 1, np.inf)),
        [],
        "{f}: column 'CD68' has 2 missing (NaN) or infinite values; fill or drop them first.",
    ),
    (
        "negative intensity",
        lambda p: p.assign(CD8=p["CD8"].where(p.index != 3, -2.5)),
        [],
        "{f}: column 'CD8' has 1 negative values (min -2.5); counts and intensities must be >= 0.",
    ),
    (
        "text in a marker column",
        lambda p: p.assign(CD8=p["CD8"].astype(object).where(p.index != 3, "high")),
        [],
        "{f}: column 'CD8' has non-numeric values (e.g. 'high' in data row 4); feature and coordinate columns "
        "must be numbers.",
    ),
    (
        "text in x",
        lambda p: p.assign(x=p["x"].astype(object).where(p.index != 0, "left")),
        [],
        "{f}: column 'x' has non-numeric values (e.g. 'left' in data row 1); feature and coordinate columns "
        "must be numbers.",
    ),
    (
        "missing coordinate",
        lambda p: p.assign(y=p["y"].where(p.index != 5, np.nan)),
        [],
        "{f}: 1 rows have missing or infinite coordinates in 'x' / 'y'; every cell needs x and y.",
    ),
    (
        "duplicate column",
        "cell_id,x,y,CD3,CD3\na,1,1,1,1\nb,2,2,2,2\n",
        [],
        "{f}: duplicate column name 'CD3' in the header; every column needs its own name.",
    ),
    (
        "ragged rows",
        "cell_id,x,y,CD3\n1,2,3\n4,5,6,7,8\n",
        [],
        "{f}: cannot be parsed as a CSV table (CSV parse error: Expected 4 columns, got 3: 1,2,3).",
    ),
]


@pytest.mark.parametrize(("case", "content", "extra", "message"), TABLE_CASES, ids=[c[0] for c in TABLE_CASES])
def test_bad_protein_table(inputs, tmp_path: Path, capsys, case, content, extra, message) -> None:
    table = content(_prot(inputs)) if callable(content) else content
    bad = _write(tmp_path, "bad.csv", table)
    out = tmp_path / "out"
    code, lines = _cli(["run", "-q", "--tx", str(inputs["rna"]), "--prot", str(bad), "-o", str(out), *extra], capsys)
    assert code == 2
    assert lines == ["error: " + message.format(f=bad, o=out, d=tmp_path)]
    assert not out.exists()


def _markers(tmp_path: Path, name: str, content: str) -> Path:
    return _write(tmp_path, name, content)


ARG_CASES = [
    ("radius zero", ["--radius", "0"], "radius must be a finite number > 0, got 0.0."),
    ("radius negative", ["--radius", "-5"], "radius must be a finite number > 0, got -5.0."),
    ("zero factors", ["--n-factors", "0"], "--n-factors must be 'auto' or an integer >= 1, got '0'."),
    (
        "more factors than cells and features allow",
        ["--n-factors", "600"],
        "n_factors=600 (--n-factors) is more factors than the data allow: 200 cells and 509 features are "
        "factorized (rna: 500, protein: 9), and the number of factors can be at most the smaller of the two; use "
        "n_factors <= 200 or 'auto'.",
    ),
    (
        "unknown platform",
        ["--tx-platform", "Visum"],
        "platform_tx='Visum' is not a known platform; allowed (case-insensitive): Visium, Visium HD, MERFISH, "
        "MERSCOPE, Xenium, Stereo-seq, CosMx, CODEX, MIBI, IMC, CyCIF, inForm, QuPath, HALO, generic.",
    ),
    (
        "protein platform for RNA",
        ["--tx-platform", "CODEX"],
        "platform_tx='CODEX' is a protein platform; for this input use one of ['cosmx', 'generic', 'merfish', "
        "'stereoseq', 'visium', 'visium_hd', 'xenium'].",
    ),
    ("negative pixel size", ["--pixel-size-um", "-1"], "pixel_size_um must be a finite number > 0, got -1.0."),
    (
        "malformed --extra",
        ["--extra", "metabolite"],
        "--extra 'metabolite': expected NAME=PATH, e.g. --extra metabolite=maldi.csv.",
    ),
    (
        "marker file of the wrong shape (a list)",
        ["--markers", "{d}/list.json"],
        "{d}/list.json: expected a mapping {{cell_type: {{genes: [...], proteins: [...]}}}}, got list.",
    ),
    (
        "marker CSV with the wrong columns",
        ["--markers", "{d}/wrong.csv"],
        "{d}/wrong.csv: a marker CSV needs columns cell_type, marker, modality (long form) or cell_type, genes, "
        "proteins (wide form); got columns ['a', 'b'].",
    ),
    (
        "empty marker file",
        ["--markers", "{d}/empty.json"],
        "{d}/empty.json: the marker set is empty; give at least one cell type with markers.",
    ),
    (
        "markers that match no feature",
        ["--markers", "{d}/nomatch.json"],
        "no marker of {d}/nomatch.json matches a feature of the data (modalities ['rna', 'protein']).",
    ),
    (
        "marker file that does not exist",
        ["--markers", "{d}/nope.json"],
        "markers='{d}/nope.json' is neither a marker file nor a built-in reference (immune_tme, lymphoid).",
    ),
    ("input file that does not exist", ["--prot", "{d}/missing.csv"], "{d}/missing.csv: no such file or folder."),
    (
        "unsupported file type",
        ["--prot", "{d}/table.xlsx"],
        "{d}/table.xlsx: unsupported file type '.xlsx'; expected .csv, .tsv, .txt, .parquet (optionally .gz), "
        ".h5ad, .h5, .gem or a vendor output folder.",
    ),
]


@pytest.mark.parametrize(("case", "extra", "message"), ARG_CASES, ids=[c[0] for c in ARG_CASES])
def test_bad_argument(inputs, tmp_path: Path, capsys, case, extra, message) -> None:
    _markers(tmp_path, "list.json", '["CD3", "CD8"]')
    _markers(tmp_path, "wrong.csv", "a,b\n1,2\n")
    _markers(tmp_path, "empty.json", "{}")
    _markers(tmp_path, "nomatch.json", json.dumps({"X": {"genes": ["FOO"], "proteins": ["BAR"]}}))
    _write(tmp_path, "table.xlsx", b"PK\x03\x04 not really a workbook")
    out = tmp_path / "out"
    args = ["run", "-q", "--tx", str(inputs["rna"]), "--prot", str(inputs["protein"]), "-o", str(out)]
    extra = [e.format(d=tmp_path) for e in extra]
    if "--prot" in extra:  # replace the good protein table
        i = args.index("--prot")
        args[i + 1] = extra[extra.index("--prot") + 1]
        extra = [e for j, e in enumerate(extra) if j not in (extra.index("--prot"), extra.index("--prot") + 1)]
    code, lines = _cli([*args, *extra], capsys)
    assert code == 2
    assert lines == ["error: " + message.format(d=tmp_path)]
    assert not out.exists()


def test_output_path_is_a_file(inputs, tmp_path: Path, capsys) -> None:
    target = _write(tmp_path, "results.txt", "not a folder")
    code, lines = _cli(["run", "--tx", str(inputs["rna"]), "--prot", str(inputs["protein"]), "-o", str(target)], capsys)
    assert code == 2
    assert lines == [f"error: output_dir={str(target)!r} is a file; give a folder path for the results."]
    assert target.read_text() == "not a folder"


def test_output_exists_without_overwrite(inputs, tmp_path: Path, capsys) -> None:
    out = tmp_path / "earlier"
    out.mkdir()
    (out / "keep.csv").write_text("earlier result")
    code, lines = _cli(["run", "--tx", str(inputs["rna"]), "--prot", str(inputs["protein"]), "-o", str(out)], capsys)
    assert code == 2
    assert lines == [
        f"error: output_dir={str(out)!r} exists and is not empty; choose another folder or pass overwrite=True "
        "(--overwrite)."
    ]
    assert (out / "keep.csv").read_text() == "earlier result"


def _unwritable_parent(tmp_path: Path) -> Path | None:
    """A folder this process cannot write into: a read-only tmp folder (not root) or /proc/sys (root)."""
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        return locked
    return Path("/proc/sys") if Path("/proc/sys").is_dir() and not os.access("/proc/sys", os.W_OK) else None


def test_unwritable_output_folder(inputs, tmp_path: Path, capsys) -> None:
    parent = _unwritable_parent(tmp_path)
    if parent is None:
        pytest.skip("no unwritable folder available to this user")
    out = parent / "results"
    code, lines = _cli(["run", "--tx", str(inputs["rna"]), "--prot", str(inputs["protein"]), "-o", str(out)], capsys)
    assert code == 2
    assert lines == [f"error: output_dir={str(out)!r}: folder {str(parent)!r} is not writable."]


def test_no_input_given(tmp_path: Path, capsys) -> None:
    code, lines = _cli(["run", "-o", str(tmp_path / "o")], capsys)
    assert (code, lines) == (2, ["error: give at least --tx or --prot (see --help)."])


def test_invalid_choice_is_a_usage_error(inputs, tmp_path: Path, capsys) -> None:
    code, lines = _cli(["run", "--tx", str(inputs["rna"]), "--expected", "maybe"], capsys)
    assert code == 2
    assert lines[-1] == "Error: Invalid value for '--expected': 'maybe' is not one of 'exact', 'paper'."


CONFIG_CASES = [
    (
        "unknown key",
        "c.yaml",
        "tx: a.csv\nfactors: 3\n",
        "--config '{p}': unknown option(s) ['factors'] for `run`; allowed: ",
    ),
    ("invalid YAML", "c.yaml", "tx: [unclosed\n", "--config '{p}': not valid YAML (while parsing a flow sequence"),
    (
        "invalid TOML",
        "c.toml",
        "n_factors = \n",
        "--config '{p}': not valid TOML (Invalid value (at line 1, column 13)).",
    ),
    (
        "not a mapping",
        "c.yaml",
        "- 1\n- 2\n",
        "--config '{p}': expected a mapping of option names to values, got list.",
    ),
    (
        "unknown format",
        "c.ini",
        "[run]\n",
        "--config '{p}': unknown format '.ini'; use a .yaml, .yml, .json or .toml file.",
    ),
    ("wrong value type", "c.yaml", "n-factors: many\n", "--n-factors must be 'auto' or an integer >= 1, got 'many'."),
]


@pytest.mark.parametrize(("case", "name", "text", "start"), CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_file(tmp_path: Path, capsys, case, name, text, start) -> None:
    path = _write(tmp_path, name, text)
    code, lines = _cli(["run", "--config", str(path), "-o", str(tmp_path / "o")], capsys)
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("error: " + start.format(p=path))


def test_missing_config_file(tmp_path: Path, capsys) -> None:
    code, lines = _cli(["run", "--config", str(tmp_path / "none.yaml")], capsys)
    assert (code, lines) == (2, [f"error: --config {str(tmp_path / 'none.yaml')!r}: no such file."])


def test_report_of_a_missing_or_empty_folder(tmp_path: Path, capsys) -> None:
    code, lines = _cli(["report", str(tmp_path / "nowhere")], capsys)
    assert (code, lines) == (
        2,
        [
            f"error: RESULT_DIR {str(tmp_path / 'nowhere')!r} does not exist; give a folder written by "
            "`spatialmultiomics run`."
        ],
    )
    code, lines = _cli(["report", str(tmp_path)], capsys)
    assert (code, lines) == (
        2,
        [f"error: {str(tmp_path)!r}: no result.h5mu found; give a result folder written by `spatialmultiomics run`."],
    )


def test_traceback_only_with_debug(inputs, tmp_path: Path) -> None:
    base = [
        sys.executable,
        "-m",
        "spatialmultiomics",
        "run",
        "--prot",
        str(inputs["protein"]),
        "--radius",
        "-1",
        "-o",
        str(tmp_path / "o"),
    ]
    plain = subprocess.run(base, capture_output=True, text=True, timeout=120, check=False)
    assert plain.returncode == 2
    assert "Traceback" not in plain.stderr
    assert plain.stderr.strip().splitlines() == ["error: radius must be a finite number > 0, got -1.0."]
    debug = subprocess.run([*base, "--debug"], capture_output=True, text=True, timeout=120, check=False)
    assert debug.returncode == 2
    assert "Traceback (most recent call last)" in debug.stderr and "InputError" in debug.stderr


def test_ids_that_never_match(inputs, tmp_path: Path) -> None:
    prot = _write(tmp_path, "other_ids.csv", _prot(inputs).assign(cell_id=lambda p: "p_" + p["cell_id"]))
    with pytest.raises(smo.InputError) as err:
        smo.run_pipeline(inputs["rna"], prot, n_factors=4, align="ids")
    assert str(err.value) == (
        "no cell id is shared by all modalities (rna: ['cell_0000', 'cell_0001', 'cell_0002']; protein: "
        "['p_cell_0000', 'p_cell_0001', 'p_cell_0002']); ids must match to join by id."
    )


# ------------------------------------------------------------------------------------------------------------------
# a run killed midway
# ------------------------------------------------------------------------------------------------------------------
def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "spatialmultiomics", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_kill_during_factorization_leaves_nothing(inputs, tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = _start(
        [
            "run",
            "--debug",
            "--tx",
            str(inputs["rna"]),
            "--prot",
            str(inputs["protein"]),
            "-o",
            str(out),
            "--n-factors",
            "8",
        ],
        tmp_path,
    )
    seen = []
    for line in proc.stderr:  # the stage after preprocessing is the factorization
        seen.append(line)
        if line.startswith("INFO preprocess"):
            proc.kill()
            break
    proc.wait(timeout=60)
    proc.stderr.close()
    assert proc.returncode == -9, "".join(seen[-20:])
    assert not out.exists()
    assert not list(tmp_path.glob(".results.*"))


def test_kill_while_writing_keeps_the_earlier_result(inputs, tmp_path: Path) -> None:
    import signal
    import time

    out = tmp_path / "results"
    out.mkdir()
    (out / "shared_labels.csv").write_text("the earlier result\n")
    before = _snapshot(out)
    args = [
        "run",
        "-q",
        "--overwrite",
        "--tx",
        str(inputs["rna"]),
        "--prot",
        str(inputs["protein"]),
        "-o",
        str(out),
        "--n-factors",
        "4",
    ]
    proc = _start(args, tmp_path)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".results.tmp-*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stderr.close()
    assert proc.returncode == -9, "the run ended before its write step could be interrupted"
    assert _snapshot(out) == before  # the earlier result is untouched
    stale = list(tmp_path.glob(".results.tmp-*"))
    assert len(stale) == 1  # the killed run's private folder; never the result folder itself
    # the next run replaces the result and removes what the killed run left
    main([*args, "--no-figures"])
    assert not list(tmp_path.glob(".results.*"))
    assert pd.read_csv(out / "shared_labels.csv").shape[0] == 200
