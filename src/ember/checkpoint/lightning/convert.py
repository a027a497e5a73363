"""``ember ckpt convert``: a checkpoint file from PyTorch Lightning's format to ember's, or back."""

from __future__ import annotations

import os

import torch

from ember.checkpoint.format import codec
from ember.checkpoint.io import load_checkpoint, verify_in
from ember.checkpoint.lightning.layout import is_lightning, to_ember, to_lightning
from ember.checkpoint.storage.locations import resolve
from ember.checkpoint.writer import write_file
from ember.errors import CheckpointError

__all__ = ["convert"]


def convert(src: str | os.PathLike, dst: str | os.PathLike, to: str | None = None, *,
            storage_options: dict | None = None) -> str:
    """Convert a checkpoint between PyTorch Lightning's format and ember's.

    SRC is read without running code from it (ember files are verified; torch.save files go through
    torch's weights-only unpickler, with Lightning's AttributeDict and argparse.Namespace read as data).

    --to ember      write DST as an ember checkpoint (safetensors + checksums), then verify it. A
                    Lightning file's position is translated so that `Trainer.fit(ckpt_path=DST)` goes on
                    where Lightning would; other torch.save dicts are written as they are.
    --to lightning  write DST with torch.save in the layout PyTorch Lightning 2.x reads:
                    `LightningModule.load_from_checkpoint(DST)` builds the model and
                    `Trainer.fit(ckpt_path=DST)` resumes at the same epoch and global step.
                    RNG states and the data loader's exact position have no place there and are dropped.

    Without --to, a Lightning or torch.save file becomes an ember file and an ember file a Lightning
    one. SRC and DST may be paths or URLs (s3://, gs://, memory://...); DST is written atomically.
    Returns where DST was written.
    """
    ckpt = load_checkpoint(src, map_location="cpu", storage_options=storage_options)
    if to is None:
        to = "lightning" if "ember_version" in ckpt and not is_lightning(ckpt) else "ember"
    if to not in ("ember", "lightning"):
        raise CheckpointError(f"convert(to=...) must be 'ember' or 'lightning'; received {to!r}.")
    store, name = resolve(dst, storage_options)
    if to == "ember":
        tree, tensors = codec.flatten(to_ember(ckpt, path=src) if is_lightning(ckpt) else ckpt)
        write_file((store, name), tree, tensors, progress=True)
        verify_in(store, name)
    else:
        state = to_lightning(ckpt, path=src)
        with store.open_write(name) as f:
            torch.save(state, f)
    return store.describe(name)
