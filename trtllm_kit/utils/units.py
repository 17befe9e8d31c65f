"""Sizes as people read them (engine, weights and report tables share one format)."""

from __future__ import annotations


def size(n_bytes: int | None) -> str:
    """Bytes in GB (1e9), or MB below 1 GB: "13.48 GB", "0.47 MB"; "" for None."""
    if n_bytes is None:
        return ""
    return f"{n_bytes / 1e9:.2f} GB" if n_bytes >= 1e9 else f"{n_bytes / 1e6:.2f} MB"
