"""A TensorRT build as it runs: its phases and elapsed time on every TensorRT version (8.6 has no progress
monitor: a heartbeat reads its log), per-profile times for ``engine.json``, progress bars where TensorRT has
``IProgressMonitor`` (>= 10, RTX), and TensorRT's messages collected for ``build.log`` and error reports."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import time

from trtllm_kit.utils.progress import bars_enabled, logs_above_bars, new_bar

log = logging.getLogger(__name__)
HEARTBEAT_S = 30.0
VERBOSE_LOG = bool(os.environ.get("TRTLLM_KIT_TRT_VERBOSE"))  # keep TensorRT's verbose messages in build.log


_PROFILE = re.compile(r"Constructing optimization profile number (\d+)")  # TensorRT 8.6, verbose
_RUNNER = re.compile(r"Timing Runner: (.*?)(?: \[profile (\d+)\])? \((\w+)\[0x[0-9a-f]+\]\)$")


def build_stage(msg: str) -> str | None:
    """What a TensorRT 8.6+ verbose "Timing Runner" message says the builder is doing, for the heartbeat.

    Returns:
        e.g. "profile 1: Myelin compiling {ForeignNode[c_zero...logits/node]}" (a fused graph: minutes at 7B
        widths), "profile 0: timing kv_attention.3 (PluginV2)", or None for any other message. Profiles are
        numbered as TensorRT indexes them (``inspect``'s numbers; 8.6 suffixes the layers of profile N > 0 with
        "[profile N]").
    """
    m = _RUNNER.search(msg)
    if not m:
        return None
    node, profile, runner = m.group(1), int(m.group(2) or 0), m.group(3)
    if runner == "Myelin":
        return f"profile {profile}: Myelin compiling {node[:70]}"
    return f"profile {profile}: timing {node[:70]} ({runner})"


def profile_phases(marks: dict[str, float], end: float) -> dict[str, float]:
    """Seconds TensorRT spent on each optimization profile.

    Args:
        marks: ``perf_counter`` times keyed "profile N" (TensorRT's index, from 0): when TensorRT 8.6 logged
            "Constructing optimization profile number N" (verbose), or else its first "Timing Runner" line for it.
        end: when the build returned (``perf_counter``).

    Returns:
        e.g. {"TensorRT profile 0 (tactics, Myelin)": 56.2, "TensorRT profile 1 (tactics, Myelin)": 68.9}: each
        from its start to the next one's (the last to ``end``, so it includes writing the plan); empty when
        TensorRT logged neither (TensorRT >= 10 and RTX report progress through IProgressMonitor instead).
    """
    starts = sorted((t, k) for k, t in marks.items() if k.startswith("profile "))
    ends = [t for t, _ in starts[1:]] + [end]
    return {f"TensorRT {k} (tactics, Myelin)": round(e - t, 2) for (t, k), e in zip(starts, ends)}


def collecting_logger(trt):
    class CollectingLogger(trt.ILogger):
        """Keeps TensorRT's errors (so a failed build can say what caused it) and its latest info message
        (the build phase the heartbeat reports); warnings go to the log once each."""

        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.last_info = ""
            self.stage = ""  # the latest "Timing Runner" (verbose), e.g. a Myelin compile and its profile
            self.marks: dict[str, float] = {}  # "profile N": when TensorRT started on it (profile_phases)
            self.lines: list[str] = []
            self._warned: set[str] = set()
            # TensorRT 8.6 times a Myelin graph with a local cache and stores none of it in the shared one
            # ("Local timing cache in use. Profiling results in this builder pass will not be stored."): seen on
            # every llama-7b build on the H200, so a family's shared timing cache only helps the layers outside.
            self.local_timing_cache = False
            # TensorRT 8.6 refuses a timing cache that holds another graph's Myelin timings ("[myelinCache.h::
            # deserializeFromBuffer::52] Error Code 1: Myelin (Myelin error from unknown graph)", then "The timing
            # cache will not be used!", both errors that do not stop the build): seen on the H200 whenever the depth-
            # or width-pruned 7B build was handed llama-7b's cache (ninth and fifteenth sessions)
            self.timing_cache_rejected = False

        def log(self, severity, msg):
            S = trt.ILogger.Severity
            if severity in (S.ERROR, S.INTERNAL_ERROR):
                # shown as they come (8.6 logs some that do not stop the build); a failed build's one error line
                # is the toolkit's, quoting them
                self.errors.append(msg)
                log.warning("[TensorRT] %s", msg)
                self.timing_cache_rejected |= "timing cache will not be used" in msg
            elif severity == S.WARNING and msg not in self._warned:
                self._warned.add(msg)
                log.debug("[TensorRT] %s", msg)
            elif severity == S.INFO:
                self.last_info = msg
                self.local_timing_cache |= msg.startswith("Local timing cache in use")
            elif severity == S.VERBOSE and (stage := build_stage(msg)):
                self.stage = stage
                self.marks.setdefault(stage.split(":")[0], time.perf_counter())
            elif severity == S.VERBOSE and (m := _PROFILE.match(msg)):
                self.marks.setdefault(f"profile {int(m.group(1))}", time.perf_counter())
            if severity != S.VERBOSE or VERBOSE_LOG:
                self.lines.append(f"{time.strftime('%H:%M:%S')} [{str(severity).split('.')[-1]}] {msg}")
                if VERBOSE_LOG:
                    print(self.lines[-1], file=sys.stderr, flush=True)

    return CollectingLogger()


class Heartbeat:
    """Phases and elapsed time of a long build on every TensorRT version (8.6 has no progress monitor)."""

    def __init__(self, what: str, logger, every_s: float = HEARTBEAT_S):
        self.what, self.logger, self.every_s = what, logger, every_s
        self.t0 = time.perf_counter()
        self.phases: dict[str, float] = {}
        self._phase, self._phase_t0 = None, self.t0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def phase(self, name: str) -> None:
        now = time.perf_counter()
        if self._phase:
            self.phases[self._phase] = round(now - self._phase_t0, 2)
        self._phase, self._phase_t0 = name, now
        if name:
            log.info("%s: %s (%.0fs elapsed)", self.what, name, now - self.t0)

    def _run(self):
        while not self._stop.wait(self.every_s):
            latest = self.logger.stage or self.logger.last_info
            detail = f"; TensorRT: {latest[:110]}" if latest else ""
            log.info("%s: still %s, %.0fs elapsed%s", self.what, self._phase, time.perf_counter() - self.t0, detail)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.phase("")
        self._stop.set()
        self._thread.join()


@contextlib.contextmanager
def build_progress(trt, enabled: bool):
    """Progress bars per top-level build phase where TensorRT has IProgressMonitor (>= 10, RTX), on a terminal.

    Yields the monitor to attach to the builder config, or None (no bars). The running child phase's name
    shows beside its parent's bar (a long last step says what it is doing instead of sitting at 83%), log
    lines (the heartbeat's, from another thread) go above the bars, and bars TensorRT leaves open are
    closed when the block ends, so the next message starts on a line of its own.
    """
    if not hasattr(trt, "IProgressMonitor") or not bars_enabled(enabled):
        yield None
        return

    class Monitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self.bars: dict = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            if parent_phase is None:
                self.bars[phase_name] = new_bar(num_steps, f"build: {phase_name}")
            elif parent_phase in self.bars:
                self.bars[parent_phase].set_postfix_str(phase_name)

        def step_complete(self, phase_name, step):
            if phase_name in self.bars:
                self.bars[phase_name].n = step + 1
                self.bars[phase_name].refresh()
            return True

        def phase_finish(self, phase_name):
            bar = self.bars.pop(phase_name, None)
            if bar:
                bar.close()

        def close_all(self):
            for name in list(self.bars):
                self.phase_finish(name)

    monitor = Monitor()
    try:
        with logs_above_bars():
            yield monitor
    finally:
        monitor.close_all()


def timing_cache_outcome(note: str, path, logger) -> tuple[bool, str]:
    """Whether a build writes its timing cache back to the ``--timing-cache`` file, and ``engine.json``'s
    ``timing_cache_note``, from what TensorRT logged (``collecting_logger``).

    Args:
        note: what was done with the file before the build: "created: PATH" or "reused and updated: PATH".
        path: the file.
        logger: the build's logger.

    Returns:
        (write, note): not written where TensorRT refused the file (the note then says so, and that the file is left
        as it was: it still serves the model it came from); written otherwise, the note saying where TensorRT 8.6
        timed the fused (Myelin) graph with a local cache that it keeps to itself.
    """
    if logger.timing_cache_rejected:
        return False, (f"rejected by TensorRT, not used, and left as it was: {path} (TensorRT 8.6 loads a timing "
                       "cache that holds a fused (Myelin) graph's timings only into that graph: another model's, "
                       "e.g. the dense model's for a pruned one, is refused)")
    if logger.local_timing_cache:
        note += ("; TensorRT timed the fused (Myelin) graph with a local cache and stored none of it: the file only "
                 "speeds up layers outside that graph")
    return True, note
