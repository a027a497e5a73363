"""CombinedLoader: several iterables read together, in one of Lightning's four modes.

``fit(model, [loader_a, loader_b])`` or ``fit(model, {"a": loader_a, "b": loader_b})`` trains on
``CombinedLoader(..., mode="max_size_cycle")``: each batch is a list (or dict) holding one batch of
every loader, the shorter ones starting again until the longest ends."""

from __future__ import annotations

from typing import Any, Iterator

from ember.errors import MisconfigurationError

MODES = ("min_size", "max_size_cycle", "max_size", "sequential")


def _flatten(iterables: Any) -> tuple[list, Any]:
    """The leaves of a list/tuple/dict of iterables, and a function that puts values back in that shape."""
    if isinstance(iterables, dict):
        keys = list(iterables)
        return [iterables[k] for k in keys], lambda values: dict(zip(keys, values))
    if isinstance(iterables, (list, tuple)):
        kind = type(iterables)
        return list(iterables), (lambda values: list(values)) if kind is list else (lambda values: kind(values))
    return [iterables], lambda values: values[0]


def _len(iterable: Any) -> int | None:
    try:
        return len(iterable)
    except TypeError:
        return None


class CombinedLoader:
    """Iterate ``iterables`` (one, or a list, tuple or dict of them) together.

    ``mode``: ``"min_size"`` stops with the shortest; ``"max_size_cycle"`` runs until the longest ends,
    restarting the shorter ones; ``"max_size"`` runs until the longest ends, giving None for those
    already exhausted; ``"sequential"`` reads one iterable after the other. Iterating yields
    ``(batch, batch_idx, dataloader_idx)`` as Lightning's does (``dataloader_idx`` is 0 except in
    sequential mode, where ``batch`` is one iterable's batch and ``batch_idx`` counts within it).
    """

    def __init__(self, iterables: Any, mode: str = "min_size") -> None:
        if mode not in MODES:
            raise MisconfigurationError(f"CombinedLoader mode must be one of {list(MODES)}; received {mode!r}.")
        self._iterables, self._mode = iterables, mode
        self._leaves, self._pack = _flatten(iterables)
        self._limits: list[int | float] | None = None

    @property
    def iterables(self) -> Any:
        """The iterables as given."""
        return self._iterables

    @property
    def flattened(self) -> list:
        """The iterables as a flat list."""
        return list(self._leaves)

    @flattened.setter
    def flattened(self, leaves: list) -> None:
        if len(leaves) != len(self._leaves):
            raise ValueError(f"flattened must keep the number of iterables ({len(self._leaves)}); received "
                             f"{len(leaves)}.")
        self._leaves = list(leaves)
        self._iterables = self._pack(self._leaves)

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def sampler(self) -> Any:
        """Each iterable's ``sampler`` (None where it has none), in the iterables' shape."""
        return self._pack([getattr(x, "sampler", None) for x in self._leaves])

    @property
    def batch_sampler(self) -> Any:
        """Each iterable's ``batch_sampler`` (None where it has none), in the iterables' shape."""
        return self._pack([getattr(x, "batch_sampler", None) for x in self._leaves])

    @property
    def limits(self) -> list[int | float] | None:
        """Batches read from each iterable at most (None: no limit)."""
        return self._limits

    @limits.setter
    def limits(self, limits: int | float | list | None) -> None:
        if limits is not None and not isinstance(limits, list):
            limits = [limits] * len(self._leaves)
        if limits is not None and len(limits) != len(self._leaves):
            raise ValueError(f"limits must give one value per iterable ({len(self._leaves)}); received {limits}.")
        self._limits = limits

    def _lengths(self) -> list[int | float | None]:
        out = []
        for i, leaf in enumerate(self._leaves):
            n = _len(leaf)
            limit = None if self._limits is None else self._limits[i]
            out.append(n if limit is None else (limit if n is None else min(n, limit)))
        return out

    def __len__(self) -> int:
        lengths = self._lengths()
        if any(n is None for n in lengths):
            raise TypeError("a CombinedLoader over an iterable without a length has no length")
        if not lengths:
            return 0
        if self._mode == "min_size":
            return int(min(lengths))
        if self._mode == "sequential":
            return int(sum(lengths))
        return int(max(lengths))

    def _dataset_length(self) -> int:
        """The combined number of samples, by the mode's rule over the datasets' lengths."""
        sizes = [len(getattr(leaf, "dataset", leaf)) for leaf in self._leaves]
        if self._mode == "min_size":
            return min(sizes)
        return sum(sizes) if self._mode == "sequential" else max(sizes)

    def reset(self) -> None:
        """Nothing is held between iterations; kept for Lightning's API."""

    def __iter__(self) -> Iterator[tuple[Any, int, int]]:
        if self._mode == "sequential":
            return self._sequential()
        return ((batch, i, 0) for i, batch in enumerate(self.batches()))

    def batches(self) -> Iterator[Any]:
        """The combined batches alone (what ``training_step`` receives), for the non-sequential modes."""
        if self._mode == "sequential":
            raise MisconfigurationError("CombinedLoader(mode='sequential') yields one iterable's batches at a time; "
                                        "iterate it for (batch, batch_idx, dataloader_idx).")
        lengths = self._lengths()
        iterators = [iter(leaf) for leaf in self._leaves]
        done = [False] * len(iterators)
        count = [0] * len(iterators)
        while True:
            values = []
            for k, it in enumerate(iterators):
                value, exhausted = self._next(k, it, count, lengths)
                if exhausted:
                    if self._mode == "min_size":
                        return
                    done[k] = True
                    if all(done):
                        return
                    if self._mode == "max_size_cycle":
                        iterators[k], count[k] = iter(self._leaves[k]), 0
                        value, exhausted = self._next(k, iterators[k], count, lengths)
                        if exhausted:
                            return  # an empty iterable
                    else:
                        value = None
                values.append(value)
            yield self._pack(values)

    def _next(self, k: int, it: Iterator, count: list[int], lengths: list) -> tuple[Any, bool]:
        if lengths[k] is not None and count[k] >= lengths[k]:
            return None, True
        try:
            value = next(it)
        except StopIteration:
            return None, True
        count[k] += 1
        return value, False

    def _sequential(self) -> Iterator[tuple[Any, int, int]]:
        lengths = self._lengths()
        for k, leaf in enumerate(self._leaves):
            for i, batch in enumerate(leaf):
                if lengths[k] is not None and i >= lengths[k]:
                    break
                yield batch, i, k


