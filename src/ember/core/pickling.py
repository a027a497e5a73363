"""What a LightningModule or LightningDataModule leaves out when pickled (deepcopy, multiprocessing)."""

from __future__ import annotations

from typing import Any


def dropped_for_pickling(state: dict[str, Any]) -> dict[str, Any]:
    """An instance's ``__dict__`` to pickle: no Trainer and no log sink (as Lightning), and not the recorded
    ``__init__`` calls (the functions themselves; only ``save_hyperparameters`` inside ``__init__`` reads them)."""
    out = {k: v for k, v in state.items() if k != "_ember_init_calls"}
    return {**out, **{k: None for k in ("_trainer", "_logged", "trainer") if k in out}}
