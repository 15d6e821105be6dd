"""How slices and samples are split over ranks: contiguous, balanced ranges."""
from __future__ import annotations


def balanced_range(total: int, parts: int, index: int) -> tuple:
    """[start, stop) of part ``index`` when ``total`` items are cut into ``parts``
    contiguous pieces whose sizes differ by at most one (the larger ones first)."""
    if not 0 <= index < parts:
        raise ValueError(f"part {index} out of range for {parts} parts")
    base, extra = divmod(total, parts)
    start = index * base + min(index, extra)
    return start, start + base + (1 if index < extra else 0)
