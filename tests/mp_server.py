"""A small stand-in for the Materials Project API, served on 127.0.0.1 for tests.

It answers the two endpoints that ``mp_api.client.MPRester(...).materials.summary.search``
calls (read from the installed mp-api client, version 0.46):

``GET /heartbeat``
    Called (once per endpoint, the client caches it) when ``MPRester`` and each of its
    resters are constructed. The client reads ``version`` (the server's emmet version,
    compared with the client's minimum), ``db_version`` and
    ``access_controlled_batch_ids``.
``GET /materials/summary/``
    The search itself. Query parameters sent by the client: ``material_ids``
    (comma-separated), ``_fields`` (comma-separated), ``_limit``, ``_skip`` (pagination),
    ``_all_fields``, range filters ``<field>_min`` / ``<field>_max``, and list filters
    such as ``elements`` / ``chemsys`` / ``formula``. The answer is
    ``{"data": [...], "meta": {"total_doc": N, ...}}``; the client pages with
    ``_skip`` until it holds ``meta.total_doc`` documents.

Like the real service, the summary endpoint needs the ``x-api-key`` header (the
heartbeat does not); a wrong key gets HTTP 401. Unsupported query parameters get
HTTP 400 rather than being ignored silently. ``fail_next`` makes the next summary
requests fail with HTTP 503, to test retries.

This module is test infrastructure (it lives in tests/, not in the package): it has no
dependency beyond the standard library and pymatgen, and it never touches the network
beyond the loopback interface.
"""

from __future__ import annotations

import csv
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["MPTestServer", "build_summary_documents"]

_LIST_FILTERS = ("elements", "exclude_elements", "chemsys", "formula")


def _read_headerless_csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return [[field.strip() for field in row] for row in csv.reader(handle) if row]


