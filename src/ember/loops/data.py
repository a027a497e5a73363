"""Resumable sampling: iterate a DataLoader an epoch at a time so that any batch position can be
resumed exactly, skipping consumed batches without reading them.

Each epoch begins by recording what decides its order (the global torch random state, every
generator the loader and its samplers use, a sampler's own ``state_dict()``). Resuming part-way
restores that record, draws the same numbers in the same order, and advances the sampler by the
consumed batches: indices only, no dataset access, no collate, no transfer. Resuming at an epoch's
end restores the same things as they were when the checkpoint was written (``restore_epoch_end``).

Every number an epoch draws from the loader's generator is drawn here, in a fixed order, before the
DataLoader's iterator exists: the iterator's own draws (its workers' base seed) come from a private
generator seeded by one of them. So an epoch draws the same numbers whether its iterator is new
(a resumed process) or reused (``persistent_workers``), and however many indices were skipped.
"""

from __future__ import annotations

import atexit
import itertools
import math
import os
import random
import signal
import threading
import warnings
import weakref
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, IterableDataset

from ember.errors import MisconfigurationError
from ember.loops.preemption import SIGNALS


def _generators(loader: DataLoader) -> dict[str, torch.Generator]:
    """Every distinct torch.Generator that decides this loader's order or worker seeds, by a stable name."""
    found: dict[str, torch.Generator] = {}
    candidates = [("loader", getattr(loader, "generator", None))]
    sampler = getattr(loader, "sampler", None)
    batch_sampler = getattr(loader, "batch_sampler", None)
    candidates.append(("sampler", getattr(sampler, "generator", None)))
    inner = getattr(batch_sampler, "sampler", None)
    if inner is not None and inner is not sampler:
        candidates.append(("batch_sampler.sampler", getattr(inner, "generator", None)))
    candidates.append(("sampler.sampler", getattr(_wrapped(sampler), "generator", None)))
    seen: list[torch.Generator] = []
    for name, gen in candidates:
        if isinstance(gen, torch.Generator) and not any(gen is s for s in seen):
            seen.append(gen)
            found[name] = gen
    return found


def _wrapped(sampler: Any) -> Any:
    """The custom sampler a sampler draws from (``ShardedSampler`` under DDP/FSDP), or None."""
    return getattr(sampler, "sampler", None) if sampler is not None else None


def _samplers(loader: DataLoader, wrapped: bool = False) -> list[Any]:
    """The sampler objects whose epoch or state matter, outermost first, without duplicates; with
    ``wrapped``, the custom sampler a ``ShardedSampler`` draws from last (it forwards ``set_epoch`` itself)."""
    out: list[Any] = []
    sampler = getattr(loader, "sampler", None)
    for s in (getattr(loader, "batch_sampler", None), sampler,
              getattr(getattr(loader, "batch_sampler", None), "sampler", None),
              _wrapped(sampler) if wrapped else None):
        if s is not None and not any(s is o for o in out):
            out.append(s)
    return out


WORKER_GRACE_S = 60.0  # a worker told to stop keeps serving this long: the main process finishes its step


def _stop_later(signum, frame) -> None:
    """In a worker, a stop signal (sent to the whole process group on preemption, or by
    multiprocessing's exit hook) does not end it at once: the main process may still need a batch or
    two to finish its optimizer step, then it saves and ends the workers itself. A worker still alive
    WORKER_GRACE_S later ends, so a leftover worker can never keep its parent from exiting."""
    timer = threading.Timer(WORKER_GRACE_S, os._exit, args=(0,))
    timer.daemon = True
    timer.start()


class _WorkerInit:
    """Runs in each DataLoader worker: defer stop signals (the main process saves and ends the
    workers), then the user's worker_init_fn."""

    def __init__(self, user_fn) -> None:
        self.user_fn = user_fn

    def __call__(self, worker_id: int) -> None:
        for s in SIGNALS:
            signal.signal(s, _stop_later)
        if self.user_fn is not None:
            self.user_fn(worker_id)


_PERSISTENT: weakref.WeakSet = weakref.WeakSet()  # loaders whose workers outlive an epoch
_WITH_WORKERS: weakref.WeakSet = weakref.WeakSet()  # iterators whose workers are ember's (_WorkerInit)


