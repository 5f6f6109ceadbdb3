"""Bad entries: :class:`DatasetError`, the ``on_error`` / ``missing_target`` checks and
the report that raises or logs the failed ``(id, reason)`` pairs."""
from __future__ import annotations

import logging
from collections.abc import Iterable

logger = logging.getLogger(__name__)


_MAX_LISTED = 10


class DatasetError(ValueError):
    """Entries of a dataset cannot be used.

    The first line of the message says how many entries failed and names the first;
    the following lines list up to ten ``id: reason`` pairs.

    Attributes
    ----------
    errors : list of (str, str)
        Every failed entry as ``(id, reason)``.
    """

    def __init__(self, message: str, errors: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.errors = list(errors)


def _check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error={on_error!r} is not allowed; use 'raise' or 'skip'")


def _check_missing_target(missing_target: str) -> None:
    if missing_target not in ("error", "nan"):
        raise ValueError(f"missing_target={missing_target!r} is not allowed; use 'error' or 'nan'")


def _report(errors: list[tuple[str, str]], on_error: str, what: str, total: int) -> None:
    """Raise a DatasetError listing ``errors`` or log them as skipped."""
    if not errors:
        return
    listing = "\n".join(f"  {ident}: {reason}" for ident, reason in errors[:_MAX_LISTED])
    if len(errors) > _MAX_LISTED:
        listing += f"\n  ... and {len(errors) - _MAX_LISTED} more"
    first_id, first_reason = errors[0]
    if on_error == "raise":
        raise DatasetError(
            f"{len(errors)} of {total} entries of {what} cannot be used "
            f"(first: {first_id}: {first_reason})\n{listing}\n"
            "Fix them, or pass on_error='skip' to drop them (they are then listed in "
            "df.attrs['errors']).",
            errors,
        )
    logger.warning("skipped %d of %d entries of %s:\n%s", len(errors), total, what, listing)
