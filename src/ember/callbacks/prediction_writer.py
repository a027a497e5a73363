"""BasePredictionWriter: write predictions as they are made, or once per prediction epoch (Lightning's callback)."""

from __future__ import annotations

from enum import Enum

from typing import Any

import torch

from ember.core.callback import Callback
from ember.errors import MisconfigurationError

_INTERVALS = ("batch", "epoch", "batch_and_epoch")



class WriteInterval(str, Enum):
    """When ``BasePredictionWriter`` writes: after each batch, after the epoch, or both (Lightning's names)."""

    BATCH = "batch"
    EPOCH = "epoch"
    BATCH_AND_EPOCH = "batch_and_epoch"

class BasePredictionWriter(Callback):
    """Subclass it and override ``write_on_batch_end`` and/or ``write_on_epoch_end``;
    ``write_interval`` ("batch", "epoch" or "batch_and_epoch") says which of them run.

    ``batch_indices`` are the dataset indices of each batch, read from the loader's batch sampler
    (None for a loader without one, e.g. an ``IterableDataset``). With a shuffling sampler they are
    the indices of the order the loader really uses: the sampler is read once ahead with the random
    state saved and put back.

    Args:
        write_interval: "batch" (default), "epoch" or "batch_and_epoch"; another raises
            ``MisconfigurationError``.
    """

    def __init__(self, write_interval: str = "batch") -> None:
        if write_interval not in _INTERVALS:
            raise MisconfigurationError(f"write_interval must be one of {list(_INTERVALS)}; received "
                                        f"{write_interval!r}.")
        self.interval = write_interval
        self._indices: list[list | None] = []
        self._predictions: list[list] = []
        self._batch_indices: list[list] = []

    def write_on_batch_end(self, trainer, pl_module, prediction: Any, batch_indices: list | None, batch: Any,
                           batch_idx: int, dataloader_idx: int) -> None:
        """Write one batch's ``prediction`` (called after each predict batch with interval "batch").

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule predicting.
            prediction: what ``predict_step`` returned for the batch.
            batch_indices: the dataset indices of the batch's samples, or None when unknown.
            batch: the batch.
            batch_idx: the batch's index in the loader.
            dataloader_idx: the index of the loader.
        """
        raise NotImplementedError(f"{type(self).__name__} has write_interval={self.interval!r} but does not "
                                  "override write_on_batch_end(); override it.")

    def write_on_epoch_end(self, trainer, pl_module, predictions: list, batch_indices: list) -> None:
        """Write every prediction of the epoch (a list per loader when there are several); ``batch_indices``
        is always a list per loader of each batch's indices.

        Args:
            trainer: the Trainer running.
            pl_module: the LightningModule predicting.
            predictions: every batch's prediction, in order (a list per loader with several loaders).
            batch_indices: per loader, each batch's dataset indices.
        """
        raise NotImplementedError(f"{type(self).__name__} has write_interval={self.interval!r} but does not "
                                  "override write_on_epoch_end(); override it.")

    def on_predict_epoch_start(self, trainer, pl_module) -> None:
        loaders = getattr(trainer, "_stage_loaders", {}).get("predict") or []
        self._indices = [_batch_indices(loader) for loader in loaders]
        self._predictions = [[] for _ in loaders]
        self._batch_indices = [[] for _ in loaders]

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        indices = self._indices[dataloader_idx] if dataloader_idx < len(self._indices) else None
        batch_indices = indices[batch_idx] if indices is not None and batch_idx < len(indices) else None
        if self.interval in ("batch", "batch_and_epoch"):
            self.write_on_batch_end(trainer, pl_module, outputs, batch_indices, batch, batch_idx, dataloader_idx)
        if self.interval in ("epoch", "batch_and_epoch") and dataloader_idx < len(self._predictions):
            self._predictions[dataloader_idx].append(outputs)
            self._batch_indices[dataloader_idx].append(batch_indices)

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        if self.interval in ("epoch", "batch_and_epoch"):
            one = len(self._predictions) == 1
            # as Lightning: one loader's predictions come unwrapped, the batch indices always per loader
            self.write_on_epoch_end(trainer, pl_module, self._predictions[0] if one else self._predictions,
                                    self._batch_indices)
        self._predictions, self._batch_indices = [], []


def _batch_indices(loader) -> list | None:
    """The dataset indices of every batch ``loader`` will yield, without changing what it yields."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    if batch_sampler is None:
        sampler = getattr(loader, "sampler", None)
        if sampler is None or getattr(loader, "batch_size", 1) is not None:
            return None
        return _replayed(loader, lambda: [[i] for i in sampler])  # batch_size=None: one sample per batch
    return _replayed(loader, lambda: [list(b) for b in batch_sampler])


def _replayed(loader, read) -> list | None:
    """``read()`` with every random state it may draw from saved first and put back after."""
    sampler = getattr(loader, "sampler", None)
    wrapped = getattr(sampler, "sampler", None)  # the custom sampler a ShardedSampler draws from (DDP)
    generators = [g for g in (getattr(sampler, "generator", None), getattr(wrapped, "generator", None),
                              getattr(loader, "generator", None)) if g is not None]
    torch_state = torch.get_rng_state()
    saved = [g.get_state() for g in generators]
    try:
        torch.empty((), dtype=torch.int64).random_(generator=getattr(loader, "generator", None))  # as iter(loader):
        return read()  # its workers' base seed is drawn first, then the sampler's
    except TypeError:  # a sampler without a length or that cannot be read twice
        return None
    finally:
        torch.set_rng_state(torch_state)
        for g, st in zip(generators, saved):
            g.set_state(st)
