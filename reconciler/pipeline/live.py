"""The runs this process executes, while they run (issue 16): their output, redacted, written
to the store as it comes, so `queue show --follow` on any host sees it, and shown on a
console with `--stream`.

Kept cheap, because most runs end within a second: a command's output goes to its run's
buffer as the transport reads it (an append under a lock), and once a second a thread turns
the whole lines of the runs that have been running for a second or more into text, redacts
it and writes it for all of them in one transaction, only for runs that printed something
new. A run that ends within its first second writes nothing here (its final output is all
there is to see). A line shows once it ends (or when the run ends): a piece of a line could
hold the first half of a secret the redactor would not recognise. For the same reason, the
lines at the end of what a run printed so far that a wrapped base64 block may go on from
(16 or more base64 characters each: `core.redact`) wait for the next line or the run's end,
so that a secret's base64 form wrapped over lines is redacted whole even when its lines come
in separate flushes; past the most lines a known form can span, the older of them go on.

The text written is the run's output as a stream of chunks (`store.OutputChunk`) whose
offsets count the UTF-8 bytes of the redacted text; a run that wrote chunks records as its
final output the same stream's last 64 KiB (`end`), so a follower that saw part of it knows
where the rest begins (`core.output.unseen`).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from reconciler.adapters.store.base import (
    OUTPUT_CAP,
    KillRequest,
    OutputChunk,
    OutputTrim,
    StateStore,
)
from reconciler.adapters.transport.base import RunControl
from reconciler.core.errors import StoreError
from reconciler.core.output import cap, split_mark, with_mark
from reconciler.core.redact import WRAP_MIN
from reconciler.core.state import Run

log = logging.getLogger(__name__)

FLUSH_SECONDS = 1.0  # how often new output is written, and how old a run is before it is
PRINT_SECONDS = 0.25  # how often `--stream` prints new lines
# Raw output a run may hold between two flushes; beyond it its oldest bytes are dropped (the
# stream shows the gap as an output mark).
RAW_LIMIT = 2 * OUTPUT_CAP

Printer = Callable[[Run, str], None]  # a run's new redacted text (whole lines but at its end)


@dataclass
class _Live:
    """One running run's output: raw bytes not yet turned into text, and the redacted text
    so far (`dropped` bytes of it no longer kept, then `body`)."""

    run: Run
    since: float
    control: RunControl | None = None
    kill: KillRequest | None = None  # the request that stopped it, once acted on
    raw: bytearray = field(default_factory=bytearray)
    skipped: int = 0  # raw bytes dropped before `raw` since the last take
    dropped: int = 0
    body: bytearray = field(default_factory=bytearray)  # UTF-8 of the kept redacted text
    length: int = 0  # UTF-8 bytes of the whole redacted text (dropped + body)
    stored_to: int = 0  # offset up to which chunks were written
    seq: int = 0
    written_at: float = 0.0
    chunks: deque[tuple[int, int]] = field(default_factory=deque)  # (seq, start) of stored

    @property
    def stored(self) -> bool:
        return self.seq > 0


class LiveRuns:
    """Output of the runs a drain executes, while they run; a context manager running its
    flush thread. `start(run)` gives the `RunControl` to hand the transport, `end(run_id)`
    the run's final output when chunks of it were written (else None: keep the transport's);
    the chunks of an ended run are dropped at the next flush (a follower that finds them
    gone reads the rest from the run's final output)."""

    def __init__(
        self,
        store: StateStore,
        redact: Callable[[str], str | None],
        printer: Printer | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.store, self.redact, self.printer, self.clock = store, redact, printer, clock
        self._lock = threading.Lock()
        self._live: dict[int, _Live] = {}
        self._drop: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="live-output", daemon=True)

    def __enter__(self) -> LiveRuns:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._drop_forgotten()

    # --- the engine's side ---

    def start(self, run: Run) -> RunControl:
        """Follow `run` (claimed, about to be sent); the control its transport feeds."""
        live = _Live(run, self.clock())
        live.control = RunControl(lambda chunk: self._add(live, chunk))
        with self._lock:
            self._live[run.id] = live
        return live.control

    def end(self, run_id: int) -> tuple[str | None, KillRequest | None]:
        """`run_id`'s command ended: its final output (redacted, last 64 KiB) when chunks of
        it were written, else None (the transport's output is the run's); and the kill
        request it was stopped by, if any."""
        with self._lock:
            live = self._live.pop(run_id, None)
            if live is None:
                return None, None
            if not (live.stored or self.printer is not None):
                return None, live.kill
            text = self._take(live, whole=True)
            final = cap(with_mark(live.dropped, live.body.decode("utf-8")), OUTPUT_CAP)
            if live.stored:
                self._drop.add(run_id)
        if text and self.printer is not None:
            self.printer(live.run, text)
        return (final if live.stored else None), live.kill

    # --- the transports' side (their reading threads) ---

    def _add(self, live: _Live, chunk: bytes) -> None:
        with self._lock:
            live.raw += chunk
            if len(live.raw) > RAW_LIMIT:
                cut = len(live.raw) - OUTPUT_CAP
                del live.raw[:cut]
                live.skipped += cut

    # --- the flush thread ---

    def _loop(self) -> None:
        interval = PRINT_SECONDS if self.printer is not None else FLUSH_SECONDS
        while not self._stop.wait(interval):
            try:
                self._flush()
            except Exception as exc:  # the thread's guard: output is best effort, runs go on
                log.warning("cannot keep the output of running runs: %s", exc)
                log.debug("live output", exc_info=True)

    def _flush(self) -> None:
        now = self.clock()
        printed: list[tuple[Run, str]] = []
        chunks: list[OutputChunk] = []
        trims: list[OutputTrim] = []
        due_ids: list[tuple[int, float]] = []
        with self._lock:
            for live in self._live.values():
                due = now - live.since >= FLUSH_SECONDS
                if due and live.kill is None:
                    due_ids.append((live.run.id, live.since))
                if not due and self.printer is None:
                    continue
                text = self._take(live)
                if text and self.printer is not None:
                    printed.append((live.run, text))
                if due and live.length > live.stored_to and now - live.written_at >= FLUSH_SECONDS:
                    chunks.append(self._chunk(live))
                    live.written_at = now
                    trims.extend(self._trim(live))
        for run, text in printed:
            self.printer(run, text)
        self._kill_requested([run_id for run_id, _ in due_ids])
        if chunks or trims:
            try:
                self.store.append_output(chunks, trims)
            except StoreError as exc:  # followers see a gap; the final output is whole
                log.warning("cannot write the output of running runs: %s", exc)
        self._drop_forgotten()  # after the writes: a chunk of an ended run written last goes

    def _kill_requested(self, run_ids: list[int]) -> None:
        """Act on the kill requests of `run_ids` (runs running for a second or more: a run
        that ends sooner has nothing left to kill) made for their current claims."""
        if not run_ids:
            return
        try:
            requests = self.store.kill_requests(run_ids)
        except StoreError as exc:
            log.warning("cannot read kill requests: %s", exc)
            return
        for run_id, request in requests.items():
            with self._lock:
                live = self._live.get(run_id)
                if live is None or live.kill is not None or request.epoch != live.run.epoch:
                    continue
                live.kill = request
            log.warning("run %s: %s; stopping it", run_id, request.describe())
            live.control.kill(request.grace)

    def _drop_forgotten(self) -> None:
        with self._lock:
            drop, self._drop = sorted(self._drop), set()
        if drop:
            try:
                self.store.drop_output(drop)
            except StoreError as exc:
                log.warning("cannot drop the output chunks of ended runs: %s", exc)

    def _take(self, live: _Live, whole: bool = False) -> str:
        """Turn `live`'s whole lines (with `whole`, everything) into redacted text, added to
        its body; returns that text (under the lock)."""
        size = len(live.raw) if whole else self._ready(live)
        if size <= 0 and not live.skipped:
            return ""
        data = bytes(live.raw[:size])
        del live.raw[:size]
        skipped, live.skipped = live.skipped, 0
        _, text = split_mark(self._redacted(skipped, data))
        if skipped:  # the text kept before the gap is no longer the output's tail
            live.dropped += len(live.body) + skipped
            live.length += skipped
            live.body.clear()
        encoded = text.encode("utf-8", "replace")
        live.body += encoded
        live.length += len(encoded)
        if len(live.body) > RAW_LIMIT:
            cut = _char_start(live.body, len(live.body) - OUTPUT_CAP)
            del live.body[:cut]
            live.dropped += cut
        return with_mark(skipped, text) if self.printer is not None else text

    def _redacted(self, skipped: int, data: bytes) -> str:
        # Redacted under the mark of what was skipped: the redactor then masks the end of a
        # secret whose start was cut off.
        return self.redact(with_mark(skipped, data.decode("utf-8", "replace"))) or ""

    def _ready(self, live: _Live) -> int:
        """How many bytes of `live.raw` may be redacted and shown now: its whole lines, less
        the lines at their end that a wrapped base64 block may still be printing (see
        `held_from`). Past the most lines a known form can span when wrapped, the older of
        those lines go too when redacting them alone masks what redacting them with the rest
        would (no form spans the cut); otherwise they wait for the block to end."""
        whole = live.raw.rfind(b"\n") + 1
        lines = _block_tail(live.raw, whole)
        if not lines:
            return whole
        most = self.hold_lines()
        if len(lines) <= most:
            return lines[0]
        cut = lines[len(lines) - most]
        alone = self._redacted(live.skipped, bytes(live.raw[:cut]))
        together = self._redacted(live.skipped, bytes(live.raw[:whole]))
        return cut if together.startswith(alone) else lines[0]

    def hold_lines(self) -> int:
        """The most lines a known secret form may span wrapped (the redactor says; at least
        two: a stand-in redactor in tests knows no forms)."""
        wrapped = getattr(self.redact, "wrapped_lines", None)
        return max(2, wrapped()) if wrapped is not None else 2

    def _chunk(self, live: _Live) -> OutputChunk:
        """The text of `live` not yet written, as its next chunk (its last 64 KiB at most)."""
        start = max(live.stored_to, live.dropped, live.length - OUTPUT_CAP)
        start = live.dropped + _char_start(live.body, start - live.dropped)
        body = bytes(live.body[start - live.dropped :]).decode("utf-8", "replace")
        live.seq += 1
        live.stored_to = live.length
        live.chunks.append((live.seq, start))
        return OutputChunk(live.run.id, live.run.attempt, live.seq, start, body)

    def _trim(self, live: _Live) -> list[OutputTrim]:
        """Chunks of `live` that begin before its last 64 KiB: to be dropped (the store keeps
        at most that much of a run's output twice)."""
        last = None
        while live.chunks and live.chunks[0][1] < live.length - OUTPUT_CAP:
            last = live.chunks.popleft()[0]
        return [] if last is None else [OutputTrim(live.run.id, live.run.attempt, last)]


# A line that may be a wrapped base64 block's but last (core.redact's _WRAPPED, WRAP_MIN).
_BLOCK_LINE = re.compile(rb"[A-Za-z0-9+/_-]{%d,}\r?" % WRAP_MIN)


def _block_tail(raw: bytearray, end: int) -> list[int]:
    """The starts of the lines ending `raw[:end]` (whole lines) that a wrapped base64 block
    may still go on from: each of them could be a block's line but its last, so the next
    line printed may carry on a secret form begun in them. Oldest first; [] when the last
    line cannot (the usual case)."""
    starts: list[int] = []
    while end > 0:
        start = raw.rfind(b"\n", 0, end - 1) + 1
        if _BLOCK_LINE.fullmatch(raw, start, end - 1) is None:
            break
        starts.append(start)
        end = start
    return starts[::-1]


def _char_start(data: bytes | bytearray, start: int) -> int:
    """The first UTF-8 character boundary at or after `start`."""
    while start < len(data) and data[start] & 0xC0 == 0x80:
        start += 1
    return start


__all__ = ["FLUSH_SECONDS", "LiveRuns", "Printer"]
