"""``lightning.pytorch.utilities.seed``: seeding, and running a block without disturbing the random state."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

from ember import compat
from ember.seed import get_rng_state, preserved_rng, seed_everything, set_rng_state


@contextlib.contextmanager
def isolate_rng(include_cuda: bool = True) -> Iterator[None]:
    """Run a block, then put back the global random state (Python, NumPy, torch) as it was before it.

    Args:
        include_cuda: also put back every CUDA device's generator (only when CUDA is initialised).
    """
    if include_cuda:
        with preserved_rng():
            yield
        return
    state = get_rng_state()
    state.pop("cuda", None)
    try:
        yield
    finally:
        set_rng_state(state)


def reset_seed() -> None:
    """Seed again with the seed the last ``seed_everything`` call used (no-op when it was never called)."""
    seed = os.environ.get(compat.GLOBAL_SEED_ENV)
    if seed is not None:
        seed_everything(int(seed))


__all__ = ["isolate_rng", "reset_seed", "seed_everything"]
