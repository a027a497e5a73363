"""The batch-size finder: try growing batch sizes for a few steps each until memory runs out (or the
dataset, ``max_trials`` or ``max_val`` is reached); ``"binsearch"`` then narrows down between the last
size that fitted and the first that did not (Lightning's ``scale_batch_size``)."""

from __future__ import annotations

import gc
import logging

import torch

from ember.loops.data import ResumableLoader
from ember.errors import MisconfigurationError
from ember.tuner.attrs import lightning_getattr, lightning_hasattr, lightning_setattr
from ember.tuner.session import reset_progress, searching
from ember.loops.combined_loader import as_train_data

log = logging.getLogger("ember")


def is_oom_error(error: BaseException) -> bool:
    """Whether ``error`` says the device ran out of memory (CUDA, cuDNN or the CPU allocator)."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    text = str(error) if isinstance(error, RuntimeError) else ""
    return any(s in text for s in ("CUDA out of memory", "CUDNN_STATUS_NOT_SUPPORTED", "DefaultCPUAllocator: can't "
                                   "allocate memory", "out of memory"))


def _free() -> None:
    """Give the failed trial's memory back to the device (on CPU, reference counting has already)."""
    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()


def _dataset_length(loader) -> int | None:
    data = as_train_data(loader)
    leaves = getattr(data, "flattened", [data])
    try:
        return max(len(getattr(x, "dataset", x)) for x in leaves)
    except TypeError:
        return None


class _Scaler:
    def __init__(self, trainer, model, batch_arg_name: str, max_val: int) -> None:
        self.trainer, self.model, self.name, self.max_val = trainer, model, batch_arg_name, max_val

    def reload(self) -> None:
        """The training loader built again by the module/datamodule, with the new batch size."""
        loop = self.trainer.fit_loop
        train, val = loop.parts.reload()
        loop.parts.train_data = ResumableLoader(as_train_data(train))
        loop.parts.train_batches = None  # counted again from the new loader
        self.trainer._train_loader = train

    def adjust(self, factor: float = 1.0, value: int | None = None) -> tuple[int, bool]:
        size = lightning_getattr(self.model, self.name)
        n = _dataset_length(self.trainer._train_loader)
        if n is not None and size >= n:
            log.info("batch size %d is at least the dataset's length %d: the search stops.", size, n)
            return size, False
        new = min(value if value is not None else int(size * factor), self.max_val)
        lightning_setattr(self.model, self.name, new)
        return new, new != size


def scale_batch_size(trainer, model, mode: str = "power", steps_per_trial: int = 3, init_val: int = 2,
                     max_trials: int = 25, batch_arg_name: str = "batch_size", margin: float = 0.05,
                     max_val: int = 8192) -> int | None:
    """Run the search inside a running fit (from ``on_fit_start``); the run's state is restored after
    it and ``batch_arg_name`` is left at the size found, which is returned."""
    if mode not in ("power", "binsearch"):
        raise MisconfigurationError(f"scale_batch_size mode must be 'power' or 'binsearch'; received {mode!r}.")
    if trainer.fast_dev_run:
        log.warning("scale_batch_size is skipped under fast_dev_run.")
        return None
    if not lightning_hasattr(model, batch_arg_name):
        raise MisconfigurationError(f"the batch-size finder sets `{batch_arg_name}` but neither the model nor its "
                                    f"datamodule has that attribute or hparam; add it, or pass batch_arg_name=...")
    if trainer.fit_loop.parts.reload is None or not _from_module(trainer):
        raise MisconfigurationError("the batch-size finder builds the training loader again for each size, so the "
                                    "loader must come from train_dataloader() of the model or datamodule, not be "
                                    "passed to fit()/scale_batch_size().")
    scaler = _Scaler(trainer, model, batch_arg_name, max_val)
    lightning_setattr(model, batch_arg_name, init_val)
    with searching(trainer, [], max_steps=steps_per_trial, limit_val_batches=steps_per_trial) as loop:
        start = loop.progress.state_dict()
        scaler.reload()
        run = _power if mode == "power" else _binsearch
        size = run(scaler, loop, start, init_val, max_trials)
    if mode == "binsearch" and margin > 0:
        size = max(1, int(size * (1 - margin)))
    lightning_setattr(model, batch_arg_name, size)
    scaler.reload()
    log.info("batch-size finder: fit continues with batch size %d", size)
    return size


def _from_module(trainer) -> bool:
    """Whether the module or datamodule builds the training loader (``train_dataloader()``)."""
    dm = trainer.datamodule
    source = dm if dm is not None and callable(getattr(dm, "train_dataloader", None)) else trainer.lightning_module
    return callable(getattr(source, "train_dataloader", None))


def _trial(scaler: _Scaler, loop, start: dict) -> bool:
    """One trial; False when it ran out of memory."""
    _free()
    reset_progress(loop, start)
    try:
        loop.run()
        return True
    except RuntimeError as e:
        if not is_oom_error(e):
            raise
        _free()
        return False


def _power(scaler: _Scaler, loop, start: dict, size: int, max_trials: int) -> int:
    any_success = False
    for i in range(max_trials):
        if size >= scaler.max_val:
            break
        if _trial(scaler, loop, start):
            if i + 1 >= max_trials:
                break
            size, changed = scaler.adjust(factor=2.0)
            if not changed:
                break
            any_success = True
        else:
            size, _ = scaler.adjust(factor=0.5)
            if any_success:
                scaler.reload()
                break
        scaler.reload()
    return size


def _binsearch(scaler: _Scaler, loop, start: dict, size: int, max_trials: int) -> int:
    low, high, count = 1, None, 0
    while True:
        if size >= scaler.max_val:
            break
        if _trial(scaler, loop, start):
            count += 1
            if count >= max_trials:
                break
            low = size
            if high:
                if high - low <= 1:
                    break
                size, changed = scaler.adjust(value=(high + low) // 2)
            else:
                size, changed = scaler.adjust(factor=2.0)
            if not changed:
                break
        else:
            high = size
            size, _ = scaler.adjust(value=(high + low) // 2)
            if high - low <= 1:
                scaler.reload()
                break
        scaler.reload()
    return size
