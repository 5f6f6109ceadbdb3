"""The Materials Project summary endpoint through mp-api: chunked queries, retries and a
download cache."""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import re
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import pandas as pd
from tqdm.auto import tqdm

from .._atomic import atomic_write
from ._cache import CacheOption, _cache_folder, _parsed_frame, _StructureCache
from ._codec import _Entry, _structure_entry
from ._errors import _check_missing_target, _check_on_error, _report
from ._targets import _parse_targets, _Table

logger = logging.getLogger(__name__)


_MP_CACHE_FORMAT = 1


_DEFAULT_MP_ENDPOINT = "https://api.materialsproject.org/"


def _mp_key(api_key: str | None) -> str:
    key = api_key or os.environ.get("MP_API_KEY")
    if not key:
        raise ValueError(
            "no Materials Project API key: pass api_key=... or set the MP_API_KEY environment "
            "variable (get a key at https://next-gen.materialsproject.org/api)"
        )
    if len(key) != 32:
        raise ValueError(
            f"the Materials Project API key has {len(key)} characters; MP keys have 32 (check "
            "api_key / MP_API_KEY; new keys at https://next-gen.materialsproject.org/api)"
        )
    return key


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple, set)):
        items = [_jsonable(v) for v in value]
        return sorted(items, key=str) if isinstance(value, set) else items
    if hasattr(value, "value") and not isinstance(value, (int, float, str)):
        return _jsonable(value.value)  # enums
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _lookup(doc: Mapping, dotted: str) -> Any:
    value: Any = doc
    for part in dotted.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _mp_status(exc: Exception) -> int | None:
    match = re.search(r"status code (\d{3})", str(exc))
    return int(match.group(1)) if match else None


