"""Seeding and the global random state: capture, restore, and leave untouched."""

from __future__ import annotations

import contextlib
import os
import random
import warnings
from typing import Any, Iterator

import torch

from ember import compat

try:  # numpy is optional
    import numpy as np
except ImportError:  # pragma: no cover - exercised only without numpy
    np = None


def seed_everything(seed: int | None = None, workers: bool = False, verbose: bool = True) -> int:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device).

    Args:
        seed: the seed (an int; anything else, a bool included, raises ``TypeError``); NumPy gets it modulo
            2**32, and it is exported in ``PL_GLOBAL_SEED`` for tools written for Lightning. It is returned.
            None (Lightning's default) reads ``PL_GLOBAL_SEED``, or uses 0 with a warning when it is unset.
        workers: Lightning's flag, exported as ``PL_SEED_WORKERS``. DataLoader workers are seeded either way:
            torch seeds ``random``, torch and NumPy in each worker from the process's seed and the worker's id.
        verbose: warn when no seed was given or found.
    """
    if seed is None:
        found = os.environ.get(compat.GLOBAL_SEED_ENV)
        try:
            seed = int(found) if found is not None else 0
        except ValueError:
            raise ValueError(f"seed_everything() found no seed and {compat.GLOBAL_SEED_ENV}={found!r} in the "
                             "environment, which is not an int; set it to an int or pass seed=") from None
        if found is None and verbose:
            warnings.warn("seed_everything() found no seed (none given, PL_GLOBAL_SEED unset): seed set to 0",
                          stacklevel=2)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed_everything takes an int; received {seed!r}")
    os.environ[compat.GLOBAL_SEED_ENV] = str(seed)  # read by tools written for Lightning
    os.environ["PL_SEED_WORKERS"] = str(int(workers))
    random.seed(seed)
    if np is not None:
        np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return seed


def get_rng_state() -> dict[str, Any]:
    """Every global random state: Python, NumPy, torch CPU, and each CUDA device when present."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if np is not None:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = {"kind": kind, "keys": torch.from_numpy(keys.astype("int64")), "pos": int(pos),
                          "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what get_rng_state returned (entries that are absent are left alone)."""
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "numpy" in state and np is not None:
        s = state["numpy"]
        keys = s["keys"].cpu().numpy().astype("uint32")
        np.random.set_state((s["kind"], keys, s["pos"], s["has_gauss"], s["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda = [t.cpu() for t in state["cuda"]]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            warnings.warn(
                f"the checkpoint holds the random state of {len(cuda)} CUDA device(s) but this machine has "
                f"{torch.cuda.device_count()}; CUDA random numbers will differ from the original run.",
                stacklevel=2,
            )


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block without changing any global random state as seen after it."""
    state = get_rng_state()
    try:
        yield
    finally:
        set_rng_state(state)
