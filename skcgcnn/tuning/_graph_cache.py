from ..graph._cache import GraphCache, _file_lock, _site_numbers, structures_fingerprint  # noqa: F401  (moved to skcgcnn.graph; re-export removed at the merge)