def load_materials_project(
    material_ids: Iterable[str] | None = None,
    criteria: Mapping[str, Any] | None = None,
    fields: Sequence[str] = ("formation_energy_per_atom",),
    *,
    api_key: str | None = None,
    endpoint: str | None = None,
    cache: CacheOption = True,
    refresh: bool = False,
    chunk_size: int = 500,
    retries: int = 3,
    retry_delay: float = 2.0,
    missing_target: Literal["error", "nan"] = "error",
    n_jobs: int | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    verbose: int = 0,
) -> pd.DataFrame:
    """Query the Materials Project summary endpoint through mp-api and cache the answer.

    The query goes through ``mp_api.client.MPRester(api_key, endpoint=endpoint)
    .materials.summary.search(material_ids=..., fields=[...], **criteria)``, one call per
    chunk of ``chunk_size`` material ids (or one call for a criteria-only query), with a
    progress bar and retries. Each chunk's documents are cached on disk under a name
    derived from the query (endpoint, ids, criteria, fields; never the API key), so a
    repeated call returns the same rows without touching the network (not even to
    construct ``MPRester``).

    Parameters
    ----------
    material_ids : iterable of str, optional
        Materials Project ids (``"mp-149"``, ...), as in the CGCNN tutorial. Rows come
        in this order; ids the server does not return are errors.
    criteria : mapping, optional
        Keyword arguments of ``SummaryRester.search``, e.g.
        ``{"formation_energy": (-5, 0), "num_elements": (1, 3), "is_stable": True}``. At
        least one of ``material_ids`` and ``criteria`` is needed (an empty query would
        download the whole database).
    fields : sequence of str, default=("formation_energy_per_atom",)
        Summary fields to return as target columns (dotted paths such as
        ``"symmetry.number"`` reach nested values); ``material_id`` and ``structure``
        are always requested.
    api_key : str, optional
        Materials Project API key (32 characters); default ``$MP_API_KEY``. Needed only
        when something must be downloaded.
    endpoint : str, optional
        API base URL; default ``$MP_API_ENDPOINT`` or ``https://api.materialsproject.org/``.
    cache : bool or str or path, default=True
        Keep downloaded documents in ``<cache>/materials-project`` (True:
        :func:`default_cache_dir`; False: no cache).
    refresh : bool, default=False
        Download again even if the query is cached.
    chunk_size : int, default=500
        Material ids per request.
    retries : int, default=3
        Extra attempts per chunk after a connection error or an HTTP 429 / 5xx answer
        (errors such as a rejected key or an unknown field are not retried).
    retry_delay : float, default=2.0
        Seconds before the first retry; doubled for each further one.
    missing_target, n_jobs, on_error, verbose
        As in :func:`load_cgcnn_folder`; ``verbose >= 1`` shows a progress bar over
        chunks.

    Returns
    -------
    pandas.DataFrame
        Indexed by material id (str, index name ``"id"``) with a ``structure`` column and
        one column per field.

    Raises
    ------
    ValueError
        No query; no API key (or not 32 characters) when a download is needed; a request
        that mp-api or the server rejects (unknown field or criterion, HTTP 4xx).
    PermissionError
        The server rejected the API key (HTTP 401 / 403).
    ConnectionError
        The server stayed unreachable or kept failing (HTTP 429 / 5xx) after ``retries``
        extra attempts.
    DatasetError
        Bad entries with ``on_error="raise"``: duplicate ids, ids the server did not
        return, a missing field value, an unreadable structure.

    Examples
    --------
    >>> df = load_materials_project(["mp-149", "mp-22862"], verbose=1)  # doctest: +SKIP
    """
    _check_on_error(on_error)
    _check_missing_target(missing_target)
    if isinstance(material_ids, str):
        material_ids = [material_ids]
    id_list = None if material_ids is None else [str(m).strip() for m in material_ids]
    criteria = dict(criteria or {})
    if not id_list and not criteria:
        raise ValueError(
            "give material_ids and/or criteria: an empty Materials Project query would "
            "download the whole database"
        )
    if isinstance(fields, str):
        fields = [fields]
    fields = [str(f) for f in fields]
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size={chunk_size!r} must be a positive integer")
    base = endpoint or os.environ.get("MP_API_ENDPOINT") or _DEFAULT_MP_ENDPOINT
    base = base if base.endswith("/") else base + "/"
    requested = list(
        dict.fromkeys(["material_id", "structure", *[f.split(".")[0] for f in fields]])
    )

    errors: list[tuple[str, str]] = []
    if id_list is not None:
        seen: set[str] = set()
        unique = []
        for mid in id_list:
            if mid in seen:
                errors.append((mid, "duplicate material id in material_ids; the first is kept"))
            else:
                seen.add(mid)
                unique.append(mid)
        _report(errors, on_error, "material_ids", len(id_list))
        chunks: list[list[str] | None] = [
            unique[i : i + int(chunk_size)] for i in range(0, len(unique), int(chunk_size))
        ]
    else:
        chunks = [None]

    folder = _cache_folder(cache, "materials-project")
    documents: list[dict] = []
    rester = None
    bar = tqdm(total=len(chunks), desc="Materials Project", unit="chunk", disable=verbose < 1)
    try:
        for chunk in chunks:
            query = {
                "format": _MP_CACHE_FORMAT,
                "endpoint": base,
                "material_ids": chunk,
                "criteria": _jsonable(criteria),
                "fields": requested,
            }
            digest = hashlib.sha256(json.dumps(query, sort_keys=True).encode()).hexdigest()[:32]
            path = folder / f"{digest}.json.gz" if folder is not None else None
            docs = None
            if path is not None and path.exists() and not refresh:
                try:
                    with gzip.open(path, "rt", encoding="utf-8") as handle:
                        stored = json.load(handle)
                    if stored.get("query") == query:
                        docs = stored["documents"]
                except (OSError, ValueError, KeyError) as exc:
                    logger.warning("ignoring the unreadable download cache %s: %s", path, exc)
            if docs is None:
                if rester is None:
                    rester = _connect_mp(_mp_key(api_key), base, retries, retry_delay)
                docs = _mp_search(
                    rester, chunk, criteria, requested, int(chunk_size), retries, retry_delay
                )
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with atomic_write(path, "wt", opener=gzip.open,
                                      encoding="utf-8") as handle:
                        json.dump({"query": query, "documents": docs}, handle)
            documents.extend(docs)
            bar.update(1)
    finally:
        bar.close()
        if rester is not None:
            rester.session.close()

    by_id: dict[str, dict] = {}
    for doc in documents:
        by_id.setdefault(str(doc.get("material_id")), doc)
    order = [m for c in chunks if c for m in c] if id_list is not None else list(by_id)
    table = _Table(names=fields, total=len(order))
    entries: list[_Entry] = []
    for mid in order:
        doc = by_id.get(mid)
        if doc is None:
            table.errors.append(
                (mid, f"not returned by the Materials Project ({base}) for this query")
            )
            continue
        parsed, reason = _parse_targets(
            mid, [_lookup(doc, f) for f in fields], fields, missing_target, ""
        )
        if reason:
            table.errors.append((mid, reason))
            continue
        entry = _structure_entry(mid, doc.get("structure"))
        if entry is None:
            table.errors.append((mid, "the document has no structure"))
            continue
        entries.append(entry)
        table.ids.append(mid)
        table.targets.append(parsed)
    what = f"the Materials Project query at {base}"
    _report(table.errors, on_error, what, table.total)
    return _parsed_frame(
        entries, _StructureCache(None, "", None), table, errors + table.errors,
        on_error=on_error, what=what, n_jobs=n_jobs, verbose=verbose, desc="building structures",
    )