@atexit.register  # registered after multiprocessing's exit hook, so it runs before it
def _end_workers() -> None:
    """At exit, end ember's DataLoader workers the way their DataLoader does: those of persistent
    loaders, and those of iterators still referenced (a traceback kept by a caller, say). Otherwise
    multiprocessing's exit hook stops them with SIGTERM, which ember's workers ignore
    (``_WorkerInit``), and waits forever."""
    iterators = [*_WITH_WORKERS, *(getattr(loader, "_iterator", None) for loader in list(_PERSISTENT))]
    for it in iterators:
        end_iterator(it)


def end_iterator(it: Any) -> None:
    """Stop the workers of a DataLoader iterator now (a no-op for any other iterator, or a second time)."""
    shutdown = getattr(it, "_shutdown_workers", None)
    if callable(shutdown):
        shutdown()


def end_workers(loader: Any) -> None:
    """End the workers a DataLoader keeps between epochs (``persistent_workers``), as Lightning does
    when a fit or an evaluation ends. Left to the garbage collector they stop only after a long wait:
    a loader in a reference cycle (a Trainer and its module) is collected with its queues already
    closed, so its workers never receive the message to stop, then ignore the SIGTERM that follows
    (``_WorkerInit``) for WORKER_GRACE_S, and the collection itself waits 10 s per worker."""
    if isinstance(loader, DataLoader) and getattr(loader, "_iterator", None) is not None:
        end_iterator(loader._iterator)
        loader._iterator = None


class _SeededBatch(list):
    """A batch of indices that, when a DataLoader worker starts reading it, seeds the worker's Python,
    NumPy and torch generators from (the epoch's seed, the batch's position). Random augmentation in
    workers then depends on the batch alone, not on which worker reads it or what it read before,
    so a run resumed part-way through an epoch draws the same numbers. Outside workers it is a list."""

    def __init__(self, indices, epoch_seed: int, position: int) -> None:
        super().__init__(indices)
        self.seed = hash((epoch_seed, position)) & (2**63 - 1)

    def __iter__(self):
        if torch.utils.data.get_worker_info() is not None:
            random.seed(self.seed)
            torch.manual_seed(self.seed)
            try:
                import numpy as np  # deferred: optional dependency (numpy)

                np.random.seed(self.seed % 2**32)
            except ImportError:  # pragma: no cover
                pass
        return super().__iter__()


class _Prepared:
    """Stands in for the loader's index sampler: yields the current epoch's prepared indices. One
    object per loader, because a reused iterator (``persistent_workers``) keeps the index sampler it
    was created with and iterates it again each epoch."""

    def __init__(self) -> None:
        self._it: Iterator = iter(())

    def __iter__(self) -> Iterator:
        return self._it

    def __len__(self) -> int:  # pragma: no cover - DataLoader does not ask during iteration
        raise TypeError("length unavailable")


