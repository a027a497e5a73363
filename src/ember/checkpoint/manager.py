"""The checkpoint manager: *when* (policies), *keep* (policies) and *where* (a storage), for one run.

The loop states facts (``step``, ``epoch``, ``metrics``); the manager asks its policies whether a
save is due, writes through the Trainer's writer, and changes its bookkeeping (the checkpoints it
manages, best, last) only when a save commits: files that the keep policies let go are deleted
after the newer file is committed, and a failed save changes nothing. Its state (the checkpoints
it wrote) is saved in every checkpoint, so after a resume the run keeps managing them; a file the
run did not write is never deleted: before a delete or an overwrite, the file itself must say that this
run's lineage wrote it under that name (``provenance.py``).
"""

from __future__ import annotations

import math
import os
import time
import uuid
import warnings
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

from ember.checkpoint import policies, provenance
from ember.checkpoint.policies import Record, SavePoint
from ember.checkpoint.sharded.objects import remove_uncommitted
from ember.checkpoint.storage.locations import Storage, open_store
from ember.compat import EXTENSION
from ember.errors import CheckpointError, MisconfigurationError

LAST = "last"

Capture = Callable[[bool], dict]  # weights_only -> the checkpoint dict of the run's current state


@dataclass(frozen=True)
class Naming:
    """How checkpoint files are named: a template, the seed's prefix, and ``last``."""

    template: str = "{epoch}-{step}"
    prefix: str = ""
    auto_insert_metric_name: bool = True

    def __post_init__(self) -> None:
        policies.check_template(self.template)

    def name(self, epoch: int, step: int, metrics: dict[str, float]) -> str:
        name = policies.format_filename(self.template, {**metrics, "epoch": epoch, "step": step},
                                        self.auto_insert_metric_name)
        return (f"{self.prefix}-{name}" if self.prefix else name) + EXTENSION

    @property
    def last(self) -> str:
        return (f"{self.prefix}-{LAST}" if self.prefix else LAST) + EXTENSION


@dataclass(frozen=True)
class Bookkeeping:
    """What a manager knows, replaced whole when a save commits (never edited in place)."""

    records: tuple[Record, ...] = ()   # checkpoints this run wrote and still keeps, oldest first
    last: str | None = None            # the name of the newest committed full-state copy (last.ckpt)
    current: Record | None = None      # the checkpoint written most recently


