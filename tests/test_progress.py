"""Progress bars as a person sees them in a terminal: log lines never join a bar's line, no bar is left behind."""

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import textwrap

SETUP = """
import logging, threading, time
from trtllm_kit.cli import setup_logging
setup_logging(False)
log = logging.getLogger("trtllm_kit.test")
"""


def run_in_terminal(code: str) -> str:
    """Run Python ``code`` with stdout/stderr on a 120-column pseudo-terminal; return the raw bytes it drew."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-c", SETUP + textwrap.dedent(code)], stdin=slave, stdout=slave,
                            stderr=slave, close_fds=True)
    os.close(slave)
    raw = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        raw += chunk
    os.close(master)
    assert proc.wait(timeout=60) == 0, raw.decode(errors="replace")
    return raw.decode(errors="replace")


def screen(raw: str) -> list[str]:
    """What the terminal shows once ``raw`` is drawn: CR returns to column 0, ESC[nA moves up, ESC[K clears."""
    lines, row, col = [[]], 0, 0
    for tok in re.findall(r"\x1b\[[0-9;]*[A-Za-z]|\r|\n|[^\x1b\r\n]", raw):
        if tok == "\r":
            col = 0
        elif tok == "\n":
            row, col = row + 1, 0
            lines += [[] for _ in range(row + 1 - len(lines))]
        elif tok.startswith("\x1b["):
            n = int(tok[2:-1]) if tok[2:-1].isdigit() else 1
            if tok[-1] == "A":
                row = max(0, row - n)
            elif tok[-1] == "K":
                del lines[row][col:]
        else:
            line = lines[row]
            line.extend(" " * (col - len(line)))
            line[col:col + 1] = [tok]
            col += 1
    return [s for s in ("".join(ln).rstrip() for ln in lines) if s]


def test_log_lines_during_a_bar_get_their_own_line():
    raw = run_in_terminal("""
        from trtllm_kit.utils.progress import progress_bar
        with progress_bar(6, "bench", unit="point") as bar:
            for i in range(4):
                bar.update(1)
                time.sleep(0.02)
                if i == 2:
                    log.warning("tiny-llama / trt: skipped: no GPU")
        log.info("after the sweep")
    """)
    assert "bench:" in raw  # a bar was drawn on the terminal...
    assert screen(raw) == ["warning: tiny-llama / trt: skipped: no GPU", "after the sweep"]  # ...and left no trace


def test_build_bars_close_and_heartbeat_lines_go_above_them():
    """TensorRT's progress monitor, driven as a build drives it: the last step runs long (the bar sat at 83%),
    the heartbeat logs from its own thread, and TensorRT never finishes the phase."""
    raw = run_in_terminal("""
        import types
        from trtllm_kit.engine.build_log import build_progress

        class IProgressMonitor:
            def __init__(self):
                pass

        trt = types.SimpleNamespace(IProgressMonitor=IProgressMonitor)
        with build_progress(trt, True) as monitor:
            monitor.phase_start("Building engine", None, 6)
            for step in range(5):
                monitor.step_complete("Building engine", step)
            monitor.phase_start("Building engine from subgraph", "Building engine", 1)
            beat = threading.Thread(target=lambda: log.info("build tiny-llama: still building, 30s elapsed"))
            beat.start()
            beat.join()
            time.sleep(0.05)
        log.info("build tiny-llama: writing and checking the engine (31s elapsed)")
    """)
    assert "83%" in raw and "Building engine from subgraph" in raw  # the long step says what it is doing
    assert screen(raw) == ["build tiny-llama: still building, 30s elapsed",
                           "build tiny-llama: writing and checking the engine (31s elapsed)"]


def test_no_bars_off_a_terminal(tmp_path):
    code = SETUP + textwrap.dedent("""
        from trtllm_kit.utils.progress import progress_bar
        with progress_bar(3, "bench") as bar:
            bar.update(1)
            log.warning("mid")
        log.info("after")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stderr == "warning: mid\nafter\n"
