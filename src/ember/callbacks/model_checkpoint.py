"""ModelCheckpoint: save on a schedule, keep the best k by a monitored metric, and a ``last.ckpt``."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from ember.callbacks.base import Callback
from ember.checkpoint import policies
from ember.checkpoint.policies import SavePoint
from ember.errors import MisconfigurationError

LAST_NAME = "last"
EXTENSION = ".ckpt"


def _parse_filepath(filepath: str | os.PathLike) -> tuple[Path, str | None]:
    """The seed's ``filepath``: a folder, or a folder plus a file-name template (ends in .ckpt or holds {...})."""
    p = Path(filepath)
    name = p.name
    if name.endswith(EXTENSION) or ("{" in name and "}" in name):
        return p.parent, name[: -len(EXTENSION)] if name.endswith(EXTENSION) else name
    return p, None


class ModelCheckpoint(Callback):
    """Save checkpoints during fit.

    Args:
        dirpath: folder for the files (default ``<default_root_dir>/checkpoints``).
        filename: name template, e.g. ``"{epoch}-{val_loss:.2f}"`` (default ``"{epoch}-{step}"``).
        monitor: metric to rank checkpoints by; None ranks by recency (keeps the latest).
        mode: ``"min"`` or ``"max"``.
        save_top_k: keep the k best (``True`` means 1, ``-1`` all, ``0`` none).
        save_last: also keep ``last.ckpt``, always the newest state.
        every_n_epochs / every_n_train_steps / train_time_interval: when to save; they compose (a
            save happens when any of them is due). With none given, saves after every epoch.
        save_weights_only: write weights, hparams, epoch and step only (cannot resume training).
        verbose: print a line for each save.
        async_save: write in a background thread (the loop pauses only for the snapshot); files that
            top-k lets go are deleted only after the better file is committed.
        filepath, prefix: the seed's names. ``filepath`` is a folder, or a folder plus a template.
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
    ) -> None:
        if filepath is not None and (dirpath is not None or filename is not None):
            raise MisconfigurationError(
                "ModelCheckpoint got filepath together with dirpath/filename; give filepath (the old name) "
                "or dirpath and filename, not both."
            )
        if filepath is not None:
            dirpath, filename = _parse_filepath(filepath)
        if mode not in ("min", "max"):
            raise MisconfigurationError(f"ModelCheckpoint mode must be 'min' or 'max'; received {mode!r}.")
        if isinstance(save_top_k, bool):
            save_top_k = int(save_top_k)
        if not isinstance(save_top_k, int) or save_top_k < -1:
            raise MisconfigurationError(f"save_top_k must be an int >= -1 (or True); received {save_top_k!r}.")
        if monitor is None and save_top_k not in (-1, 0, 1):
            raise MisconfigurationError(
                f"ModelCheckpoint(save_top_k={save_top_k}) needs a monitor to rank checkpoints by; pass "
                "monitor='val_loss' (or another logged metric), or save_top_k=-1 to keep every checkpoint."
            )
        for name, value in (("every_n_epochs", every_n_epochs), ("every_n_train_steps", every_n_train_steps)):
            if value is not None and (not isinstance(value, int) or value < 0):
                raise MisconfigurationError(f"{name} must be a positive int or None; received {value!r}.")
        if train_time_interval is not None and not isinstance(train_time_interval, timedelta):
            raise MisconfigurationError(
                f"train_time_interval must be a datetime.timedelta; received {type(train_time_interval).__name__}."
            )
        if filename is not None and (os.sep in filename or filename.endswith(EXTENSION)):
            filename = filename[: -len(EXTENSION)] if filename.endswith(EXTENSION) else filename
        self.dirpath: Path | None = Path(dirpath) if dirpath is not None else None
        self.filename = filename
        self.monitor = monitor
        self.mode = mode
        self.save_top_k = save_top_k
        self.save_last = save_last
        self.save_weights_only = save_weights_only
        self.verbose = verbose
        self.prefix = prefix
        self.auto_insert_metric_name = auto_insert_metric_name
        self.async_save = async_save
        self.when = self._when(every_n_epochs, every_n_train_steps, train_time_interval)

        self.best_k_models: dict[str, float] = {}
        self.best_model_path = ""
        self.best_model_score: float | None = None
        self.kth_best_model_path = ""
        self.kth_value: float | None = None
        self.last_model_path = ""
        self._written_this_run: set[str] = set()
        self._protected: set[str] = set()
        self._last_save_time = time.monotonic()
        self._last_saved_step: int | None = None

    @staticmethod
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

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, mode=self.mode,
                                        every=[repr(w) for w in self.when], weights_only=self.save_weights_only)

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "mode": self.mode,
            "dirpath": str(self.dirpath) if self.dirpath is not None else None,
            "best_model_score": self.best_model_score,
            "best_model_path": self.best_model_path,
            "best_k_models": dict(self.best_k_models),
            "kth_best_model_path": self.kth_best_model_path,
            "kth_value": self.kth_value,
            "last_model_path": self.last_model_path,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_model_score = state.get("best_model_score")
        self.best_model_path = state.get("best_model_path", "")
        self.last_model_path = state.get("last_model_path", "")
        saved_dir = state.get("dirpath")
        if self.dirpath is None or saved_dir is None or Path(saved_dir) == self.dirpath:
            # Files from before the resume are remembered for ranking but never deleted by this run.
            self.best_k_models = {k: float(v) for k, v in state.get("best_k_models", {}).items()}
            self.kth_best_model_path = state.get("kth_best_model_path", "")
            self.kth_value = state.get("kth_value")

    # ---------------------------------------------------------------- setup
    def setup(self, trainer, resumed_from: str | os.PathLike | None) -> None:
        if self.dirpath is None:
            self.dirpath = Path(trainer.default_root_dir) / "checkpoints"
        self._written_this_run = set()
        self._protected = {str(Path(resumed_from).resolve())} if resumed_from else set()
        self._last_save_time = time.monotonic()

    def on_train_start(self, trainer, module) -> None:
        self._last_saved_step = trainer.global_step  # fresh: nothing to save yet; resumed: already on disk

    # ---------------------------------------------------------------- hooks
    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx: int) -> None:
        if trainer.optimizer_stepped:
            self._maybe_save(trainer, epoch_end=False)

    def on_train_epoch_end(self, trainer, module) -> None:
        self._maybe_save(trainer, epoch_end=True)

    def on_train_end(self, trainer, module) -> None:
        """Training stopped between scheduled saves (max_steps, a stop request): keep that work too."""
        if self._last_saved_step != trainer.global_step and (
                self.monitor is None or self.monitor in trainer.callback_metrics_float()):
            self.save(trainer)

    def _maybe_save(self, trainer, *, epoch_end: bool) -> None:
        point = SavePoint(epoch=trainer.fit_loop.progress.epoch, global_step=trainer.global_step, epoch_end=epoch_end,
                          now=time.monotonic(), last_save_time=self._last_save_time)
        if any(w.due(point) for w in self.when):
            self.save(trainer)

    # ---------------------------------------------------------------- saving
    def save(self, trainer) -> None:
        """Save now: rank by the monitor (or recency), write, update ``last.ckpt``, drop what top-k lets go."""
        self._last_save_time = time.monotonic()
        self._last_saved_step = trainer.global_step
        metrics = trainer.callback_metrics_float()
        written: str | None = None
        if self.monitor is not None:
            if self.monitor not in metrics:
                raise MisconfigurationError(
                    f"ModelCheckpoint(monitor={self.monitor!r}) found no metric {self.monitor!r}; the logged "
                    f"metrics are {sorted(metrics)}. Log it with self.log({self.monitor!r}, value) or change monitor."
                )
            written = self._save_top_k(trainer, metrics, float(metrics[self.monitor]))
        elif self.save_top_k != 0:
            written = self._save_latest(trainer, metrics)
        if self.save_last:
            self._save_last(trainer, written)

    def _format(self, trainer, metrics: dict[str, float]) -> Path:
        template = self.filename or "{epoch}-{step}"
        values = {**metrics, "epoch": trainer.fit_loop.progress.epoch, "step": trainer.global_step}
        name = policies.format_filename(template, values, self.auto_insert_metric_name)
        if self.prefix:
            name = f"{self.prefix}-{name}"
        path = self.dirpath / f"{name}{EXTENSION}"
        version = 1
        while path.exists() and str(path) not in self._written_this_run:
            path = self.dirpath / f"{name}-v{version}{EXTENSION}"
            version += 1
        return path

    def _write(self, trainer, path: Path, then=None) -> None:
        self._written_this_run.add(str(path))
        trainer._save(path, weights_only=self.save_weights_only, blocking=not self.async_save, then=then)

    def _last_path(self) -> Path:
        return self.dirpath / f"{self.prefix + '-' if self.prefix else ''}{LAST_NAME}{EXTENSION}"

    def _commit(self, trainer, path: Path, dropped: list[str]) -> str:
        """Write ``path`` with bookkeeping already updated (so the file holds it). In the background by
        default; ``dropped`` files are deleted and ``last.ckpt`` linked only once ``path`` is committed.
        A write that fails at once puts the bookkeeping back and deletes nothing."""
        before = self.state_dict()
        if self.save_last:
            self.last_model_path = str(self._last_path())

        def after_commit() -> None:
            if self.save_last:
                from ember.checkpoint.storage import atomic_link

                atomic_link(path, self._last_path())
            for p in dropped:
                self._delete(p)

        try:
            self._write(trainer, path, then=after_commit)
        except BaseException:
            self.load_state_dict(before)
            raise
        return str(path)

    def _save_latest(self, trainer, metrics: dict[str, float]) -> str:
        """No monitor: recency ranks. save_top_k=1 keeps only the newest file, -1 keeps all."""
        path = self._format(trainer, metrics)
        dropped = [p for p in self.best_k_models if p != str(path)] if self.save_top_k == 1 else []
        for p in dropped:
            del self.best_k_models[p]
        self.best_k_models[str(path)] = float(trainer.global_step)
        self.best_model_path = str(path)
        self._commit(trainer, path, dropped)
        self._announce(trainer, f"saving model to {path}")
        return str(path)

    def _save_top_k(self, trainer, metrics: dict[str, float], score: float) -> str | None:
        k = self.save_top_k
        if k == 0:
            return None
        full = k > 0 and len(self.best_k_models) >= k
        if full and not policies.better(score, self.kth_value, self.mode):
            self._announce(trainer, f"{self.monitor!r} was not in top {k}")
            return None
        path = self._format(trainer, metrics)
        self.best_k_models[str(path)] = score
        keep = policies.top_k(self.best_k_models, k, self.mode)
        dropped = [p for p in self.best_k_models if p not in keep]
        for p in dropped:
            del self.best_k_models[p]
        self._update_best()
        self._commit(trainer, path, dropped)
        self._announce(trainer, f"{self.monitor!r} reached {score:0.5f} (best {self.best_model_score:0.5f}), "
                                f"saving model to {path} as top {k if k > 0 else 'all'}")
        return str(path)

    def _update_best(self) -> None:
        ranked = policies.top_k(self.best_k_models, -1, self.mode)
        self.best_model_path = ranked[0]
        self.best_model_score = self.best_k_models[ranked[0]]
        self.kth_best_model_path = ranked[-1]
        self.kth_value = self.best_k_models[ranked[-1]]

    def _save_last(self, trainer, written: str | None) -> None:
        """No top-k file was written at this save: write ``last.ckpt`` itself (a written one is linked)."""
        if written is None:
            path = self._last_path()
            self.last_model_path = str(path)
            trainer._save(path, weights_only=self.save_weights_only, blocking=not self.async_save)

    def save_for_resume(self, trainer) -> None:
        """A stop was requested: write ``last.ckpt`` (full state) so ``fit(ckpt_path="last")`` continues."""
        path = self._last_path()
        self.last_model_path = str(path)
        trainer._save(path, weights_only=False, blocking=True)

    def _delete(self, path: str) -> None:
        """Remove a checkpoint that top-k let go, if this run wrote it and it is not protected."""
        if path not in self._written_this_run or str(Path(path).resolve()) in self._protected:
            return
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        self._written_this_run.discard(path)

    def _announce(self, trainer, message: str) -> None:
        if self.verbose:
            print(f"Epoch {trainer.current_epoch}, global step {trainer.global_step}: {message}", flush=True)
