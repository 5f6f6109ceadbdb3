"""Session-wide test settings."""
from __future__ import annotations

from ._ties import numpy_above_reference_kernels


def pytest_report_header(config) -> list[str]:
    """Say which numpy kernels run: the parity references were made with the AVX2 ones."""
    above = numpy_above_reference_kernels()
    if above:
        return [f"numpy kernels: {', '.join(above)} in use, not those of the parity "
                "references (AVX2); ties at the neighbour cut may differ: run `make test`"]
    return ["numpy kernels: AVX2 or lower, as the parity references"]
