"""Lightning interop: its ``.ckpt`` layout both ways, its callbacks' state keys, and ``ember ckpt convert``."""

from ember.checkpoint.lightning.layout import is_lightning, to_ember, to_lightning

__all__ = ["is_lightning", "to_ember", "to_lightning"]
