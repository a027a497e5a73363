"""When one rank fails, every rank stops within a bounded time, with an error that names the rank.

Collectives cannot carry the news: a failing rank is not where its peers are (they wait in a
gradient all-reduce it never reaches), and a collective of another shape would be matched against
theirs. So failures travel out of band, through the job's rendezvous store (a ``TCPStore``, the one
``init_process_group`` joined): the first failure is posted under a counter, and

- ``failure_guard()`` (around fit, on every rank) posts this rank's error before it propagates, and
  turns an error that a peer's death caused here (gloo: "connection closed by peer", a collective
  timeout) into ``PeerFailedError`` naming the rank that failed first and its error;
- ``check()`` raises that error at a step boundary when a peer has failed (one store round trip);
- a watchdog thread gives a rank whose main thread does not end on its own (stuck in a NCCL
  collective, or in user code) ``grace`` seconds after a peer's failure is posted, then prints the
  peer's error and ends the process with ``EXIT_PEER_FAILED``.

The process group's timeout (``init(timeout=...)``) bounds every collective in any case.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from datetime import timedelta
from typing import Iterator

import torch.distributed as dist

from ember.distributed.env import DistributedError

EXIT_PEER_FAILED = 75
SETTLE = 1.0  # seconds a failing rank looks for a peer's earlier failure before posting its own
_COUNT = "count"
_reported_here = False  # this process posted its own failure (read by the launcher at exit)


def reported_here() -> bool:
    """Whether this process posted a failure of its own (its peers will stop because of it)."""
    return _reported_here


class PeerFailedError(DistributedError):
    """Another rank of the job failed, so this one cannot continue. ``rank`` names it.

    Args:
        rank: the rank that failed.
        message: what it reported (its error, in one line).
        here: this process's rank, for the message.
    """

    def __init__(self, rank: int, message: str, here: int) -> None:
        self.rank, self.message = rank, message
        super().__init__(
            f"rank {rank} failed: {message}. Rank {here} stopped because the job cannot continue without it; "
            f"the full traceback is in rank {rank}'s output. Fix that error, then resume from the last checkpoint.")


class FailureBoard:
    """The job's failure notices: ``post`` the first one, ``first`` reads it. Keys live in the store
    under ``ember/failure/<restart>/`` so a restarted torchrun attempt does not see the last one's."""

    def __init__(self, store: dist.Store, restart: int = 0) -> None:
        self.store = dist.PrefixStore(f"ember/failure/{restart}/", store)

    @classmethod
    def connect(cls, host: str, port: int, restart: int = 0, timeout: float = 30.0) -> "FailureBoard":
        """A board on the job's store at ``host:port`` (a client connection of its own)."""
        store = dist.TCPStore(host, port, is_master=False, timeout=timedelta(seconds=timeout),
                              wait_for_workers=False)
        return cls(store, restart)

    def post(self, rank: int, message: str) -> None:
        """Record that ``rank`` failed with ``message`` (every post is kept; the first one is reported)."""
        n = self.store.add(_COUNT, 1)
        self.store.set(str(n), f"{rank}\n{message}")

    def first(self) -> tuple[int, str] | None:
        """(rank, message) of the first failure posted, or None."""
        if self.store.add(_COUNT, 0) == 0:
            return None
        rank, _, message = self.store.get("1").decode("utf-8", "replace").partition("\n")
        return int(rank), message


def describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


class FailureWatch:
    """One rank's side of the board: guard, check, and the watchdog thread."""

    def __init__(self, board: FailureBoard, watchdog_board: FailureBoard | None, rank: int, *,
                 grace: float = 30.0, poll: float = 0.25) -> None:
        self.board, self.rank, self.grace, self.poll = board, rank, grace, poll
        self._lock = threading.Lock()  # one thread at a time on ``board``'s connection
        self._stop = threading.Event()
        self.reported = False  # this rank posted its own failure
        self._thread: threading.Thread | None = None
        if watchdog_board is not None:
            self._thread = threading.Thread(target=self._watch, args=(watchdog_board,), name="ember-failure-watchdog",
                                            daemon=True)
            self._thread.start()

    # ---------------------------------------------------------------- main thread
    def peer_failure(self, wait: float = 0.0) -> tuple[int, str] | None:
        """The first failure posted by another rank, or None (also None when the store is unreachable).
        ``wait``: seconds to keep looking (a peer's death may be noticed here before it is posted)."""
        deadline = time.monotonic() + wait
        while True:
            try:
                with self._lock:
                    found = self.board.first()
            except (RuntimeError, OSError):  # the store's host is gone: say nothing rather than guess
                return None
            if found is not None:
                return found if found[0] != self.rank else None
            if time.monotonic() >= deadline:
                return None
            time.sleep(min(0.05, wait))

    def check(self) -> None:
        """Raise ``PeerFailedError`` if another rank has failed (call at step boundaries)."""
        found = self.peer_failure()
        if found is not None:
            raise PeerFailedError(found[0], found[1], self.rank)

    def report(self, error: BaseException) -> None:
        """Post this rank's failure (best effort: the store may be gone too)."""
        global _reported_here
        self.reported = _reported_here = True
        self.post_for(self.rank, describe(error))

    def post_for(self, rank: int, message: str) -> None:
        """Post ``rank``'s failure (the launcher posts for a child that died without posting)."""
        try:
            with self._lock:
                self.board.post(rank, message)
        except (RuntimeError, OSError):
            pass

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Post an error raised in the block, or turn one a peer's failure caused into PeerFailedError."""
        try:
            yield
        except PeerFailedError:
            raise
        except BaseException as e:
            if isinstance(e, SystemExit) and e.code in (None, 0):
                raise
            if isinstance(e, KeyboardInterrupt):  # Ctrl-C reaches every rank: each stops for itself
                self.report(e)
                raise
            found = self.peer_failure(wait=SETTLE)
            if found is not None:
                raise PeerFailedError(found[0], found[1], self.rank) from e
            self.report(e)
            raise

    def stop(self) -> None:
        """Stop the watchdog (before the store's host may close it at the job's end)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=max(5.0, 4 * self.poll))

    # ---------------------------------------------------------------- watchdog thread
    def _watch(self, board: FailureBoard) -> None:
        while not self._stop.wait(self.poll):
            try:
                found = board.first()
            except (RuntimeError, OSError):
                return  # the store's host ended (the job's end, or rank 0 died): collectives time out on their own
            if found is None or found[0] == self.rank:
                continue
            deadline = time.monotonic() + self.grace
            while time.monotonic() < deadline:
                if self._stop.wait(min(self.poll, max(0.0, deadline - time.monotonic()))):
                    return
            rank, message = found
            print(f"ember: rank {rank} failed: {message}. Rank {self.rank} did not stop on its own within "
                  f"{self.grace:g} s, so it ends now (exit code {EXIT_PEER_FAILED}).", file=sys.stderr, flush=True)
            os._exit(EXIT_PEER_FAILED)
