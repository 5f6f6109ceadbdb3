"""The documentation's own checks that need no Sphinx: the API reference lists every
public name, the internal-link checker of ``make docs`` finds broken links, and the
README's first snippet runs as written."""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import pkgutil
import re
from pathlib import Path

import pytest

import skcgcnn

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


def _public_modules() -> list[str]:
    names = ["skcgcnn"]
    for info in pkgutil.walk_packages(skcgcnn.__path__, "skcgcnn."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return names


def _public_names(module) -> list[str]:
    if hasattr(module, "__all__"):
        names = list(module.__all__)
        if module.__name__ == "skcgcnn":     # lazy re-exports, documented at their homes
            names = [n for n in names if n not in skcgcnn._LAZY and n != "__version__"]
        return names
    return [n for n, obj in vars(module).items() if not n.startswith("_")
            and (inspect.isclass(obj) or inspect.isfunction(obj))
            and obj.__module__ == module.__name__]


def _documented() -> dict[str, set[str]]:
    """Module -> names listed in docs/api.rst's autosummary tables."""
    listed: dict[str, set[str]] = {}
    module = None
    in_table = False
    for line in (DOCS / "api.rst").read_text().splitlines():
        if m := re.match(r"\.\. currentmodule:: (\S+)", line):
            module, in_table = m.group(1), False
        elif line.startswith(".. autosummary::"):
            in_table = True
        elif in_table and (m := re.match(r"   ([A-Za-z_][A-Za-z0-9_]*)$", line)):
            listed.setdefault(module, set()).add(m.group(1))
        elif line and not line.startswith(" "):
            in_table = False
    return listed


def test_api_reference_lists_every_public_name():
    listed = _documented()
    documented = {id(getattr(importlib.import_module(mod), name))
                  for mod, names in listed.items() for name in names}
    missing = [f"{mod}.{name}" for mod in _public_modules()
               for name in _public_names(importlib.import_module(mod))
               if id(getattr(importlib.import_module(mod), name)) not in documented]
    assert not missing, f"docs/api.rst does not list: {', '.join(missing)}"
    for name in ("StructureGraphTransformer", "CGCNNRegressor", "CGCNNClassifier",
                 "load_cgcnn_folder", "load_cif_table", "load_materials_project",
                 "load_matbench", "run_benchmark", "tune"):
        assert any(name in names for names in listed.values()), name


def test_api_reference_names_exist():
    for mod, names in _documented().items():
        module = importlib.import_module(mod)
        for name in names:
            assert hasattr(module, name), f"docs/api.rst lists {mod}.{name}, which is gone"


@pytest.fixture
def check_links():
    spec = importlib.util.spec_from_file_location("check_links", DOCS / "check_links.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_link_checker_finds_missing_pages_and_fragments(check_links, tmp_path, capsys):
    (tmp_path / "sub").mkdir()
    (tmp_path / "index.html").write_text(
        '<a href="sub/a.html#here">ok</a> <a href="sub/a.html#gone">bad anchor</a>'
        '<a href="missing.html">bad page</a> <a href="https://example.org/x">external</a>'
        '<a href="#top">ok</a><h1 id="top">t</h1><img src="img.png">')
    (tmp_path / "sub" / "a.html").write_text(
        '<section id="here"></section><a href="../index.html#top">ok</a>'
        '<a href="../sub/">dir</a>')
    (tmp_path / "sub" / "index.html").write_text("<p>sub</p>")
    broken = check_links.broken_links(tmp_path)
    assert sorted(broken) == [("index.html", "img.png"), ("index.html", "missing.html"),
                              ("index.html", "sub/a.html#gone")]
    assert check_links.main([str(tmp_path)]) == 1
    assert "index.html: broken link missing.html" in capsys.readouterr().err

    (tmp_path / "index.html").write_text('<a href="sub/a.html#here">ok</a><p id="top"></p>')
    assert check_links.main([str(tmp_path)]) == 0
    assert check_links.main([str(tmp_path / "sub" / "nothing")]) == 2


def _python_blocks(markdown: str) -> list[str]:
    """The code of the ```python blocks of a markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```$", markdown, flags=re.M | re.S)


def test_readme_first_snippet_runs_from_the_repository_root(monkeypatch, tmp_path, capsys):
    code = _python_blocks((REPO / "README.md").read_text())[0]
    if not (REPO.parent / "shared" / "data").is_dir():  # where the snippet reads it
        pytest.skip("../shared/data is not beside the clone")
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("SKCGCNN_CACHE", str(tmp_path / "cache"))  # not the home folder
    exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    mae = float(capsys.readouterr().out.strip().splitlines()[-1])
    # the test MAE it prints: 5 epochs learn (the mean predictor's is about 1 eV/atom)
    assert math.isfinite(mae) and 0 < mae < 0.8, mae