class ResumableLoader:
    """Wraps one DataLoader for a fit; ``epoch_iterator`` starts an epoch, fresh or part-way."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.is_dataloader = isinstance(loader, DataLoader)
        self.iterable = self.is_dataloader and isinstance(loader.dataset, IterableDataset)
        self._epoch_start: dict[str, Any] = {}
        self._prepared = _Prepared()
        # several loaders read together (CombinedLoader): their generators and samplers are the epoch's too
        self.parts = [ResumableLoader(x) for x in getattr(loader, "flattened", ()) if isinstance(x, DataLoader)]
        self._live: Any = lambda: None  # a weak reference to the last epoch's iterator with workers
        if self.is_dataloader and loader.num_workers > 0 and loader.persistent_workers:
            _PERSISTENT.add(loader)

    # ---------------------------------------------------------------- what decides an epoch's order
    def _capture(self) -> dict[str, Any]:
        state: dict[str, Any] = {"torch": torch.get_rng_state()}
        state.update(self._capture_loader())
        return state

    def _capture_loader(self) -> dict[str, Any]:
        """The loader's generators and stateful samplers as they are now."""
        state: dict[str, Any] = {}
        if self.parts:
            state["parts"] = {str(i): part._capture_loader() for i, part in enumerate(self.parts)}
        if self.is_dataloader:
            state["generators"] = {k: g.get_state() for k, g in _generators(self.loader).items()}
            samplers = {}
            for i, s in enumerate(_samplers(self.loader, wrapped=True)):
                if callable(getattr(s, "state_dict", None)) and callable(getattr(s, "load_state_dict", None)):
                    samplers[str(i)] = s.state_dict()
            if samplers:
                state["samplers"] = samplers
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        self._restore_loader(state)

    def _restore_loader(self, state: dict[str, Any]) -> None:
        for k, part_state in state.get("parts", {}).items():
            if int(k) < len(self.parts):
                self.parts[int(k)]._restore_loader(part_state)
        if not self.is_dataloader:
            return
        gens = _generators(self.loader)
        for k, s in state.get("generators", {}).items():
            if k in gens:
                gens[k].set_state(s)
        samplers = _samplers(self.loader, wrapped=True)
        for k, s in state.get("samplers", {}).items():
            i = int(k)
            if i < len(samplers):
                samplers[i].load_state_dict(s)
        dataset = self.loader.dataset
        if "dataset" in state and callable(getattr(dataset, "load_state_dict", None)):
            dataset.load_state_dict(state["dataset"])

    def state_dict(self) -> dict[str, Any]:
        """What is needed to start the current epoch again exactly (recorded at its beginning), and
        under ``"now"`` the loader's state when the checkpoint is written: at an epoch's end, the
        next epoch starts from that (the global random states come from the checkpoint's ``rng``)."""
        state = dict(self._epoch_start)
        dataset = getattr(self.loader, "dataset", None)
        if self.is_dataloader and callable(getattr(dataset, "state_dict", None)):
            state["dataset"] = dataset.state_dict()
        if self.is_dataloader or self.parts:
            state["now"] = self._capture_loader()
        return state

    def restore_epoch_end(self, state: dict[str, Any] | None) -> None:
        """Resume from a checkpoint written at an epoch's end: put the loader's generators, stateful
        samplers and dataset where they were when it was written (``state`` is what ``state_dict()``
        returned then), so the next ``epoch_iterator`` draws what the uninterrupted run drew.
        Checkpoints from before this was recorded leave the loader as it is."""
        if not state or "now" not in state:
            return
        now = dict(state["now"])
        if "dataset" in state:
            now["dataset"] = state["dataset"]
        self._restore_loader(now)

    def close(self) -> None:
        """End the workers this loader started: the last epoch's iterator (still alive when an error
        ended the epoch, its traceback holds it) and those a persistent loader keeps."""
        end_iterator(self._live())
        end_workers(self.loader)

    # ---------------------------------------------------------------- iteration
    def epoch_iterator(self, epoch: int, skip: int = 0, resume: dict[str, Any] | None = None) -> tuple[Iterator, int]:
        """An iterator over the epoch's batches starting after ``skip`` consumed ones.

        Returns the iterator and the number of batches actually skipped (0 when the data cannot be
        resumed part-way, with a warning). ``resume`` is what ``state_dict()`` returned when the
        checkpoint was written; without it the epoch starts fresh from the current random state.
        """
        loaders = [self.loader] if self.is_dataloader else [part.loader for part in self.parts]
        for s in (s for x in loaders for s in _samplers(x)):
            if callable(getattr(s, "set_epoch", None)):
                s.set_epoch(epoch)
        if resume:
            self._restore(resume)
        self._epoch_start = self._capture()
        if not self.is_dataloader:
            it = iter(self.loader)
            return (itertools.islice(it, skip, None) if skip else it), skip
        if self.iterable:
            return self._iterable_iterator(skip, resume)
        loader = self.loader
        index_sampler = loader.batch_sampler if loader.batch_sampler is not None else loader.sampler
        batch_seed = None
        if loader.num_workers > 0 and loader.batch_sampler is not None:
            batch_seed = _draw_seed(loader.generator)
        indices = iter(index_sampler)
        first = next(indices, _END)  # draw the sampler's randomness now, in a fixed order
        # Where the DataLoader drew its base seed before (files written then resume the same), but before
        # a sampler's later, lazy draws (RandomSampler(replacement=True) draws 32 indices at a time).
        iterator_seed = _draw_seed(loader.generator)
        indices = itertools.chain(() if first is _END else (first,), indices)
        if skip:
            consumed = sum(1 for _ in itertools.islice(indices, skip))
            if consumed < skip:
                skip = consumed
        if batch_seed is not None:
            indices = (_SeededBatch(b, batch_seed, k) for k, b in enumerate(indices, start=skip))
        attr = "batch_sampler" if loader.batch_sampler is not None else "sampler"
        original = getattr(loader, attr)
        self._prepared._it = indices
        object.__setattr__(loader, attr, self._prepared)
        try:
            return self._iter_with_workers_shielded(iterator_seed), skip
        finally:
            object.__setattr__(loader, attr, original)

    def _iter_with_workers_shielded(self, iterator_seed: int) -> Iterator:
        """iter(loader) with workers that ignore SIGTERM/SIGUSR1 sent to the whole process group, and
        whose own draws (the workers' base seed) come from a generator seeded by ``iterator_seed``."""
        loader = self.loader
        user_fn, user_gen = loader.worker_init_fn, loader.generator
        if loader.num_workers > 0 and not isinstance(user_fn, _WorkerInit):
            loader.worker_init_fn = _WorkerInit(user_fn)
        object.__setattr__(loader, "generator", torch.Generator().manual_seed(iterator_seed))
        try:
            it = iter(loader)
            if loader.num_workers > 0:
                _WITH_WORKERS.add(it)
                self._live = weakref.ref(it)
            return it
        finally:
            loader.worker_init_fn = user_fn
            object.__setattr__(loader, "generator", user_gen)

    def _iterable_iterator(self, skip: int, resume: dict[str, Any] | None) -> tuple[Iterator, int]:
        iterator_seed = _draw_seed(self.loader.generator)
        dataset = self.loader.dataset
        stateful = callable(getattr(dataset, "load_state_dict", None)) and self.loader.num_workers == 0
        if skip and resume and stateful and "dataset" in resume:
            return self._iter_with_workers_shielded(iterator_seed), skip  # _restore put the dataset where it was
        if skip:
            warnings.warn(
                f"resuming part-way through an epoch of an IterableDataset ({type(dataset).__name__}) is not "
                "possible without reading the skipped data, so the epoch starts again from its beginning. "
                "Give the dataset state_dict()/load_state_dict() (with num_workers=0), or use a map-style "
                "Dataset, for exact mid-epoch resume.",
                stacklevel=3,
            )
        return self._iter_with_workers_shielded(iterator_seed), 0


