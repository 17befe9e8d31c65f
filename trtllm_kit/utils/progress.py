"""Progress bars that only draw on a terminal, and never garble the log around them."""

from __future__ import annotations

import contextlib
import sys


@contextlib.contextmanager
def progress_bar(total: int, desc: str, unit: str = "it", enabled: bool = True):
    """A tqdm bar on stderr when it is a terminal (and ``enabled``); a no-op object otherwise.

    The bar is closed (and its line finished) when the block ends, so the next log line starts on a
    fresh line even when the work stopped short of ``total``.
    """
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not (enabled and sys.stderr.isatty()),
               leave=False, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()
