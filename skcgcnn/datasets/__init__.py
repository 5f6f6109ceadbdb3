"""Dataset loaders: CGCNN folders and archives, CIF tables, Materials Project, matbench.

Every loader returns a :class:`pandas.DataFrame` indexed by the entry id (a string,
index name ``"id"``) with a ``structure`` column holding
:class:`pymatgen.core.Structure` objects and one float column per target. Entries that
cannot be used (an unreadable CIF, a missing or infinite target, a duplicate id, an id
without a CIF, ...) are reported with their ids: ``on_error="raise"`` (the default)
raises a :class:`DatasetError` that lists them, ``on_error="skip"`` drops them, logs a
warning and lists them as ``(id, reason)`` pairs in ``df.attrs["errors"]``.

Parsing CIFs with pymatgen is slow (thousands of atoms per second), so the file-based
loaders parse in parallel (``n_jobs``) and keep the parsed structures in a compact cache
(lattice matrices, atomic numbers, oxidation states, fractional coordinates and site
labels in one ``.npz`` file per data source). A second load rebuilds the structures from
that cache without parsing. Entries are checked against a digest of the bytes of their
file (or of the archive / table that holds them), so an edited file is parsed again,
even one rewritten with the same size and its old modification time. The cache lives in
``$SKCGCNN_CACHE`` or ``~/.cache/skcgcnn`` (never the working directory); pass
``cache=False`` to disable it or ``cache=<dir>`` to choose the folder.

Structures are parsed exactly as the original CGCNN does (``Structure.from_file``; CIF
text from archives and tables goes through ``Structure.from_str(text, fmt="cif")``, the
same parser), and the cache restores the same lattice matrix, species, fractional
coordinates and labels bit for bit; structures that the compact form cannot hold
(disordered sites, site properties, ...) are cached as pymatgen JSON instead.  With
gemmi installed (``pip install skcgcnn[fast]``), plain P1 CIFs are read by the fast
reader of :mod:`skcgcnn._cif` instead, about 12 times faster, into the same structures
(equal to the bit on all 36,737 Materials Project CIFs of mp-formation-energy-36737);
the other files still go to pymatgen, and one log line counts both
(``cif_reader=`` or ``$SKCGCNN_CIF_READER`` choose).
"""

from __future__ import annotations

from .._defaults import default_cache_dir
from ._cgcnn import list_cgcnn_folder, load_cgcnn_folder
from ._errors import DatasetError
from ._matbench import load_matbench
from ._materials_project import load_materials_project
# seeded subsets and target choice (the --limit rule), outside __all__ as before
from ._subsets import id_prop_ids, sample_rows, structures_and_target, subset_ids  # noqa: F401
from ._tables import load_cif_table

__all__ = [
    "DatasetError",
    "default_cache_dir",
    "list_cgcnn_folder",
    "load_cgcnn_folder",
    "load_cif_table",
    "load_materials_project",
    "load_matbench",
]
