"""matbench tasks through matminer's ``load_dataset``, or from a local copy of the file."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import pandas as pd

from .._defaults import default_cache_dir
from ._cache import PathLike
from ._errors import _check_on_error
from ._tables import _frame_from_table, _read_json_table


def load_matbench(
    task: str,
    *,
    data_home: PathLike | None = None,
    path: PathLike | None = None,
    download: bool = True,
    timeout: float = 30.0,
    n_jobs: int | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    verbose: int = 0,
) -> pd.DataFrame:
    """Load a matbench task through matminer's ``load_dataset`` (downloads if needed).

    Parameters
    ----------
    task : str
        A matbench dataset with structures, with or without the ``matbench_`` prefix:
        ``"mp_e_form"``, ``"mp_gap"``, ``"mp_is_metal"``, ``"log_gvrh"``, ``"log_kvrh"``,
        ``"dielectric"``, ``"jdft2d"``, ``"perovskites"``, ``"phonons"``.
    data_home : str or path, optional
        Folder of the ``matbench_<task>.json.gz`` file (downloaded there when missing).
        Default ``$MATMINER_DATA``, else ``<cache>/matbench`` under
        :func:`default_cache_dir`.
    path : str or path, optional
        A local copy of the dataset file (matminer's ``.json.gz``); read directly, without
        matminer's download machinery.
    download : bool, default=True
        Download the file when it is not in ``data_home``.
    timeout : float, default=30.0
        Seconds to wait for the download server to answer before giving up.
    n_jobs, on_error, verbose
        As in :func:`load_cgcnn_folder`.

    Returns
    -------
    pandas.DataFrame
        Indexed by the dataset's row number as str (index name ``"id"``), with a
        ``structure`` column and the task's target column under its matbench name (e.g.
        ``e_form``).

    Raises
    ------
    ConnectionError
        The file is not local and cannot be downloaded; the message says where to put a
        local copy.
    ValueError
        Unknown task, or a composition-only task (CGCNN needs structures).
    """
    _check_on_error(on_error)
    name = task if task.startswith("matbench_") else f"matbench_{task}"
    if path is not None:
        local = Path(path).expanduser()
        if not local.is_file():
            raise FileNotFoundError(f"no matbench file at {local}")
        return _matbench_frame(_read_json_table(local), name, str(local), n_jobs, on_error, verbose)

    from skcgcnn._optional import require

    load_dataset = require("matminer.datasets").load_dataset
    info = require("matminer.datasets.utils")._load_dataset_dict()
    if name not in info:
        known = sorted(k for k in info if k.startswith("matbench_"))
        raise ValueError(f"unknown matbench task {task!r}; known tasks: {', '.join(known)}")
    meta = info[name]
    if "structure" not in meta.get("columns", {}):
        raise ValueError(f"{name} has compositions, not structures; CGCNN needs crystal structures")
    home = Path(
        data_home or os.environ.get("MATMINER_DATA") or default_cache_dir() / "matbench"
    ).expanduser()
    file = home / f"{name}.{meta['file_type']}"
    url = meta["url"]
    how_to = (
        f"To use a local copy, download {url} on a machine with network access and either "
        f"put it at {file} (or pass data_home=<its folder>) or pass path=<the file>."
    )
    if not file.exists():
        if not download:
            raise FileNotFoundError(f"{name} is not at {file} and download=False. {how_to}")
        _check_reachable(url, timeout, name, how_to)
    existed = file.exists()
    home.mkdir(parents=True, exist_ok=True)
    try:
        df = load_dataset(name, data_home=str(home), download_if_missing=download)
    except Exception as exc:  # noqa: BLE001 - matminer raises many kinds on a failed download
        if not existed and file.exists():
            file.unlink()  # do not leave a partial download behind
        raise ConnectionError(f"could not load {name} through matminer ({exc}). {how_to}") from exc
    return _matbench_frame(df, name, str(file), n_jobs, on_error, verbose)


def _check_reachable(url: str, timeout: float, name: str, how_to: str) -> None:
    import requests

    try:
        requests.head(url, timeout=(timeout, timeout), allow_redirects=False)
    except requests.RequestException as exc:
        raise ConnectionError(
            f"cannot download {name}: {url} is unreachable ({type(exc).__name__}). {how_to}"
        ) from exc


def _matbench_frame(
    raw: pd.DataFrame, name: str, what: str, n_jobs: int | None, on_error: str, verbose: int
) -> pd.DataFrame:
    if "structure" not in raw.columns:
        raise ValueError(f"{what} has no 'structure' column; CGCNN needs crystal structures")
    targets = [c for c in raw.columns if c != "structure"]
    raw = raw.copy()
    raw.index = (
        [str(i) for i in range(len(raw))]
        if isinstance(raw.index, pd.RangeIndex)
        else [str(i) for i in raw.index]
    )
    raw.insert(0, "__id__", list(raw.index))
    return _frame_from_table(
        raw.reset_index(drop=True),
        what=what,
        source_key=None,
        source_stamp=None,
        structure_column="structure",
        id_column="__id__",
        target_columns=targets,
        ids=None,
        limit=None,
        missing_target="error",
        n_jobs=n_jobs,
        on_error=on_error,
        cache=False,
        verbose=verbose,
    )
