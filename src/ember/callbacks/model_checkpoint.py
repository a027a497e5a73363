"""ModelCheckpoint: the callback that connects the loop's hooks to a ``CheckpointManager``."""

from __future__ import annotations

import math
import os
import warnings
from datetime import timedelta
from typing import Any

import torch

from ember import compat
from ember.callbacks.checkpoint import Checkpoint
from ember.checkpoint import policies
from ember.checkpoint.manager import CheckpointManager, Naming
from ember.checkpoint.storage.local import LocalStorage
from ember.errors import MisconfigurationError
from ember.loggers.yaml_text import dump_yaml


class ModelCheckpoint(Checkpoint):
    """Save checkpoints during fit.

    Args:
        dirpath: folder for the files (default ``<default_root_dir>/checkpoints``).
        filename: name template, e.g. ``"{epoch}-{val_loss:.2f}"`` (default ``"{epoch}-{step}"``);
            it names a file inside ``dirpath`` (no ``/``).
        monitor: metric to rank checkpoints by; None ranks by recency (keeps the latest).
        mode: ``"min"`` or ``"max"``.
        save_top_k: keep the k best (``True`` means 1, ``-1`` all, ``0`` none).
        save_last: also keep ``last.ckpt``, a copy of every save (the newest saved state); when training ends
            with nothing saved at all, the state then (Lightning's rule).
        every_n_epochs / every_n_train_steps / train_time_interval: when to save; they compose (a
            save happens when any of them is due). With none given, saves after every epoch. As in Lightning,
            the end of training is not a save of its own: the steps after the last due save are not saved.
        keep_every_n_train_steps: also keep, for good, every checkpoint whose step is a multiple of n.
        save_weights_only: write weights, hparams, epoch and step only (cannot resume training).
        verbose: print a line for each save.
        async_save: write in a background thread (the loop pauses only for the snapshot); files that
            the keep policies let go are deleted only after the better file is committed.
        state_key: the key of this callback's state in checkpoints (default: ``ModelCheckpoint``,
            plus ``[monitor:mode]`` when monitoring). Give two ModelCheckpoints different keys.
        storage_options: passed to the fsspec backend of a URL ``dirpath`` (credentials, endpoint).
        filepath, prefix: the seed's names. ``filepath`` is a folder, or a folder plus a template.
        save_on_train_epoch_end: save at the end of the training epoch (True) or after validation
            (False). None, as Lightning: after validation when it runs other than once per epoch
            (``val_check_interval`` < 1 or time-based, ``check_val_every_n_epoch`` other than 1), else at the
            epoch's end.
        save_on_exception: when fit raises, save the state of the last completed batch under the name
            ``filename`` gives (and ``last.ckpt`` with ``save_last``), unless this step was just saved, then
            let the exception go on; ``fit(ckpt_path=...)`` resumes from it (unless ``save_weights_only``).
    """

    def __init__(
        self,
        dirpath: str | os.PathLike | None = None,
        filename: str | None = None,
        monitor: str | None = None,
        mode: str = "min",
        save_top_k: int | bool = 1,
        save_last: bool | None = None,
        every_n_epochs: int | None = None,
        every_n_train_steps: int | None = None,
        train_time_interval: timedelta | None = None,
        save_weights_only: bool = False,
        verbose: bool = False,
        filepath: str | os.PathLike | None = None,
        prefix: str = "",
        auto_insert_metric_name: bool = True,
        async_save: bool = True,
        keep_every_n_train_steps: int | None = None,
        state_key: str | None = None,
        storage_options: dict | None = None,
        save_on_train_epoch_end: bool | None = None,
        save_on_exception: bool = False,
    ) -> None:
        dirpath, filename = compat.split_filepath(filepath, dirpath, filename)
        if dirpath is not None and "://" not in os.fspath(dirpath):
            dirpath = os.path.expanduser(dirpath)  # Lightning expands ~ (a URL is left alone)
        if mode not in ("min", "max"):
            raise MisconfigurationError(f"ModelCheckpoint mode must be 'min' or 'max'; received {mode!r}.")
        save_top_k = int(save_top_k) if isinstance(save_top_k, bool) else save_top_k
        if not isinstance(save_top_k, int) or save_top_k < -1:
            raise MisconfigurationError(f"save_top_k must be an int >= -1 (or True); received {save_top_k!r}.")
        if monitor is None and save_top_k not in (-1, 0, 1):
            raise MisconfigurationError(
                f"ModelCheckpoint(save_top_k={save_top_k}) needs a monitor to rank checkpoints by; pass "
                "monitor='val_loss' (or another logged metric), or save_top_k=-1 to keep every checkpoint.")
        for name, value in (("every_n_epochs", every_n_epochs), ("every_n_train_steps", every_n_train_steps),
                            ("keep_every_n_train_steps", keep_every_n_train_steps)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise MisconfigurationError(f"{name} must be a positive int or None; received {value!r}.")
        if train_time_interval is not None and not isinstance(train_time_interval, timedelta):
            raise MisconfigurationError(
                f"train_time_interval must be a datetime.timedelta; received {type(train_time_interval).__name__}.")
        if filename is not None and filename.endswith(compat.EXTENSION):
            filename = filename[: -len(compat.EXTENSION)]
        self.filename = filename
        self.monitor, self.mode, self.save_top_k = monitor, mode, save_top_k
        self.save_last, self.save_weights_only, self.verbose = save_last, save_weights_only, verbose
        self.prefix = prefix
        self._state_key = state_key
        self._save_on_train_epoch_end, self.save_on_exception = save_on_train_epoch_end, save_on_exception
        self.manager = CheckpointManager(
            when=_when(every_n_epochs, every_n_train_steps, train_time_interval),
            keep=_keep(monitor, mode, save_top_k, keep_every_n_train_steps),
            naming=Naming(filename or "{epoch}-{step}", prefix, auto_insert_metric_name),
            monitor=monitor, mode=mode, save_last=bool(save_last), weights_only=save_weights_only,
            async_save=async_save, dirpath=os.fspath(dirpath) if dirpath is not None else None,
            storage_options=storage_options, verbose=verbose)

    @property
    def state_key(self) -> str:
        if self._state_key is not None:
            return self._state_key
        return "ModelCheckpoint" if self.monitor is None else f"ModelCheckpoint[{self.monitor}:{self.mode}]"

    # ---------------------------------------------------------------- what it knows (Lightning's names)
    @property
    def dirpath(self) -> str | None:
        """The folder (path or URL) checkpoints go to; known once fit has started if not given."""
        m = self.manager
        return m.store.describe() if m.store is not None else m.dirpath

    @property
    def best_model_path(self) -> str:
        best = self.manager.best
        return self.manager.location(best.name) if best else ""

    @property
    def best_model_score(self) -> torch.Tensor | None:
        """The best checkpoint's monitored value, a 0-dim tensor as in Lightning (None before one is saved)."""
        best = self.manager.best
        return _tensor(best.score) if best else None

    @property
    def best_k_models(self) -> dict[str, torch.Tensor | None]:
        """Location -> monitored value (a 0-dim tensor, as in Lightning; the global step without a monitor)."""
        m = self.manager
        return {m.location(r.name): _tensor(r.score if m.monitor else float(r.global_step)) for r in m.book.records}

    @property
    def current_score(self) -> torch.Tensor | None:
        """The monitored value of the newest checkpoint among the kept ones (None without a monitor)."""
        records = self.manager.book.records
        return _tensor(records[-1].score) if records and self.manager.monitor else None

    def to_yaml(self, filepath: str | os.PathLike | None = None) -> None:
        """Write ``best_k_models`` (location -> monitored value) as YAML, as Lightning does.

        Args:
            filepath: where (default ``best_k_models.yaml`` in the checkpoint folder).
        """
        text = dump_yaml({k: (None if v is None else v.item()) for k, v in self.best_k_models.items()})
        if filepath is not None:
            with open(filepath, "w") as f:
                f.write(text)
            return
        if self.manager.store is None:
            raise MisconfigurationError("ModelCheckpoint.to_yaml() without a filepath needs the checkpoint folder, "
                                        "which is known once fit starts; pass to_yaml(filepath=...).")
        with self.manager.store.open_write("best_k_models.yaml") as f:
            f.write(text.encode())

    @property
    def kth_best_model_path(self) -> str:
        return self.manager.state_dict()["kth_best_model_path"]

    @property
    def kth_value(self) -> torch.Tensor | None:
        kth = self.kth_best_model_path
        return self.best_k_models.get(kth) if kth else None

    @property
    def last_model_path(self) -> str:
        return self.manager.location(self.manager.book.last)

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return self.manager.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        store = self.manager.store
        saved_dir = state.get("dirpath")
        same = store is None or saved_dir is None or _same_place(saved_dir, store.describe())
        self.manager.load_state_dict(state, same_place=same)

    # ---------------------------------------------------------------- hooks
    def on_fit_start(self, trainer, module) -> None:
        store = self.manager.store
        if self.save_top_k != 0 and trainer.is_global_zero and store is not None and _has_entries(store):
            warnings.warn(f"Checkpoint directory {self.dirpath} exists and is not empty.", stacklevel=2)  # Lightning's

    def on_train_start(self, trainer, module) -> None:
        self.manager.start(trainer.global_step)  # fresh: nothing to save yet; resumed: already on disk

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx: int) -> None:
        self.manager.on_step(trainer.dump_checkpoint, **self._facts(trainer))

    def on_train_epoch_end(self, trainer, module) -> None:
        if self._saves_at_epoch_end(trainer):
            self.manager.on_epoch_end(trainer.dump_checkpoint, **self._facts(trainer))

    def on_validation_end(self, trainer, module) -> None:
        if trainer.fitting and not trainer.sanity_checking and not self._saves_at_epoch_end(trainer):
            self.manager.on_epoch_end(trainer.dump_checkpoint, **self._facts(trainer))

    def on_exception(self, trainer, module, exception: BaseException) -> None:
        if self.save_on_exception and trainer.fitting and not trainer.sanity_checking:
            name = self.manager.save_on_exception(trainer.dump_checkpoint, **self._facts(trainer))
            if name is not None and trainer.is_global_zero:
                print(f"An {type(exception).__name__} was raised with message: {exception}, saved checkpoint to "
                      f"{self.manager.location(name)}", flush=True)

    def _saves_at_epoch_end(self, trainer) -> bool:
        """Lightning's rule: at the training epoch's end, unless validation runs other than once per epoch."""
        if self._save_on_train_epoch_end is not None:
            return self._save_on_train_epoch_end
        s, loop = trainer.settings, trainer.fit_loop
        if s.val_check_seconds is not None or s.check_val_every_n_epoch != 1:  # time-based: after validation
            return False
        if loop is None or not loop.parts.val_loaders or not s.limit_val_batches:
            return True
        return s.val_check_interval == 1.0

    def on_train_end(self, trainer, module) -> None:
        self.manager.on_train_end(trainer.dump_checkpoint, **self._facts(trainer))

    def _facts(self, trainer) -> dict[str, Any]:
        """What a save decision sees. As Lightning's monitor candidates: ``epoch`` and ``step`` can be
        monitored, and a NaN monitored value ranks as the worst possible (+inf for min, -inf for max)."""
        epoch, step = trainer.fit_loop.progress.epoch, trainer.global_step
        metrics = trainer.callback_metrics_float()
        metrics.setdefault("epoch", float(epoch))
        metrics.setdefault("step", float(step))
        if self.monitor in metrics and math.isnan(metrics[self.monitor]):
            metrics[self.monitor] = math.inf if self.mode == "min" else -math.inf
        return {"epoch": epoch, "global_step": step, "metrics": metrics}


