from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import spatialmultiomics as smo
from spatialmultiomics import InputError
from spatialmultiomics.report import SECTIONS, render_report, report_folder, write_report


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real pipeline run on the seed's benchmark, written with figures and report."""
    mdata = smo.datasets.paper_benchmark(seed=0)
    out = tmp_path_factory.mktemp("run") / "results"
    smo.run_pipeline(mdata["rna"], mdata["protein"], n_factors=4, markers=dict(mdata.uns["markers"]), output_dir=out)
    return out


def test_pipeline_writes_figures_and_report(run_dir: Path) -> None:
    figs = sorted(p.name for p in (run_dir / "figures").iterdir())
    stems = ["colocalization", "factor_loadings", "factor_maps", "niches", "spatial_cell_types"]
    assert figs == sorted([f"{s}.png" for s in stems] + [f"{s}.svg" for s in stems])
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    # every figure embedded, byte for byte, as an inline PNG
    imgs = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([^"]+)"', text)
    assert len(imgs) == len(stems)
    import base64

    embedded = {base64.b64decode(b) for b in imgs}
    assert embedded == {(run_dir / "figures" / f"{s}.png").read_bytes() for s in stems}


def test_report_is_self_contained(run_dir: Path) -> None:
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    # no external resource of any kind: every src / href is a data: URI or an in-page anchor
    refs = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', text)
    assert refs and all(r.startswith(("data:", "#")) for r in refs), [r for r in refs if not r.startswith("data:")]
    assert "http://" not in text.replace("http://www.w3.org", "") and "https://" not in text
    assert "@import" not in text and '<link rel="stylesheet"' not in text


def test_sections_in_order(run_dir: Path) -> None:
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    positions = [text.index(f'<section id="{sid}"><h2>{head}</h2>') for sid, head in SECTIONS]
    assert positions == sorted(positions)


def test_tables_hold_the_written_numbers(run_dir: Path) -> None:
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    coloc = pd.read_csv(run_dir / "co_localization.csv")
    body = text[text.index('id="coloc-table"') :]
    body = body[: body.index("</table>")]
    rows = re.findall(r"<tr( class=\"sig\")?>(.*?)</tr>", body)[1:]  # skip the header row
    assert len(rows) == len(coloc)
    z_shown = [float(re.findall(r'data-v="([^"]*)"', r[1])[3] or "nan") for r in rows]  # 4th numeric: z-score
    assert np.allclose(z_shown, coloc["z_score"].to_numpy(), equal_nan=True)
    assert sum(bool(r[0]) for r in rows) == int((coloc["q_value"] < 0.05).sum())
    factors = pd.read_csv(run_dir / "factor_annotation.csv")
    fac = text[text.index('<section id="factors">') : text.index('<section id="figures">')]
    assert fac.count("<tr>") == len(factors) + 1
    for t in factors["cell_type"]:
        assert f"</span>{t}</td>" in fac
    assert "Time per stage" in text and re.search(r"<td>factorize</td><td class=\"num\"", text)


def test_report_from_a_container_without_figures(tmp_path: Path) -> None:
    mdata = smo.datasets.paper_benchmark(seed=0)
    res = smo.run_pipeline(mdata["rna"], mdata["protein"], n_factors=4, markers=dict(mdata.uns["markers"]))
    path = write_report(res.mdata, tmp_path / "sub" / "r.html", figures=False, title="My <tissue>")
    text = path.read_text(encoding="utf-8")
    assert "<title>My &lt;tissue&gt;</title>" in text
    assert "<img" not in text and "No figures" in text
    assert f"{res.mdata.n_obs:,}" in text
    assert path.stat().st_mode & 0o044 == 0o044  # readable by others, like any file the user makes


def test_report_folder_redraws_figures(run_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "figures")
    (copy / "report.html").unlink()
    path = report_folder(copy)
    assert path == copy / "report.html" and path.is_file()
    assert (copy / "figures" / "factor_loadings.png").is_file()
    assert not list(copy.glob(".figures.*"))


def test_bad_report_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"RESULT_DIR '.*nowhere' does not exist; give a folder written by"):
        report_folder(tmp_path / "nowhere")
    with pytest.raises(InputError, match=r"no result.h5mu found; give a result folder written by"):
        render_report(tmp_path)
    (tmp_path / "result.h5mu").write_text("not hdf5")
    with pytest.raises(InputError, match=r"result.h5mu': not a readable .h5mu result file \(ValueError"):
        render_report(tmp_path)


def test_report_in_headless_chromium(run_dir: Path, tmp_path: Path, chromium) -> None:
    dom, console = chromium(run_dir / "report.html", tmp_path, "#sort=-z_score")
    assert console == []
    assert re.search(r'<body[^>]*data-ready="1"', dom), "the page's script did not run to its end"
    for sid, head in SECTIONS:
        assert f'<section id="{sid}"><h2>{head}</h2>' in dom
    # the #sort link sorted the co-localization table by z-score, largest first
    table = dom[dom.index('id="coloc-table"') :]
    table = table[: table.index("</table>")]
    z = [float(v) for v in re.findall(r'<td class="num" data-v="([^"]*)"', table)[3::6]]
    coloc = pd.read_csv(run_dir / "co_localization.csv")
    assert z[0] == pytest.approx(coloc["z_score"].max()) and z == sorted(z, reverse=True)
    assert 'aria-sort="descending"' in table
    # the check can fail: the same page with a broken script is caught
    broken = tmp_path / "broken.html"
    broken.write_text(
        (run_dir / "report.html").read_text(encoding="utf-8").replace("</body>", "<script>noSuchFn();</script></body>")
    )
    _, console = chromium(broken, tmp_path)
    assert any("Uncaught ReferenceError: noSuchFn is not defined" in ln for ln in console)


def test_report_command(run_dir: Path, tmp_path: Path, capsys) -> None:
    from spatialmultiomics.cli import main

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "report.html").unlink()
    main(["report", str(copy), "--no-figures", "--title", "Section 3", "-o", str(tmp_path / "r.html")])
    assert capsys.readouterr().out.strip() == f"report: {tmp_path / 'r.html'}"
    text = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<title>Section 3</title>" in text
    assert text.count("<img ") == 5  # the figures already in copy/figures are embedded, not redrawn
    assert not (copy / "report.html").exists()
