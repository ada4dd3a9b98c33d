"""MkDocs hooks for the documentation site (``mkdocs build --strict``; see mkdocs.yml).

* Pages listed in the navigation that do not exist yet are dropped, so the navigation can name every planned page.
* ``<!-- cli-reference -->`` in a page is replaced by the ``--help`` text of every command, taken from the CLI
  itself, so the reference never drifts from the code.
* ``<!-- api-reference -->`` is replaced by one mkdocstrings block per public function and class of each
  namespace (its ``__all__``), found where it is defined, so new functions appear without editing the page.
* Links from a page to a file of the repository outside ``docs/`` (``../benchmarks/figures/x.png``) are
  rewritten to a copy of that file in the site, so images made by the benchmarks show on the site too.
* ``<!-- demo-figures -->`` in a page is replaced by the figures of a real run of the built-in demo (the seed
  paper's benchmark), drawn at build time and added to the site as PNG files.
"""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path

log = logging.getLogger("mkdocs.hooks.spatialmultiomics")

_FIGURES: dict[str, bytes] = {}
_CAPTIONS: list[tuple[str, str, str]] = []


def _prune(items, docs_dir: Path):
    out = []
    for item in items:
        if isinstance(item, dict):
            ((title, value),) = item.items()
            if isinstance(value, list):
                value = _prune(value, docs_dir)
                if value:
                    out.append({title: value})
            elif (docs_dir / value).is_file():
                out.append(item)
            else:
                log.info("nav: %s is not written yet; left out", value)
        elif (docs_dir / item).is_file():
            out.append(item)
    return out


def on_config(config):
    config["nav"] = _prune(config["nav"], Path(config["docs_dir"]))
    return config


def _cli_reference() -> str:
    import click

    from spatialmultiomics.cli import cli

    parts = []
    ctx = click.Context(cli, info_name="spatialmultiomics", max_content_width=110, terminal_width=110)
    parts.append("## spatialmultiomics\n\n```text\n" + cli.get_help(ctx) + "\n```\n")
    for name in sorted(cli.commands):
        command = cli.commands[name]
        sub = click.Context(
            command, info_name=f"spatialmultiomics {name}", parent=ctx, max_content_width=110, terminal_width=110
        )
        parts.append(f"## spatialmultiomics {name}\n\n```text\n" + command.get_help(sub) + "\n```\n")
    return "\n".join(parts)


#: (namespace, title, one-line description) in page order
_NAMESPACES = [
    ("spatialmultiomics", "Pipeline", "the whole analysis in one call"),
    ("spatialmultiomics.io", "smo.io: reading and writing", "one reader per platform; coordinates in µm"),
    ("spatialmultiomics.align", "smo.align: one set of observations", "ids, cell matching, spots, registration"),
    ("spatialmultiomics.pp", "smo.pp: preprocessing", "per-modality normalisation, HVG, block weights"),
    ("spatialmultiomics.factorize", "smo.factorize: joint NMF", "X ≈ W H over all modalities"),
    ("spatialmultiomics.annotate", "smo.annotate: naming factors and cells", "marker genes and proteins"),
    ("spatialmultiomics.spatial", "smo.spatial: graphs, niches, co-localization", "exact join-count statistics"),
    ("spatialmultiomics.cohort", "smo.cohort: many samples, conditions", "one model, tests with the sample as unit"),
    ("spatialmultiomics.pl", "smo.pl: figures", "read stored results, never recompute"),
    ("spatialmultiomics.report", "smo.report: the HTML report", "one self-contained page"),
    ("spatialmultiomics.datasets", "smo.datasets: built-in data", "known truth for testing and demos"),
]


def _api_reference() -> str:
    import importlib
    import inspect

    parts = []
    for ns, title, about in _NAMESPACES:
        module = importlib.import_module(ns)
        parts.append(f"## {title}\n\n*{about}*\n")
        names = [n for n in module.__all__ if n not in ("__version__",)]
        if ns == "spatialmultiomics":
            names = ["run_pipeline", "PipelineResult", "InputError", "Keys"]
        for name in names:
            obj = getattr(module, name)
            if inspect.ismodule(obj) or not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            parts.append(f"::: {obj.__module__}.{obj.__qualname__}\n")
    return "\n".join(parts)


def _demo_figures() -> None:
    if _FIGURES:
        return
    import spatialmultiomics as smo
    from spatialmultiomics import pl
    from spatialmultiomics.pl._save import figure_specs

    mdata = smo.datasets.paper_benchmark(seed=0)
    res = smo.run_pipeline(mdata["rna"], mdata["protein"], n_factors=4, markers=dict(mdata.uns["markers"]), seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        written = pl.save_figures(res.mdata, tmp, formats=("png",), dpi=90)
        specs = {s.name: s for s in figure_specs()}
        for name, paths in written.items():
            _FIGURES[f"img/demo/{name}.png"] = Path(paths[0]).read_bytes()
            _CAPTIONS.append((name, specs[name].title, specs[name].caption))


_OUTSIDE = re.compile(r"\]\((\.\./[^)\s]+)\)")


def _outside_links(docs_dir: Path) -> dict[str, Path]:
    """``{link as written: file}`` for links of the pages to existing repository files outside ``docs/``."""
    root = docs_dir.parent.resolve()
    found = {}
    for page in docs_dir.rglob("*.md"):
        for link in _OUTSIDE.findall(page.read_text(encoding="utf-8")):
            target = (page.parent / link).resolve()
            if target.is_file() and root in target.parents and docs_dir.resolve() not in target.parents:
                found[link] = target
    return found


def on_files(files, config):
    from mkdocs.structure.files import File

    _demo_figures()
    for uri, content in _FIGURES.items():
        files.append(File.generated(config, uri, content=content))
    docs_dir = Path(config["docs_dir"])
    for target in set(_outside_links(docs_dir).values()):
        uri = "repo/" + target.relative_to(docs_dir.parent.resolve()).as_posix()
        files.append(File.generated(config, uri, abs_src_path=str(target)))
    return files


def on_page_markdown(markdown, page, config, files):
    if "<!-- cli-reference -->" in markdown:
        markdown = markdown.replace("<!-- cli-reference -->", _cli_reference())
    docs_dir = Path(config["docs_dir"])
    root = docs_dir.parent.resolve()
    depth = page.file.src_uri.count("/")
    for link, target in _outside_links(docs_dir).items():
        copy = "../" * depth + "repo/" + target.relative_to(root).as_posix()
        markdown = markdown.replace(f"]({link})", f"]({copy})")
    if "<!-- api-reference -->" in markdown:
        markdown = markdown.replace("<!-- api-reference -->", _api_reference())
    if "<!-- demo-figures -->" in markdown:
        depth = page.file.src_uri.count("/")
        prefix = "../" * depth
        blocks = [
            f"### {title}\n\n![{title}]({prefix}img/demo/{name}.png)\n\n*{caption}*\n"
            for name, title, caption in _CAPTIONS
        ]
        markdown = markdown.replace("<!-- demo-figures -->", "\n".join(blocks))
    return markdown
