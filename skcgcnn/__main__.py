"""``python -m skcgcnn``: the ``skcgcnn`` command line."""
from __future__ import annotations

from skcgcnn.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
