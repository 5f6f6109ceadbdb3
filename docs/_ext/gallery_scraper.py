"""A sphinx-gallery image scraper for the PNG files that skcgcnn's plot functions write.

skcgcnn's plots (:mod:`skcgcnn.reporting`, :func:`skcgcnn.run_benchmark`, ``tune``) are
written straight to PNG files, not left open in pyplot, so the default matplotlib scraper
does not see them. An example that keeps its output folder in a global ``OUT`` gets every
PNG that appears there shown below the code block that wrote it.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from sphinx_gallery.scrapers import figure_rst

_SHOWN: set[Path] = set()


def png_scraper(block: Any, block_vars: dict[str, Any], gallery_conf: dict[str, Any],
                **kwargs: Any) -> str:
    """Copy the PNGs new in the example's ``OUT`` folder into the gallery, in write order."""
    out = block_vars["example_globals"].get("OUT")
    if not isinstance(out, (str, Path)) or not Path(out).is_dir():
        return ""
    new = sorted((p for p in Path(out).rglob("*.png") if p.resolve() not in _SHOWN),
                 key=lambda p: (p.stat().st_mtime_ns, p.name))
    images = []
    for png, target in zip(new, block_vars["image_path_iterator"]):
        _SHOWN.add(png.resolve())
        shutil.copyfile(png, target)
        images.append(target)
    return figure_rst(images, gallery_conf["src_dir"]) if images else ""