def _draw_seed(generator: torch.Generator | None) -> int:
    """One 64-bit draw from ``generator`` (the global torch generator when None), as the DataLoader draws."""
    return int(torch.empty((), dtype=torch.int64).random_(generator=generator))


_END = object()


def limit_batches(limit: int | float, total: int | None) -> int | float:
    """Batches to use per epoch: an int, or a fraction of the loader's length (settings checked the type)."""
    if isinstance(limit, int):
        return limit if total is None else min(limit, total)
    if total is None:
        return math.inf if limit == 1.0 else 0
    return int(total * limit)


def checked_batches(prefix: str, limit: int | float, total: int | None) -> int | float:
    """``limit_batches``, refusing as Lightning does a fraction (other than 0 and 1) of a loader without a length,
    and a fraction that leaves none of a loader's batches; ``prefix`` names the stage (``"train"``, ``"val"``)."""
    if total is None and isinstance(limit, float) and limit not in (0.0, 1.0):
        raise MisconfigurationError(f"When using an `IterableDataset`, `Trainer(limit_{prefix}_batches)` must be "
                                    f"`1.0` or an int. An int specifies `num_{prefix}_batches` to use.")
    n = limit_batches(limit, total)
    if n == 0 and isinstance(limit, float) and limit > 0.0 and total:
        raise MisconfigurationError(f"You requested to check {limit} of the `{prefix}_dataloader` but {limit} * "
                                    f"{total} < 1. Please increase the `limit_{prefix}_batches` argument. Try at "
                                    f"least `limit_{prefix}_batches={1.0 / total}`")
    return n


def sanity_batches(steps: int, limit: int | float, loaders: list) -> list[int | float]:
    """Per loader, the batches the sanity check runs, as Lightning counts them: ``num_sanity_val_steps`` (-1: all)
    of the batches ``limit_val_batches`` leaves, as a limit (an int count, or 1.0 for a whole loader without a
    length)."""
    counts = [limit_batches(limit, length(loader)) for loader in loaders]
    counts = counts if steps == -1 else [min(steps, n) for n in counts]
    return [1.0 if math.isinf(n) else int(n) for n in counts]


def length(loader: Any) -> int | None:
    try:
        return len(loader)
    except TypeError:  # an IterableDataset without __len__
        return None
