"""Graceful stops for trainers: SIGINT / SIGTERM ask for a checkpoint, a second Ctrl-C aborts.

Every trainer runs inside :func:`stop_on_signals`. The first SIGINT or SIGTERM sets a flag that the
trainer polls at its next safe point (an SB3 rollout boundary, a Trainer step end, an adversarial
round's rollout boundary); it saves a checkpoint there and raises :class:`TrainingInterrupted`,
whose message is the resume command. A second SIGINT raises ``KeyboardInterrupt`` at once (nothing
more is saved; the last complete checkpoint still resumes).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

EXIT_INTERRUPTED = 130
"""Exit status of a command stopped by a signal after saving (the shell's 128 + SIGINT)."""


class TrainingInterrupted(Exception):  # noqa: N818 - it is an interruption, not an error
    """A run stopped by a signal after saving a checkpoint; the message says how to resume it."""

    def __init__(self, run: Any, resume_command: str, step: int | None = None) -> None:
        where = f" at step {step}" if step is not None else ""
        super().__init__(f"stopped{where}; checkpoint saved in {run}. Resume with:\n  {resume_command}")
        self.run, self.resume_command, self.step = run, resume_command, step


class StopFlag:
    """Set by the first SIGINT/SIGTERM while :func:`stop_on_signals` is active."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name: str | None = None

    def __bool__(self) -> bool:
        return self.requested


STOP = StopFlag()
"""The process-wide flag trainers poll."""


@contextmanager
def stop_on_signals(announce: str = "saving a checkpoint at the next safe point") -> Iterator[StopFlag]:
    """Turn SIGINT / SIGTERM into a stop request for the duration of the block.

    Outside the main thread (where handlers cannot be installed) the block runs unchanged.

    Args:
        announce: What the first signal prints that the trainer will do.

    Yields:
        The flag (:data:`STOP`), cleared on entry.
    """
    STOP.requested, STOP.signal_name = False, None
    if threading.current_thread() is not threading.main_thread():
        yield STOP
        return

    def handler(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if STOP.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        STOP.requested, STOP.signal_name = True, name
        print(f"\n{name}: {announce} (Ctrl-C again aborts without saving)", file=sys.stderr, flush=True)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield STOP
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
