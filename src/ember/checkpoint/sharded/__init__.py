"""Sharded checkpoint folders: every rank writes its shards in parallel through
torch.distributed.checkpoint's planner, in ember's file format, with no pickle on disk.

Layout (docs/FORMAT.md, section 9)::

    name.ckpt/
      rank-00000.safetensors   one ember file per rank that had chunks to write (CRC-32C, every byte)
      rank-00001.safetensors
      metadata.json            written last by rank 0: each tensor's chunks -> (file, key), and the JSON
                               state tree of every other value; its presence is the commit

Modules: ``layout`` (names), ``metadata`` (the JSON metadata <-> DCP's Metadata), ``split`` (state ->
tensors + tree), ``rankfile`` (one rank's file), ``dcp_writer`` / ``dcp_reader`` (DCP storage plugins),
``saves`` (background saves under FSDP),
``commit`` (temporary folder and atomic swap), ``full`` (single-process reads), ``api`` (collectives).
torch.distributed.checkpoint is imported only by the collectives and the plugins (it is slow to import).
"""

from ember.checkpoint.sharded.full import consolidate, is_sharded_checkpoint, read_full, verify_sharded

__all__ = ["save_sharded", "load_sharded", "read_full", "is_sharded_checkpoint", "verify_sharded", "consolidate",
           "ShardWriter", "ShardReader"]

_LAZY = {"save_sharded": "api", "load_sharded": "api", "ShardWriter": "dcp_writer", "ShardReader": "dcp_reader"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib  # deferred: loaded on first use of the name

        return getattr(importlib.import_module(f"ember.checkpoint.sharded.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
