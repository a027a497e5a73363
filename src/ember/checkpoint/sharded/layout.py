"""Names inside a sharded checkpoint folder, and where a folder may live.

A sharded checkpoint is a folder ``name.ckpt/`` holding ``rank-00000.safetensors`` ... (one ember
file per rank that had shards to write) and ``metadata.json``, written last by rank 0: the folder is
a checkpoint exactly when ``metadata.json`` is present and intact (docs/FORMAT.md, section 9).
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any, BinaryIO

from ember.errors import CheckpointCorruptError, CheckpointError, UnsafeCheckpointError

METADATA = "metadata.json"
TORCH_METADATA = ".metadata"  # torch.distributed.checkpoint's own metadata: a pickle, never loaded
RANK_FILE_RE = re.compile(r"rank-[0-9]{5,10}\.safetensors")
AT_FIRST_COLLECTIVE: list = []
"""Called before a save or load runs collectives on a group: ``ember.distributed.group`` registers its exit
handler here (when ember is imported, without importing the collectives, which import torch's slow
``torch.distributed.checkpoint``), so a group the user joined still leaves cleanly at exit."""


def rank_file(rank: int) -> str:
    return f"rank-{rank:05d}.safetensors"


def rank_of(name: str) -> int:
    """The rank whose file ``name`` (a RANK_FILE_RE match) is."""
    return int(name[len("rank-"):-len(".safetensors")])


def chunk_key(fqn: str, offsets: Any) -> str:
    """The key of a tensor's chunk in a rank file: the tensor's FQN and the chunk's offsets."""
    return fqn + "@" + ",".join(map(str, map(int, offsets)))


def open_member(folder: Path, name: str) -> BinaryIO:
    """``folder/name`` opened for reading, unbuffered: a regular file, in the folder. A FIFO or a device
    (which could block a reader or never end) and a symbolic link to a file outside the folder (a file
    of another save) are refused without reading a byte; FileNotFoundError when it is missing."""
    path = folder / name
    if os.path.islink(path):
        real = os.path.realpath(path)
        if os.path.dirname(real) != os.path.realpath(folder):
            raise CheckpointCorruptError(
                f"corrupt sharded checkpoint {folder}: {name} is a link to {real}, outside the folder; a folder's "
                "files must be its own (copy the folder with its files, not links to another save's)")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))  # a FIFO opens without waiting
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CheckpointCorruptError(f"corrupt sharded checkpoint {folder}: {name} is not a regular file "
                                         "(a folder, "
                                         "a FIFO or a device); it is never read")
        return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


def local_folder(location: str | os.PathLike, storage_options: dict | None = None) -> Path:
    """The local folder of a sharded checkpoint location; URLs are refused with what to do instead."""
    text = os.fspath(location)
    if text.startswith("file://"):
        text = text[len("file://"):]
    head, sep, _ = text.partition("://")
    if sep and head.isidentifier():
        raise CheckpointError(
            f"this function reads sharded checkpoints in local folders only (a path, or file://), received "
            f"{text!r}. For a sharded folder at a URL use save_sharded/load_sharded or "
            f"ember.load_checkpoint({text!r}) (they take URLs), or `ember ckpt verify|consolidate` from the "
            "command line")
    if storage_options:
        raise CheckpointError(f"storage_options are for URLs; {text!r} is a local folder: pass storage_options=None")
    return Path(text)


def refuse_torch_folder(folder: Path) -> None:
    """A folder written by ``torch.distributed.checkpoint.save`` (its ``.metadata`` is a pickle) is
    refused before anything in it is read."""
    if (folder / TORCH_METADATA).exists() and not (folder / METADATA).exists():
        raise UnsafeCheckpointError(
            f"{folder} is a torch.distributed.checkpoint folder: its {TORCH_METADATA} is a pickle, which ember "
            "never loads (it could run code). To convert it, in a process you trust, with the same world size: "
            "build the state (e.g. the FSDP model's state dict), torch.distributed.checkpoint.load(state, "
            f"checkpoint_id={str(folder)!r}), then ember.checkpoint.sharded.save_sharded(state, NEW_FOLDER); or "
            "torch.distributed.checkpoint.format_utils.dcp_to_torch_save(FOLDER, 'full.pt') then "
            "`ember ckpt convert full.pt full.ckpt`")