def _is_transient(exc: Exception) -> bool | int:
    """True for failures worth retrying; the HTTP status (401/403) for a rejected key."""
    import requests

    if isinstance(exc, (requests.RequestException, OSError)):
        return True
    status = _mp_status(exc)
    if status in (401, 403):
        return status
    if status is not None:
        return status == 429 or status >= 500
    # mp-api wraps connection failures in MPRestError without a status code.
    text = str(exc)
    return any(s in text for s in ("Connection", "Max retries", "timed out", "Read timed"))


def _retrying(action: Any, what: str, retries: int, retry_delay: float) -> Any:
    """Run ``action()``; retry connection failures and HTTP 429 / 5xx answers."""
    import requests

    mp_error = _import_mp_client().core.MPRestError
    attempt = 0
    while True:
        try:
            return action()
        except (mp_error, requests.RequestException, OSError) as exc:
            verdict = _is_transient(exc)
            if verdict in (401, 403):
                raise PermissionError(
                    f"the Materials Project at {what} rejected the API key (HTTP {verdict}); "
                    "check api_key / MP_API_KEY"
                ) from exc
            if verdict is not True:
                raise ValueError(
                    f"the Materials Project request to {what} was rejected: {exc}"
                ) from exc
            if attempt >= retries:
                raise ConnectionError(
                    f"the Materials Project at {what} failed {attempt + 1} times; last error: {exc}. "
                    "Try again later, or raise retries="
                ) from exc
            delay = retry_delay * 2**attempt
            logger.warning("Materials Project request failed (%s); retrying in %.1f s", exc, delay)
            time.sleep(delay)
            attempt += 1


def _connect_mp(key: str, base: str, retries: int, retry_delay: float) -> Any:
    client = _import_mp_client()

    def connect() -> Any:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rester = client.MPRester(
                key, endpoint=base, use_document_model=False, mute_progress_bars=True
            )
        for warning in caught:  # e.g. the server's emmet version is older than the client's
            logger.info("mp-api: %s", warning.message)
        logger.info(
            "connected to the Materials Project at %s (database %s)", base, rester.db_version
        )
        return rester

    return _retrying(connect, base, retries, retry_delay)


def _import_mp_client() -> Any:
    from skcgcnn._optional import require

    return require("mp_api.client")


def _mp_search(
    rester: Any,
    chunk: list[str] | None,
    criteria: dict,
    requested: list[str],
    chunk_size: int,
    retries: int,
    retry_delay: float,
) -> list[dict]:
    def search() -> list[dict]:
        kwargs = dict(criteria)
        if chunk is not None:
            kwargs["material_ids"] = chunk
        # one page per chunk of ids; criteria-only queries are paged by the client
        page = min(len(chunk) if chunk else chunk_size, 1000)
        docs = rester.materials.summary.search(fields=requested, chunk_size=page, **kwargs)
        return [_plain(doc) for doc in docs]

    return _retrying(search, rester.endpoint, retries, retry_delay)


def _plain(doc: Any) -> dict:
    if isinstance(doc, Mapping):
        out = dict(doc)
    else:  # a pydantic document
        out = doc.model_dump()
    structure = out.get("structure")
    if structure is not None and not isinstance(structure, Mapping):
        out["structure"] = structure.as_dict()
    return json.loads(json.dumps(out, default=str))
