"""`spatialmultiomics run --backend/--scheduler/--device/--n-jobs`: the same cell types on every engine, one-line
errors for a bad engine (exit 2), the config-file keys, and a clean terminal (log lines above the progress bar)."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import spatialmultiomics as smo
from spatialmultiomics import _engine
from spatialmultiomics._log import log_warning
from spatialmultiomics.cli import _main, main

pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> dict[str, Path]:
    return smo.datasets.write_tables(smo.datasets.paper_benchmark(seed=0), tmp_path_factory.mktemp("inputs"))


def _args(tables: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "run",
        "--tx",
        str(tables["rna"]),
        "--prot",
        str(tables["protein"]),
        "--n-factors",
        "4",
        "--markers",
        str(tables["markers"]),
        "--no-figures",
        "-o",
        str(out),
        *extra,
    ]


def _cli(argv: list[str]) -> int:
    """Run the CLI in-process and return its exit code."""
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _types(out: Path) -> pd.Series:
    return pd.read_csv(out / "shared_labels.csv", index_col="cell_id")["cell_type"]


@pytest.fixture(scope="module")
def default_run(tables, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("default") / "res"
    assert _cli([*_args(tables, out), "-q"]) == 0
    return out


def test_dask_local_cluster_gives_the_default_cell_types_quietly(tables, default_run, tmp_path: Path) -> None:
    # a subprocess: the LocalCluster's worker processes re-import the main module
    out = tmp_path / "dask"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "spatialmultiomics",
            *_args(tables, out, "--backend", "dask", "--scheduler", "local", "--n-jobs", "1", "-q"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # --quiet: nothing on success, Dask's own start/stop messages included
    assert proc.stderr == ""
    base, types = _types(default_run), _types(out)
    assert (types.loc[base.index] == base).mean() >= 0.99
    html = (out / "report.html").read_text()
    assert "local cluster (started for this run)" in html  # the engine is in the report's parameters
    assert re.search(r"<td>workers</td><td[^>]*>1<", html)  # --n-jobs 1: one worker process, one thread
    assert re.search(r"<td>threads</td><td[^>]*>1<", html)


def test_torch_gives_the_default_cell_types(tables, default_run, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "torch"
    assert _cli([*_args(tables, out, "--backend", "torch", "-q")]) == 0
    base, types = _types(default_run), _types(out)
    assert (types.loc[base.index] == base).mean() >= 0.99
    html = (out / "report.html").read_text()
    assert "<h3>Engine</h3>" in html
    assert "<td>device</td><td>cpu</td>" in html or "<td>device</td><td>cuda</td>" in html


def _free_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing_dask", r"backend='dask' \(--backend\) needs .*pip install 'spatialmultiomics\[dask\]'"),
        ("missing_torch", r"backend='torch' \(--backend\) needs .*pip install 'spatialmultiomics\[torch\]'"),
        ("unreachable", r"scheduler \(--scheduler\)='tcp://127\.0\.0\.1:\d+': no Dask scheduler answered within"),
        ("cuda", r"device \(--device\)='cuda': PyTorch .* sees no CUDA GPU"),
        ("unknown", r"backend \(--backend\) must be one of \['numpy', 'dask', 'torch'\], got 'gpu'"),
    ],
)
def test_bad_engine_exits_2_with_one_line(tables, tmp_path: Path, monkeypatch, capsys, case, message) -> None:
    extra = {
        "missing_dask": ["--backend", "dask"],
        "missing_torch": ["--backend", "torch"],
        "unreachable": ["--backend", "dask", "--scheduler", _free_address()],
        "cuda": ["--backend", "torch", "--device", "cuda"],
        "unknown": ["--backend", "gpu"],
    }[case]
    if case == "missing_dask":
        monkeypatch.setitem(sys.modules, "dask.distributed", None)  # as if the extra were not installed
    if case == "missing_torch":
        monkeypatch.setitem(sys.modules, "torch", None)
    if case == "unreachable":
        monkeypatch.setattr(_engine, "CONNECT_TIMEOUT_S", 0.5)
    if case == "cuda":
        torch = pytest.importorskip("torch")
        if torch.cuda.is_available():
            pytest.skip("a CUDA GPU is present")
    out = tmp_path / "out"
    assert _cli(_args(tables, out, *extra)) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines, err
    assert lines[-1].startswith("error: "), err  # the last line of a failure is the error
    assert re.search(message, lines[-1]), lines[-1]
    assert "Traceback" not in err
    assert not out.exists()


def test_engine_keys_in_config_files(tables, tmp_path: Path) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text("backend: dask\nn-jobs: 2\nquiet: true\n")
    out = tmp_path / "yaml"
    assert _cli([*_args(tables, out), "--config", str(cfg)]) == 0
    html = (out / "report.html").read_text()
    assert "threads (local threaded scheduler)" in html
    assert re.search(r"<td>threads</td><td[^>]*>2<", html)
    bad = tmp_path / "bad.toml"
    bad.write_text('backend = "numpy"\nscheduler = "local"\n')
    assert _cli([*_args(tables, tmp_path / "toml"), "--config", str(bad)]) == 2


def _render(stream: str) -> list[str]:
    """What a terminal shows: each carriage return moves back to column 0 and later text overwrites earlier."""
    lines = []
    for raw in stream.replace("\r\n", "\n").split("\n"):
        screen: list[str] = []
        for part in raw.split("\r"):
            screen[: len(part)] = list(part)
        lines.append("".join(screen).rstrip())
    return [ln for ln in lines if ln]


def test_log_lines_and_progress_bar_never_share_a_line(tables, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(_main, "_show_progress", lambda quiet: not quiet)  # as on a terminal
    assert _cli(_args(tables, tmp_path / "out")) == 0
    err = capsys.readouterr().err
    assert "%|" in err  # the bar was drawn
    bar = re.compile(r"^spatialmultiomics:\s+\d+%\|[^|]*\|[^\]]*\]$")
    shown = _render(err)
    for line in shown:
        assert "%|" not in line or bar.match(line), f"bar and text on one line: {line!r}"
    for stage in ("read", "align", "preprocess", "factorize", "annotate", "spatial", "write"):
        assert any(re.match(rf"^{stage}\s+\d+\.\d+ s, peak RSS", ln) for ln in shown), stage
    # the bar is gone at the end: nothing of it is left on screen
    assert not bar.match(shown[-1])


def test_a_warning_is_one_log_line_and_silent_with_quiet(tmp_path: Path, capsys) -> None:
    # one cell type only: the niches warn that every composition vector is the same
    n = 120
    rng = np.random.default_rng(2)
    cells = pd.DataFrame(
        {
            "cell_id": [f"c{i}" for i in range(n)],
            "X_px": rng.random(n) * 400.0,
            "Y_px": rng.random(n) * 400.0,
            "phenotype": "tumour",
        }
    )
    cells.to_csv(tmp_path / "cells.csv", index=False)
    args = ["colocalize", str(tmp_path / "cells.csv"), "--label-key", "phenotype", "--x", "X_px", "--y", "Y_px"]
    args += ["--radius", "20", "--n-niches", "3"]
    proc = subprocess.run(  # a subprocess: pytest records warnings, the CLI then leaves them to it
        [sys.executable, "-m", "spatialmultiomics", *args, "--output", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    warned = [ln for ln in lines if "only 1 distinct composition vectors" in ln]
    assert len(warned) == 1, proc.stderr
    assert re.match(r"^\w*Warning: niches: only 1 distinct", warned[0]), warned[0]  # Category: message
    assert not any("warnings.warn" in ln or re.search(r"\.py:\d+:", ln) for ln in lines)  # no file:line, no source
    # --quiet: the logger passes errors only, so the same warning prints nothing
    _main._setup_logging(quiet=True, debug=False)
    log_warning("niches: only 1 distinct composition vectors", UserWarning, "x.py", 1)
    assert capsys.readouterr().err == ""
    _main._setup_logging(quiet=False, debug=False)
    log_warning("niches: only 1 distinct\ncomposition vectors", UserWarning, "x.py", 1)
    assert capsys.readouterr().err == "UserWarning: niches: only 1 distinct composition vectors\n"


def test_demo_takes_the_engine_options(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    assert _cli(["demo", "--dataset", "paper", "-o", str(out), "--no-figures", "--backend", "dask", "-q"]) == 0
    from spatialmultiomics._mudata import read_h5mu

    md = read_h5mu(out / "result.h5mu")
    assert md.uns["engine"]["backend"] == "dask"
    assert _cli(["demo", "--dataset", "paper", "-o", str(tmp_path / "x"), "--backend", "gpu"]) == 2
