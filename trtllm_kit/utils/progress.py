"""Progress bars that only draw on a terminal, and never garble the log around them."""

from __future__ import annotations

import contextlib
import logging
import sys


def bars_enabled(enabled: bool = True) -> bool:
    """Bars draw only when asked and stderr is a terminal (a log file or a pipe gets log lines only)."""
    return enabled and sys.stderr.isatty()


def new_bar(total: int, desc: str, unit: str = "it", enabled: bool = True):
    """A tqdm bar on stderr (disabled off a terminal) that clears its line when closed."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not bars_enabled(enabled), leave=False,
                dynamic_ncols=True)


def _console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stdout, sys.stderr)


@contextlib.contextmanager
def logs_above_bars(active: bool = True):
    """While bars are drawn, log lines to the console go through ``tqdm.write``: each is printed on its own
    line above the bars, never appended to a bar's line (the build's heartbeat logs from another thread).

    Only loggers that already print to the console (the CLI's ``trtllm_kit`` logger, or the root logger) are
    redirected, so a library user's logging is otherwise untouched.
    """
    loggers = [lg for lg in (logging.getLogger("trtllm_kit"), logging.getLogger()) if any(map(_console, lg.handlers))]
    if not active or not loggers:
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm(loggers=loggers):
        yield


@contextlib.contextmanager
def progress_bar(total: int, desc: str, unit: str = "it", enabled: bool = True):
    """A tqdm bar on stderr when it is a terminal (and ``enabled``); a no-op object otherwise.

    The bar is closed (and its line cleared) when the block ends, so the next log line starts on a
    fresh line even when the work stopped short of ``total``; log lines during the block go above it.
    """
    bar = new_bar(total, desc, unit, enabled)
    try:
        with logs_above_bars(bars_enabled(enabled)):
            yield bar
    finally:
        bar.close()
