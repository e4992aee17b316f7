"""Keep delta-rs's follow-on Rust panics off the terminal, so a full disk reads as one line.

When a Delta write fails (``No space left on device``, a file-size limit), delta-rs's
object store keeps writing into the file it has already shut down, and each try panics
in a tokio worker thread with ``Already shut down`` (object_store's ``buffered.rs``).
Tokio catches these panics and the real error reaches Python as a ``DeltaError``; only
Rust's panic hook still prints each one (a header, the message, ``stack backtrace:`` and
a ``note:``) straight to file descriptor 2, before the error. No environment variable
silences that hook (``RUST_BACKTRACE`` only adds or drops the backtrace), so while a
command runs, :func:`follow_on_panics_dropped` passes file descriptor 2 through a pipe
and drops exactly these panic reports; every other line, other panics included, is
forwarded unchanged.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

#: The one panic message dropped: a write into an object-store file already shut down.
FOLLOW_ON_MESSAGE = "Already shut down"
_HEADER = re.compile(r"^thread '[^']*'(?: \(\d+\))? panicked at .*:\d+:\d+:$")
_HEADER_START = b"thread '"
_FRAME = re.compile(r"^\s+(?:\d+: |at )")
_JOIN_SECONDS = 2.0


def drop_follow_on_panics(lines: Iterable[str]) -> Iterator[str]:
    """Yield ``lines`` (each ending in a newline) without the follow-on panic reports.

    A report is an optional empty line, ``thread '…' panicked at <file>:<line>:<col>:``,
    the message :data:`FOLLOW_ON_MESSAGE`, then optionally ``stack backtrace:`` with its
    frames and a ``note: …RUST_BACKTRACE…`` line. A panic with another message is kept.
    """
    held: list[str] = []  # an empty line and a header, not yet known to start a report
    dropping = False
    for line in lines:
        text = line.rstrip("\r\n")
        if dropping:
            note = text.startswith("note: ") and "RUST_BACKTRACE" in text
            if text == "stack backtrace:" or _FRAME.match(text) or note:
                continue
            dropping = False
        if held and _HEADER.match(held[-1].rstrip("\r\n")):
            if text == FOLLOW_ON_MESSAGE:
                held, dropping = [], True
                continue
            yield from held
            held = []
        if _HEADER.match(text):
            held.append(line)
        elif not text.strip():
            yield from held
            held = [line]
        else:
            yield from held
            held = []
            yield line
    yield from held


def _raw_lines(source: int) -> Iterator[bytes]:
    """Lines read from ``source`` as they complete, and pieces of lines as they arrive.

    Only the start of a line that may be a panic header waits for its newline: progress
    bars (which redraw with a carriage return, no newline) are forwarded at once.
    """
    buffer = b""
    while chunk := os.read(source, 65536):
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        yield from (line + b"\n" for line in complete)
        if buffer and not (buffer.startswith(_HEADER_START) or _HEADER_START.startswith(buffer)):
            yield buffer
            buffer = b""
    if buffer:
        yield buffer


def _forward(source: int, target: int) -> None:
    """Copy lines from the pipe ``source`` to ``target``, dropping follow-on panics."""
    try:
        lines = (raw.decode("utf-8", "surrogateescape") for raw in _raw_lines(source))
        for line in drop_follow_on_panics(lines):
            data = line.encode("utf-8", "surrogateescape")
            while data:
                data = data[os.write(target, data) :]
    except OSError:  # the terminal went away: nothing more to show
        pass
    finally:
        os.close(source)


@contextmanager
def follow_on_panics_dropped() -> Iterator[None]:
    """Within the block, drop delta-rs's ``Already shut down`` panic reports from stderr.

    File descriptor 2, where Rust writes, points at a pipe read by a thread that forwards
    every other line to the real stderr. ``sys.stderr`` itself, when it is that
    descriptor, is pointed straight at the real stderr meanwhile, so Python's own output
    keeps its order and progress bars still see a terminal. On exit both are put back and
    the thread forwards what is left.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (AttributeError, OSError, ValueError):  # no real stderr (embedded, closed)
        yield
        return
    python_stderr = sys.stderr
    direct = None
    try:
        if python_stderr.fileno() == 2:
            direct = os.fdopen(
                os.dup(saved),
                "w",
                buffering=1,
                encoding=python_stderr.encoding,
                errors=python_stderr.errors,
            )
    except (AttributeError, OSError, ValueError):  # a capture without a descriptor
        direct = None
    read_end, write_end = os.pipe()
    forwarder = threading.Thread(
        target=_forward, args=(read_end, saved), name="spikelab-stderr", daemon=True
    )
    forwarder.start()
    os.dup2(write_end, 2)
    os.close(write_end)
    if direct is not None:
        sys.stderr = direct
    try:
        yield
    finally:
        if direct is not None:
            sys.stderr = python_stderr
            direct.close()
        try:
            python_stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 2)  # the pipe's last writer (unless a child still holds it) closes
        forwarder.join(_JOIN_SECONDS)
        if not forwarder.is_alive():
            os.close(saved)
