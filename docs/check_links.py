"""Check the internal links of the built HTML site: every relative ``href`` and ``src``
must name a file of the build, and every ``#fragment`` an ``id`` in that file.

    python docs/check_links.py docs/_build/html

Exits 1 and lists the broken links (page, link) when there are any. External links
(with a scheme such as ``https:``) are not checked: the build machine has no network.
"""
from __future__ import annotations

import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name in ("id", "name"):
                self.ids.add(value)
            elif (name == "href" and tag in ("a", "link")) or (name == "src" and tag in
                                                                  ("img", "script")):
                self.links.append(value)


def broken_links(root: Path) -> list[tuple[str, str]]:
    """(page, link) of every internal link under ``root`` that leads nowhere."""
    pages: dict[Path, _Page] = {}
    for path in sorted(root.rglob("*.html")):
        if "_static" in path.relative_to(root).parts:   # the theme's template copies
            continue
        page = _Page()
        page.feed(path.read_text(encoding="utf-8"))
        pages[path.resolve()] = page
    broken = []
    for path, page in pages.items():
        for link in page.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith(("mailto:", "javascript:")):
                continue
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                broken.append((str(path.relative_to(root.resolve())), link))
            elif parts.fragment and target.suffix == ".html":
                if unquote(parts.fragment) not in pages[target].ids:
                    broken.append((str(path.relative_to(root.resolve())), link))
    return broken


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0] if args else "docs/_build/html")
    if not (root / "index.html").is_file():
        print(f"{root}/index.html not found: build the site first (make docs)",
              file=sys.stderr)
        return 2
    broken = broken_links(root)
    for page, link in broken:
        print(f"{page}: broken link {link}", file=sys.stderr)
    print(f"internal links: {len(broken)} broken")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