class TrainBatches:
    """What fit iterates when given several training loaders: the combined batches alone, with the
    CombinedLoader's length; ``flattened`` exposes the loaders (their samplers get ``set_epoch``)."""

    def __init__(self, combined: CombinedLoader) -> None:
        if combined.mode == "sequential":
            raise MisconfigurationError("fit() cannot train on CombinedLoader(mode='sequential'); use 'max_size_cycle'"
                                        ", 'min_size' or 'max_size' (Lightning refuses it too).")
        self.combined = combined

    @property
    def flattened(self) -> list:
        return self.combined.flattened

    def __len__(self) -> int:
        return len(self.combined)

    def __iter__(self) -> Iterator[Any]:
        return self.combined.batches()


def as_train_data(train: Any) -> Any:
    """A training loader as fit reads it: a list/tuple/dict of loaders, or a CombinedLoader, gives
    its combined batches (``max_size_cycle`` for a plain collection, as Lightning)."""
    if isinstance(train, CombinedLoader):
        return TrainBatches(train)
    if isinstance(train, (list, tuple, dict)):
        return TrainBatches(CombinedLoader(train, mode="max_size_cycle"))
    return train


def map_loaders(train: Any, fn) -> Any:
    """``train`` with ``fn`` applied to each loader it holds (one loader, a list/tuple/dict of them, or a
    CombinedLoader), in the same shape: each of several training loaders is sharded across ranks."""
    if isinstance(train, CombinedLoader):
        leaves, pack = _flatten(train.iterables)
        return CombinedLoader(pack([fn(x) for x in leaves]), mode=train.mode)
    if isinstance(train, (list, tuple, dict)):
        leaves, pack = _flatten(train)
        return pack([fn(x) for x in leaves])
    return fn(train)