def _tensor(score: float | None) -> torch.Tensor | None:
    return None if score is None else torch.tensor(float(score))





def _same_place(a: str, b: str) -> bool:
    if "://" in a or "://" in b:
        return a.rstrip("/") == b.rstrip("/")
    return os.path.abspath(a) == os.path.abspath(b)


def _when(every_n_epochs, every_n_train_steps, train_time_interval) -> list:
    when: list = []
    if every_n_epochs:
        when.append(policies.EveryNEpochs(every_n_epochs))
    if every_n_train_steps:
        when.append(policies.EveryNSteps(every_n_train_steps))
    if train_time_interval is not None:
        when.append(policies.EveryInterval(train_time_interval.total_seconds()))
    if every_n_epochs is None and not when:
        when.append(policies.EveryNEpochs(1))
    return when


def _keep(monitor, mode, save_top_k, keep_every_n_train_steps) -> list:
    keep: list = [policies.BestK(save_top_k, mode) if monitor is not None else policies.LatestN(save_top_k)]
    if keep_every_n_train_steps:
        keep.append(policies.EveryNStepsForGood(keep_every_n_train_steps))
    return keep


def _has_entries(store) -> bool:
    """Whether the store's folder holds anything (one listing, not a walk, where it is a local folder)."""
    if isinstance(store, LocalStorage):
        if not store.root.is_dir():
            return False
        with os.scandir(store.root) as entries:  # closed at once (an unclosed one warns ResourceWarning)
            return next(entries, None) is not None
    return bool(store.list())
