"""The projects the documentation links to (intersphinx), and storing their inventories.

    python docs/_ext/inventories.py      # (make docs-inventories) needs network

writes ``docs/_intersphinx/<name>.inv`` for each project; ``conf.py`` reads a stored file
in preference to the network, so that a build without network (CI) links as well.
"""
from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

SITES = {
    "python": "https://docs.python.org/3/",
    "numpy": "https://numpy.org/doc/stable/",
    "pandas": "https://pandas.pydata.org/docs/",
    "sklearn": "https://scikit-learn.org/stable/",
    "skorch": "https://skorch.readthedocs.io/en/stable/",
    "torch": "https://docs.pytorch.org/docs/stable/",
    "pymatgen": "https://pymatgen.org/",
    "optuna": "https://optuna.readthedocs.io/en/stable/",
}
STORE = Path(__file__).resolve().parents[1] / "_intersphinx"


def main() -> int:
    STORE.mkdir(exist_ok=True)
    failed = []
    for name, url in SITES.items():
        try:
            with urllib.request.urlopen(url + "objects.inv", timeout=30) as answer:
                (STORE / f"{name}.inv").write_bytes(answer.read())
            print(f"{name}: stored")
        except OSError as error:
            failed.append(name)
            print(f"{name}: {error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
