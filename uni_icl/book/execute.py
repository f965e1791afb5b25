"""Execute a notebook so that it finishes or fails within minutes, never waits silently.

Why this exists. A smoke build once sat for over ten minutes in the distribution-shift chapter
with the kernel idle in its event loop and the client idle in ``nbclient`` waiting for the cell's
reply. ``nbclient`` waits for that reply with ``timeout=None`` (no execution timeout) through
``zmq.asyncio``'s ``poll``, which wakes up on the socket's edge-triggered file descriptor; a
wake-up that is lost (the same symptom as jupyter/nbclient#312, a cell with ipywidgets that
"sometimes blocks") then leaves both sides waiting forever. Two guards follow:

1. **No unbounded wait.** Every read of the kernel's shell and IOPub channels polls in slices of
   :data:`POLL_SLICE_S`; a slice that times out ends in a real, synchronous ``zmq_poll``, so a
   message whose wake-up was lost is read at the next slice instead of never.
2. **A watchdog.** A cell fails with :class:`NotebookStalledError`, naming the notebook and the cell,
   when the kernel sent nothing *and* did not compute (its process and the processes it started,
   such as training workers, used less than a quarter of a core) for ``silence_s`` seconds, or
   when the cell ran longer than ``cell_timeout_s``. A long silent computation (training without
   a progress bar, in the kernel or on its workers) keeps that CPU busy and is not a stall.
   :func:`execute_notebook` retries a stalled notebook once, in a fresh kernel.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from queue import Empty

import nbclient
import nbformat
import psutil
from nbclient.exceptions import DeadKernelError

POLL_SLICE_S = 1.0
BUSY_FRACTION = 0.25  # kernel CPU seconds per wall second above which it counts as computing


class NotebookStalledError(RuntimeError):
    """A cell neither produced output nor computed for too long, or ran past its limit."""


@dataclass(frozen=True)
class ExecutionLimits:
    """How long a cell may stay silent and idle, and how long it may run at all (seconds)."""

    silence_s: float = 180.0
    cell_timeout_s: float = 7200.0

    def __post_init__(self) -> None:
        for name in ("silence_s", "cell_timeout_s"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")


class WatchedClient(nbclient.NotebookClient):
    """``nbclient.NotebookClient`` whose channel reads are sliced and watched (module docstring)."""

    def __init__(self, notebook, *, name: str, limits: ExecutionLimits, **kwargs) -> None:
        super().__init__(notebook, timeout=None, **kwargs)
        self.notebook_name = name
        self.limits = limits
        self.on_cell_execute = self._start_watch
        self._cell: tuple[int, str] = (-1, "")
        self._cell_started = self._last_activity = time.monotonic()
        self._cpu_mark = (time.monotonic(), 0.0)

    async def async_start_new_kernel_client(self):
        client = await super().async_start_new_kernel_client()
        for channel, watched in ((client.shell_channel, True), (client.iopub_channel, False)):
            channel.get_msg = self._sliced(channel.get_msg, watched)
        return client

    def _start_watch(self, cell, cell_index: int) -> None:
        first_line = next((line for line in cell.source.splitlines() if line.strip()), "")
        self._cell = (cell_index, first_line[:80])
        self._cell_started = self._last_activity = time.monotonic()
        self._cpu_mark = (self._cell_started, self._kernel_cpu_seconds())

    def _kernel_cpu_seconds(self) -> float:
        """CPU seconds used by the kernel and every process it started (the parallel trainer's workers:
        the kernel itself waits idle and silent while they train), live or already reaped."""
        pid = getattr(self.km.provisioner, "pid", None) if self.km is not None else None
        try:
            kernel = psutil.Process(pid)
            children = kernel.children(recursive=True)
            times = kernel.cpu_times()
        except (psutil.Error, TypeError, ValueError):
            return 0.0
        total = times.user + times.system + times.children_user + times.children_system
        for child in children:
            with contextlib.suppress(psutil.Error):
                child_times = child.cpu_times()
                total += child_times.user + child_times.system
        return total

    def _where(self) -> str:
        index, first_line = self._cell
        return f"{self.notebook_name}, cell {index} ({first_line!r})"

    def _check(self) -> None:
        """Raise :class:`NotebookStalledError` if the current cell stalled or ran past its limit."""
        now = time.monotonic()
        if now - self._cell_started > self.limits.cell_timeout_s:
            raise NotebookStalledError(f"{self._where()}: still running after {self.limits.cell_timeout_s:.0f} s")
        then, cpu_then = self._cpu_mark
        cpu_now = self._kernel_cpu_seconds()
        if now > then and (cpu_now - cpu_then) / (now - then) >= BUSY_FRACTION:
            self._last_activity = now
        self._cpu_mark = (now, cpu_now)
        if now - self._last_activity > self.limits.silence_s:
            silence = self.limits.silence_s
            raise NotebookStalledError(f"{self._where()}: no output and an idle kernel for {silence:.0f} s")

    def _sliced(self, get_msg: Callable, watched: bool) -> Callable:
        async def sliced_get_msg(timeout: float | None = None):
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                remaining = POLL_SLICE_S if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    message = await get_msg(timeout=min(POLL_SLICE_S, remaining))
                except Empty:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise
                    if watched:
                        self._check()
                    continue
                self._last_activity = time.monotonic()
                return message

        return sliced_get_msg


def execute_notebook(
    source: Path,
    destination: Path,
    *,
    cwd: Path,
    limits: ExecutionLimits = ExecutionLimits(),
    attempts: int = 2,
    log: Callable[[str], None] = print,
) -> float:
    """Execute ``source`` with working directory ``cwd`` and write it, with outputs, to ``destination``.

    A stalled attempt (:class:`NotebookStalledError`, or a kernel that died) is logged and retried in a
    fresh kernel, ``attempts`` times in all; an exception raised by a cell fails at once (it would
    fail again). Returns the wall time of the successful attempt in seconds.
    """
    for attempt in range(1, attempts + 1):
        notebook = nbformat.read(source, as_version=4)
        client = WatchedClient(
            notebook,
            name=str(source),
            limits=limits,
            kernel_name="python3",
            resources={"metadata": {"path": str(cwd)}},
            record_timing=False,
        )
        started = time.monotonic()
        try:
            client.execute()
        except (NotebookStalledError, DeadKernelError) as error:
            log(f"attempt {attempt} of {attempts} failed: {error}")
            if attempt == attempts:
                raise NotebookStalledError(f"{source}: failed {attempts} times; last: {error}") from error
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, destination)
        return time.monotonic() - started
    raise AssertionError("unreachable")