class CheckpointManager:
    """Saves a run's checkpoints into one store and keeps the ones its policies keep."""

    def __init__(self, *, when: Sequence, keep: Sequence, naming: Naming, monitor: str | None = None,
                 mode: str = "min", save_last: bool = False, weights_only: bool = False,
                 async_save: bool = True, skip_worse: bool = True, dirpath: str | None = None,
                 storage_options: dict | None = None, verbose: bool = False) -> None:
        self.when, self.keep, self.naming = tuple(when), tuple(keep), naming
        self.dirpath, self.storage_options, self.verbose = dirpath, storage_options, verbose
        self.monitor, self.mode = monitor, mode
        self.save_last, self.weights_only, self.async_save = save_last, weights_only, async_save
        self.skip_worse = skip_worse        # a save that the keep policies would drop at once is not written
        self.store: Storage | None = None
        self.book = Bookkeeping()
        self._pending: Bookkeeping | None = None  # what the file being written records (itself included)
        self._writer = None
        self._may_write: Callable[[], bool] = _always  # module-level functions: the callback pickles
        self._from_rank0: Callable[[Any], Any] = _as_is
        self._last_save_time = time.monotonic()
        self._last_step: int | None = None
        self._warned_missing: set[str] = set()
        self._point: tuple[int, int] = (0, 0)  # (epoch, step) of the save in progress, for messages
        self.lineage = uuid.uuid4().hex  # this run's id, kept across resumes: written into every checkpoint
        self._writing: str | None = None  # the name of the file whose state is being captured
        self._left_alone: set[str] = set()
        self._wrote = False  # any file written (Lightning's on_train_end writes last.ckpt only when none was)

    # ---------------------------------------------------------------- setup
    def bind(self, default_dirpath: str, writer, may_write: Callable[[], bool] = lambda: True,
             from_rank0: Callable[[Any], Any] | None = None) -> None:
        """Open the store (``dirpath``, else ``default_dirpath``) and attach the Trainer's writer and
        rank check, for one fit.

        In a job of many processes every rank calls the manager at the same points: decisions (whether
        to save, the name, what to drop) are taken on the rank that writes and passed to the others by
        ``from_rank0`` (a collective broadcast); the state is captured on every rank (the capture may be
        a collective too) and written by the writing rank only."""
        store = open_store(self.dirpath or default_dirpath, self.storage_options)
        if self.store is None or self.store.describe() != store.describe():
            self.book = Bookkeeping()  # a new place: nothing there is this manager's
        self.store, self._writer, self._may_write = store, writer, may_write
        self._from_rank0 = from_rank0 or _as_is
        self._warned_missing = set()
        if may_write():
            try:  # leftovers of writers killed mid-save (old temporaries, incomplete multipart uploads)
                store.cleanup()
                if "://" in store.describe():  # sharded folders in an object store whose save never committed
                    remove_uncommitted(store)
            except Exception as e:  # noqa: BLE001 - cleaning up is a courtesy; training goes on
                warnings.warn(f"could not clean up leftovers of interrupted saves in {store.describe()}: {e}",
                              stacklevel=3)

    def start(self, global_step: int) -> None:
        """Training starts (or resumes) at ``global_step``: that state is not saved again."""
        self._last_save_time, self._last_step = time.monotonic(), global_step

    def location(self, name: str | None) -> str:
        return self.store.describe(name) if (name and self.store is not None) else ""

    # ---------------------------------------------------------------- facts from the loop
    def on_step(self, capture: Capture, *, epoch: int, global_step: int, metrics: dict[str, float]) -> None:
        """An optimizer step finished."""
        if global_step != self._last_step:
            self._maybe_save(capture, epoch, global_step, metrics, epoch_end=False)

    def on_epoch_end(self, capture: Capture, *, epoch: int, global_step: int, metrics: dict[str, float]) -> None:
        self._maybe_save(capture, epoch, global_step, metrics, epoch_end=True)

    def on_train_end(self, capture: Capture, *, epoch: int, global_step: int, metrics: dict[str, float]) -> None:
        """Training ended. As Lightning, the steps since the last scheduled save are not saved (a save is only ever
        one the policies made due), except ``last`` with ``save_last`` when this manager has written nothing at all.
        A monitor that was never logged during the whole fit is an error: nothing could be saved."""
        missing = self._decide(lambda: self.monitor is not None and self.monitor not in metrics)
        if missing:
            if self._warned_missing:
                raise MisconfigurationError(
                    f"ModelCheckpoint(monitor={self.monitor!r}) found no metric {self.monitor!r}, so nothing was "
                    f"saved; the logged metrics are {sorted(metrics)}. Log it with self.log({self.monitor!r}, "
                    "value) or change monitor.")
            return
        if self.save_last and not self._wrote and self.store is not None:
            self._writer.wait()
            self._last_step, self._point = global_step, (epoch, global_step)
            self._write(capture, self.naming.last, replace(self.book, last=self.naming.last), self.weights_only)

    def _maybe_save(self, capture: Capture, epoch: int, global_step: int, metrics: dict, *, epoch_end: bool) -> None:
        point = SavePoint(epoch=epoch, global_step=global_step, epoch_end=epoch_end, now=time.monotonic(),
                          last_save_time=self._last_save_time)

        def decision() -> str:
            if not any(w.due(point) for w in self.when):
                return "not due"
            return "missing" if self.monitor is not None and self.monitor not in metrics else "save"

        verdict = self._decide(decision)
        if verdict == "missing":
            self._warn_missing(metrics)
        elif verdict == "save":
            self.save(capture, epoch=epoch, global_step=global_step, metrics=metrics)

    def _decide(self, decision: Callable[[], Any]) -> Any:
        """``decision()`` taken where the files are written, and the same answer on every rank."""
        return self._from_rank0(decision() if self._may_write() else None)

    def _warn_missing(self, metrics: dict) -> None:
        """Said once: the monitored metric may appear later (after the first validation, say)."""
        if not self._warned_missing:
            self._warned_missing.add(self.monitor)
            warnings.warn(
                f"ModelCheckpoint(monitor={self.monitor!r}) is due to save, but {self.monitor!r} has not been "
                f"logged yet (logged so far: {sorted(metrics)}); saves are skipped until it is, e.g. after the "
                "first validation.", UserWarning, stacklevel=2)

    # ---------------------------------------------------------------- saving
    def save(self, capture: Capture, *, epoch: int, global_step: int, metrics: dict[str, float]) -> None:
        """Save now (if this manager is bound): rank, write (where this process may write), keep."""
        if self.store is None:
            return
        self._writer.wait()  # the bookkeeping below builds on the previous save's commit
        self._last_save_time, self._last_step = time.monotonic(), global_step
        self._point = (epoch, global_step)
        score = _score(metrics, self.monitor)
        plan = self._decide(lambda: self._plan(epoch, global_step, metrics, score))
        if plan is None:  # a rank that does not write, with no writing rank to follow
            return
        name, keep = plan
        record = Record(name, epoch, global_step, score)
        records = [r for r in self.book.records if r.name != name] + [record]
        if self.skip_worse and not keep[-1]:
            self.log(f"{self.monitor!r} ({_fmt(score)}) was not good enough to keep; not saved")
            if self.save_last:
                self._write(capture, self.naming.last, Bookkeeping(self.book.records, self.naming.last, record),
                            self.weights_only)
            return
        kept = tuple(r for r, k in zip(records, keep) if k)
        dropped = [r.name for r, k in zip(records, keep) if not k]
        book = Bookkeeping(kept, self.naming.last if self.save_last else self.book.last, record)
        self._write(capture, name, book, self.weights_only, dropped=dropped, link_last=self.save_last)
        if self.monitor is None:
            self.log(f"saving model to {self.location(name)}")
        else:
            self.log(f"{self.monitor!r} reached {_fmt(score)} (best {_fmt(self._best_of(book).score)}), saving model "
                     f"to {self.location(name)}")

    def log(self, message: str) -> None:
        if self.verbose:
            epoch, step = self._point
            print(f"Epoch {epoch}, global step {step}: {message}", flush=True)

    def _plan(self, epoch: int, global_step: int, metrics: dict, score: float | None) -> tuple[str, list[bool]]:
        """The new file's name, and which of the records (the new one last) the keep policies keep."""
        name = self._free_name(self.naming.name(epoch, global_step, metrics))
        records = [r for r in self.book.records if r.name != name] + [Record(name, epoch, global_step, score)]
        return name, policies.kept(records, self.keep)

    def save_on_exception(self, capture: Capture, *, epoch: int, global_step: int,
                          metrics: dict[str, float]) -> str | None:
        """fit raised: as Lightning, write the checkpoint the name template gives now (blocking; outside the
        top k, so never deleted by it) and ``last`` too with ``save_last``; nothing when this step is saved.
        Returns the name written (None: nothing)."""
        if self.store is None or self._last_step == global_step:
            return None
        self._writer.wait()
        self._last_step, self._point = global_step, (epoch, global_step)
        name = self._decide(lambda: self._free_name(self.naming.name(epoch, global_step, metrics)))
        if name is None:
            return None
        book = replace(self.book, last=self.naming.last if self.save_last else self.book.last,
                       current=Record(name, epoch, global_step, _score(metrics, self.monitor)))
        self._write(capture, name, book, self.weights_only, link_last=bool(self.save_last), blocking=True)
        return name

    def save_for_resume(self, capture: Capture) -> None:
        """A stop was requested: write ``last.ckpt`` (full state, blocking) so ``fit(ckpt_path="last")`` continues."""
        if self.store is None:
            return
        self._writer.wait()
        book = replace(self.book, last=self.naming.last)
        self._write(capture, self.naming.last, book, weights_only=False, blocking=True)

    def _write(self, capture: Capture, name: str, book: Bookkeeping, weights_only: bool, *,
               dropped: Sequence[str] = (), link_last: bool = False, blocking: bool | None = None) -> None:
        self._pending, self._writing, self._wrote = book, name, True
        try:
            state = capture(weights_only)  # the file records ``book``: itself included (on every rank)
        finally:
            self._pending, self._writing = None, None
        store = self.store
        manages_files = self._may_write()
        if not manages_files and not getattr(self._writer, "collective", False):
            self.book = book  # another rank writes; this one keeps the same books
            return

        def committed() -> None:  # runs once the file is committed (on the writer thread when async)
            if manages_files:
                if link_last and name != self.naming.last:
                    store.copy(name, self.naming.last)
                for old in dropped:
                    if old != name and self._ours(store, old):
                        store.delete(old)
            self.book = book

        blocking = not self.async_save if blocking is None else blocking
        # deferred=True: the Trainer calls the writer's snapshot_barrier() before any user code runs
        self._writer.save(state, (store, name), blocking=blocking, deferred=not blocking, then=committed)

    def _ours(self, store: Storage, name: str) -> bool:
        """Whether the checkpoint at ``name`` proves this run wrote it there; if not, warn once that it stays."""
        if provenance.written_by(store, name, self.lineage):
            return True
        if name not in self._left_alone:
            self._left_alone.add(name)
            warnings.warn(f"{store.describe(name)} was listed among this run's checkpoints, but it was not written "
                          "by this run under that name (its header or sharded metadata does not say so), so it is "
                          "left alone; delete it yourself if it is not needed.", UserWarning, stacklevel=2)
        return False

    def _taken(self, name: str) -> bool:
        local = self.store.local_path(name)
        return os.path.lexists(local) if local is not None else self.store.exists(name)

    def _free_name(self, name: str) -> str:
        """``name``, or ``name-vN`` when something this run did not provably write already has it."""
        stem, ext = name[: -len(EXTENSION)], EXTENSION
        candidate, n = name, 1
        while self._taken(candidate) and not provenance.written_by(self.store, candidate, self.lineage):
            candidate, n = f"{stem}-v{n}{ext}", n + 1
        return candidate

    # ---------------------------------------------------------------- what it knows
    @property
    def best(self) -> Record | None:
        return self._best_of(self.book)

    def state_dict(self) -> dict[str, Any]:
        book = self._pending or self.book
        best = self._best_of(book)
        ranked = policies.ranked(book.records, self.mode) if self.monitor is not None else list(reversed(book.records))
        return {
            "monitor": self.monitor,
            "mode": self.mode,
            "lineage": self.lineage,
            "name": self._writing,
            "dirpath": self.store.describe() if self.store is not None else None,
            "checkpoints": [{"name": r.name, "epoch": r.epoch, "global_step": r.global_step, "score": r.score}
                            for r in book.records],
            "last": book.last,
            "current_score": book.current.score if book.current is not None else None,
            "best_model_path": self.location(best.name) if best else "",
            "best_model_score": best.score if best else None,
            "kth_best_model_path": self.location(ranked[-1].name) if ranked else "",
            "kth_value": ranked[-1].score if ranked else None,
            "best_k_models": {self.location(r.name): r.score for r in book.records} if self.monitor else {},
        }

    def _best_of(self, book: Bookkeeping) -> Record | None:
        if not book.records:
            return None
        return policies.ranked(book.records, self.mode)[0] if self.monitor is not None else book.records[-1]

    def load_state_dict(self, state: dict[str, Any], same_place: bool) -> None:
        """Adopt the checkpoints the run wrote before the resume, if they are in this manager's store.

        The state comes from a file, so it is checked: only plain ``*.ckpt`` names directly in the store
        are adopted (a later drop deletes the ones whose files prove this run wrote them), anything else is
        left alone with a warning. The run's lineage is kept."""
        lineage = state.get("lineage")
        if isinstance(lineage, str) and provenance.LINEAGE_RE.fullmatch(lineage):
            self.lineage = lineage
        if not same_place:
            return
        if "checkpoints" in state:
            entries = [(c.get("name"), c.get("epoch", -1), c.get("global_step", -1), c.get("score"))
                       for c in state["checkpoints"] if isinstance(c, dict)]
        else:  # ember 0.1: best_k_models maps paths to scores, in the order they were saved
            entries = [(os.path.basename(p) if isinstance(p, str) else p, -1, -1, s if self.monitor else None)
                       for p, s in (state.get("best_k_models") or {}).items()]
        records, refused = [], []
        for name, epoch, step, score in entries:
            try:
                records.append(Record(_plain_name(name), int(epoch), int(step),
                                      None if score is None else float(score)))
            except (TypeError, ValueError):
                refused.append(name)
        if refused:
            warnings.warn(f"the resumed checkpoint lists {refused!r:.200} as checkpoints of this run, which are not "
                          f"plain '*{EXTENSION}' names with numbers; they are left alone.", UserWarning, stacklevel=2)
        last = state.get("last")
        if last is None and state.get("last_model_path"):
            last = os.path.basename(str(state["last_model_path"]))
        try:
            last = _plain_name(last) if last is not None else None
        except ValueError:
            last = None
        self.book = Bookkeeping(tuple(records), last, records[-1] if records else None)


def _plain_name(name: Any) -> str:
    """A checkpoint file name directly in a store (no folders, no '..'); ValueError otherwise."""
    if not isinstance(name, str) or not name.endswith(EXTENSION) or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"not a checkpoint file name: {name!r:.80}")
    return name


def _always() -> bool:
    return True


def _as_is(decision: Any) -> Any:
    return decision


def _score(metrics: dict[str, float], monitor: str | None) -> float | None:
    if monitor is None:
        return None
    try:
        return float(metrics[monitor])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"the monitored metric {monitor!r} is not a number: {metrics[monitor]!r}") from e


def _fmt(score: float | None) -> str:
    return "n/a" if score is None else ("nan" if math.isnan(score) else f"{score:0.5f}")
