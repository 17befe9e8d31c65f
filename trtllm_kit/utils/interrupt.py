"""Ctrl-C that stops native work which never returns to Python (a TensorRT build) and leaves nothing.

TensorRT 8.6 builds with the GIL released and swallows exceptions raised in its logger callback, so a
KeyboardInterrupt would only surface after the engine was written. ``hard_interrupt`` watches SIGINT
from a helper thread (through ``signal.set_wakeup_fd``, which the C-level handler writes at once,
whatever the main thread is doing): on Ctrl-C it removes the given partial output, prints one line
and exits with status 130.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
from pathlib import Path


@contextlib.contextmanager
def hard_interrupt(partial: Path, what: str):
    """Within the block, Ctrl-C deletes ``partial`` (an ``atomic_dir``'s temporary directory, with the parents made
    for it) and exits 130 immediately (main thread only)."""
    from trtllm_kit.utils.fs import remove_partial

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    r, w = os.pipe()
    stop_r, stop_w = os.pipe()
    os.set_blocking(w, False)
    old_fd = signal.set_wakeup_fd(w)
    old_handler = signal.getsignal(signal.SIGINT)
    if not callable(old_handler):  # the wakeup fd is written only for signals with a Python handler
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def watch():
        while True:
            ready, _, _ = select.select([r, stop_r], [], [])
            if stop_r in ready:
                return
            data = os.read(r, 64)
            for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
                if sig in data:
                    remove_partial(partial)  # and the parent directories made for it
                    sys.stderr.write(f"\ninterrupted: {what} stopped; nothing was written\n")
                    sys.stderr.flush()
                    os._exit(code)

    thread = threading.Thread(target=watch, name="trtllm-kit-interrupt", daemon=True)
    thread.start()
    try:
        yield
    finally:
        os.write(stop_w, b"x")
        thread.join()
        signal.set_wakeup_fd(old_fd)
        signal.signal(signal.SIGINT, old_handler if old_handler is not None else signal.default_int_handler)
        for fd in (r, w, stop_r, stop_w):
            os.close(fd)