def _number_or_none(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def build_summary_documents(data_dir: str | Path, limit: int | None = None) -> list[dict]:
    """Build Materials-Project-shaped summary documents from the shared MP data.

    Parameters
    ----------
    data_dir : str or Path
        The ``mp-formation-energy-36737`` folder: ``material_id_hash.csv`` gives the mp
        ids, ``id_prop_multi.csv`` the properties and ``sample-500/<id>.cif`` the
        structures (only the 500 crystals of ``sample-500`` get a document).
    limit : int, optional
        Keep only the first ``limit`` documents (in ``sample-500/id_prop.csv`` order).

    Returns
    -------
    list of dict
        One document per crystal with the fields ``material_id``, ``structure`` (a
        pymatgen ``Structure.as_dict()``), ``formation_energy_per_atom``, ``band_gap``,
        ``efermi``, ``volume``, ``total_magnetization``, ``nsites``, ``elements``,
        ``nelements``, ``chemsys``, ``formula_pretty``, ``density`` and ``deprecated``.
    """
    from pymatgen.core import Structure

    data_dir = Path(data_dir)
    mp_ids = dict(_read_headerless_csv(data_dir / "material_id_hash.csv"))
    props = {row[0]: row[1:] for row in _read_headerless_csv(data_dir / "id_prop_multi.csv")}
    sample = data_dir / "sample-500"
    ids = [row[0] for row in _read_headerless_csv(sample / "id_prop.csv")]
    if limit is not None:
        ids = ids[:limit]
    docs = []
    for local_id in ids:
        structure = Structure.from_file(sample / f"{local_id}.cif")
        e_form, gap, efermi, volume, magnetization = props[local_id]
        elements = sorted({el.symbol for el in structure.composition.elements})
        docs.append(
            {
                "material_id": mp_ids[local_id],
                "structure": structure.as_dict(),
                "formation_energy_per_atom": _number_or_none(e_form),
                "band_gap": _number_or_none(gap),
                "efermi": _number_or_none(efermi),
                "volume": _number_or_none(volume),
                "total_magnetization": _number_or_none(magnetization),
                "nsites": len(structure),
                "elements": elements,
                "nelements": len(elements),
                "chemsys": "-".join(elements),
                "formula_pretty": structure.composition.reduced_formula,
                "density": float(structure.density),
                "deprecated": False,
            }
        )
    return docs


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        return  # keep test output quiet

    def _send(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/")
        params = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        owner = self.server.owner
        with owner._lock:
            owner.requests.append((path, dict(params)))
        if path == "/heartbeat":
            self._send(200, owner.heartbeat())
            return
        if path != "/materials/summary":
            self._send(404, {"detail": "Not Found"})
            return
        if self.headers.get("x-api-key") != owner.api_key:
            self._send(401, {"detail": "Invalid or missing API key"})
            return
        with owner._lock:
            failing = owner.fail_next > 0
            if failing:
                owner.fail_next -= 1
        if failing:
            self._send(503, {"detail": "Service temporarily unavailable"})
            return
        status, payload = owner.search(params)
        self._send(status, payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: MPTestServer


class MPTestServer:
    """Serve summary documents on ``http://127.0.0.1:<ephemeral port>/``.

    Parameters
    ----------
    documents : list of dict
        Documents as built by :func:`build_summary_documents`.
    api_key : str
        The key the summary endpoint accepts (Materials Project keys are 32 characters).
    db_version : str, default="2025.09.25"
        Reported by the heartbeat.
    emmet_version : str, default="0.87.3"
        Reported by the heartbeat as ``version``; the client warns if it is older than
        its minimum.
    max_limit : int, default=1000
        Largest page the server returns (the real service caps ``_limit`` too).

    Attributes
    ----------
    endpoint : str
        Base URL to pass as ``MPRester(endpoint=...)``.
    requests : list of (str, dict)
        Every request received: path and query parameters.
    fail_next : int
        Number of upcoming summary requests to answer with HTTP 503.

    Examples
    --------
    >>> with MPTestServer(docs, api_key="a" * 32) as server:  # doctest: +SKIP
    ...     MPRester("a" * 32, endpoint=server.endpoint).materials.summary.search(...)
    """

    def __init__(
        self,
        documents: list[dict],
        api_key: str,
        db_version: str = "2025.09.25",
        emmet_version: str = "0.87.3",
        max_limit: int = 1000,
    ) -> None:
        self.documents = list(documents)
        self.api_key = api_key
        self.db_version = db_version
        self.emmet_version = emmet_version
        self.max_limit = max_limit
        self.requests: list[tuple[str, dict]] = []
        self.fail_next = 0
        self._numeric = {
            key
            for doc in self.documents
            for key, value in doc.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        }
        self._lock = threading.Lock()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> MPTestServer:
        """Bind to an ephemeral port on 127.0.0.1 and serve in a daemon thread."""
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> MPTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the server is not running; call start() first")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def summary_requests(self) -> list[dict]:
        """Query parameters of the summary requests received so far."""
        with self._lock:
            return [params for path, params in self.requests if path == "/materials/summary"]

    # -- endpoints -------------------------------------------------------------------
    def heartbeat(self) -> dict:
        return {
            "status": "OK",
            "version": self.emmet_version,
            "db_version": self.db_version,
            "access_controlled_batch_ids": [],
        }

    def search(self, params: dict[str, str]) -> tuple[int, dict]:
        docs = self.documents
        for key, value in params.items():
            if key.startswith("_"):
                continue
            if key == "material_ids":
                wanted = set(value.split(","))
                docs = [d for d in docs if d["material_id"] in wanted]
            elif key.endswith(("_min", "_max")) and key[:-4] in self._numeric:
                field, bound = key[:-4], float(value)
                if key.endswith("_min"):
                    docs = [d for d in docs if d.get(field) is not None and d[field] >= bound]
                else:
                    docs = [d for d in docs if d.get(field) is not None and d[field] <= bound]
            elif key in ("elements", "exclude_elements"):
                symbols = set(value.split(","))
                keep = (
                    (lambda d: symbols <= set(d["elements"]))
                    if key == "elements"
                    else (lambda d: not symbols & set(d["elements"]))
                )
                docs = [d for d in docs if keep(d)]
            elif key == "chemsys":
                systems = {"-".join(sorted(s.split("-"))) for s in value.split(",")}
                docs = [d for d in docs if d["chemsys"] in systems]
            elif key == "formula":
                formulas = set(value.split(","))
                docs = [d for d in docs if d["formula_pretty"] in formulas]
            elif key == "deprecated":
                flag = value.lower() == "true"
                docs = [d for d in docs if d["deprecated"] == flag]
            else:
                return 400, {
                    "detail": f"query parameter {key!r} is not supported by this test server"
                }
        total = len(docs)
        skip = int(params.get("_skip", 0))
        limit = min(int(params.get("_limit", 100)), self.max_limit)
        page = docs[skip : skip + limit]
        if params.get("_fields") and params.get("_all_fields", "false").lower() != "true":
            fields = params["_fields"].split(",")
            page = [{f: d[f] for f in fields if f in d} for d in page]
        return 200, {
            "data": page,
            "meta": {
                "api_version": self.emmet_version,
                "total_doc": total,
                "max_limit": self.max_limit,
            },
        }
