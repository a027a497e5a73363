"""OnExceptionCheckpoint: an exception during fit saves a checkpoint, then the exception goes on."""

from __future__ import annotations

import os
import sys

from ember.callbacks.checkpoint import Checkpoint


class OnExceptionCheckpoint(Checkpoint):
    """Save ``<dirpath>/<filename>.ckpt`` when fit raises (KeyboardInterrupt included), then re-raise.

    The file holds the state after the last completed batch; resume with ``fit(ckpt_path=path)``.

    Args:
        dirpath: the folder (or URL) the checkpoint goes to.
        filename: the checkpoint's name without ``.ckpt`` (a trailing ``.ckpt`` is dropped); default
            "on_exception".
    """

    def __init__(self, dirpath: str | os.PathLike, filename: str = "on_exception") -> None:
        self.dirpath = os.fspath(dirpath)  # a folder or a URL
        self.filename = filename[: -len(".ckpt")] if filename.endswith(".ckpt") else filename

    @property
    def ckpt_path(self) -> str:
        return f"{self.dirpath.rstrip('/')}/{self.filename}.ckpt"

    def on_exception(self, trainer, module, exception: BaseException) -> None:
        try:
            trainer.save_checkpoint(self.ckpt_path)
        except Exception as e:  # noqa: BLE001 - never hide the original exception
            print(f"ember: OnExceptionCheckpoint could not save {self.ckpt_path}: {e}", file=sys.stderr)
