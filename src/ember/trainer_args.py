"""Trainer arguments beyond the loop's settings: unknown names, fast_dev_run, backend flags, summary."""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

import torch

from ember.errors import MisconfigurationError

NOT_IMPLEMENTED = {  # Lightning 2.x Trainer arguments ember does not implement yet, with Lightning's defaults
    "max_time": None, "overfit_batches": 0.0, "plugins": None, "sync_batchnorm": False,
    "barebones": False, "model_registry": None,
}  # fmt: skip
REMOVED = {  # Lightning 1.x names that Lightning 2.x no longer takes, and what replaced them
    "gpus": "accelerator='gpu', devices=N", "tpu_cores": "accelerator='tpu', devices=N",
    "auto_select_gpus": "devices", "auto_lr_find": "lightning's Tuner (not in ember)",
    "auto_scale_batch_size": "lightning's Tuner (not in ember)", "track_grad_norm": "a callback",
    "progress_bar_refresh_rate": "enable_progress_bar", "weights_summary": "enable_model_summary",
    "terminate_on_nan": "detect_anomaly", "flush_logs_every_n_steps": "the logger's own flushing",
    "amp_backend": "precision", "amp_level": "precision", "move_metrics_to_cpu": "nothing",
    "multiple_trainloader_mode": "CombinedLoader", "replace_sampler_ddp": "use_distributed_sampler",
    "stochastic_weight_avg": "a callback", "reload_dataloaders_every_epoch": "reload_dataloaders_every_n_epochs=1",
}  # fmt: skip


def check_unknown(kwargs: dict[str, Any]) -> None:
    """Refuse every argument ember does not implement, saying whether Lightning has it."""
    if not kwargs:
        return
    not_yet = [k for k, v in kwargs.items() if k in NOT_IMPLEMENTED and v != NOT_IMPLEMENTED[k]]
    removed = [k for k in kwargs if k in REMOVED]
    unknown = [k for k in kwargs if k not in NOT_IMPLEMENTED and k not in REMOVED]
    parts = []
    if not_yet:
        parts.append(f"Lightning's Trainer has {not_yet} but ember does not implement "
                     f"{'it' if len(not_yet) == 1 else 'them'} yet (leave {'it' if len(not_yet) == 1 else 'them'} "
                     "at Lightning's default, or remove)")
    if removed:
        parts.append("Lightning 2.x removed " + ", ".join(f"{k} (use {REMOVED[k]})" for k in removed))
    if unknown:
        parts.append(f"{unknown} {'is not a Trainer argument' if len(unknown) == 1 else 'are not Trainer arguments'}"
                     " in Lightning or ember (check the spelling)")
    if parts:
        raise MisconfigurationError("Trainer(...): " + "; ".join(parts) + ".")


def fast_dev_run_batches(fast_dev_run: bool | int) -> int:
    """Batches per stage for ``fast_dev_run`` (0: off)."""
    if isinstance(fast_dev_run, bool):
        return 1 if fast_dev_run else 0
    if not isinstance(fast_dev_run, int) or fast_dev_run < 0:
        raise MisconfigurationError(f"fast_dev_run must be a bool or an int >= 0; received {fast_dev_run!r}.")
    return fast_dev_run


def apply_backend_flags(deterministic: bool | str | None, benchmark: bool | None) -> None:
    """``deterministic`` (True, False, ``"warn"``) and ``benchmark`` (cudnn.benchmark), as Lightning sets them."""
    if deterministic not in (None, True, False, "warn"):
        raise MisconfigurationError(f"deterministic must be True, False, 'warn' or None; received {deterministic!r}.")
    if benchmark not in (None, True, False):
        raise MisconfigurationError(f"benchmark must be True, False or None; received {benchmark!r}.")
    if deterministic:
        if benchmark:
            warnings.warn("deterministic=True with benchmark=True: cudnn.benchmark picks algorithms at run time, "
                          "so results can still vary", stacklevel=3)
        torch.use_deterministic_algorithms(True, warn_only=deterministic == "warn")
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what deterministic cuBLAS needs
    elif deterministic is False:
        torch.use_deterministic_algorithms(False)
    if benchmark is not None:
        torch.backends.cudnn.benchmark = benchmark
    elif deterministic:
        torch.backends.cudnn.benchmark = False


def check_profiler(profiler: Any) -> None:
    if profiler is not None:
        raise MisconfigurationError(f"Lightning's Trainer has profiler={profiler!r} but ember does not implement "
                                    "profilers yet; leave profiler=None (use torch.profiler around fit instead).")


def log_summary(module: torch.nn.Module) -> None:
    """The summary at fit start, on the ``ember`` logger at INFO: shown where logging is configured
    (``logging.basicConfig(level=logging.INFO)``), silent otherwise, so stdout and stderr stay the program's."""
    log = logging.getLogger("ember")
    if log.isEnabledFor(logging.INFO):
        log.info("\n%s", model_summary(module))


def model_summary(module: torch.nn.Module) -> str:
    """A short table of the module's direct children: name, type, parameters; then the totals.

    Kept tiny on purpose; the ModelSummary callback (``ember.callbacks.model_summary``), where
    present, is the full one."""
    rows = [(name, type(child).__name__, sum(p.numel() for p in child.parameters()))
            for name, child in module.named_children()]
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    w = max([len(r[0]) for r in rows] + [4])
    t = max([len(r[1]) for r in rows] + [4])
    lines = [f"  | {'Name':<{w}} | {'Type':<{t}} | Params", "-" * (w + t + 18)]
    lines += [f"{i} | {n:<{w}} | {k:<{t}} | {_count(c)}" for i, (n, k, c) in enumerate(rows)]
    lines += ["-" * (w + t + 18), f"{_count(trainable)} Trainable params",
              f"{_count(total - trainable)} Non-trainable params", f"{_count(total)} Total params"]
    return "\n".join(lines)


def _count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return str(n)


def with_module_callbacks(callbacks: list, module) -> list:
    """Lightning's ``configure_callbacks``: the module's callbacks replace the Trainer's of the same
    class and join the list; checkpoint callbacks go last (they see what the others did)."""
    from ember.callbacks.model_checkpoint import ModelCheckpoint
    from ember.hooks import keyed

    extra = module.configure_callbacks()
    if not extra:
        return callbacks
    extra = list(extra) if isinstance(extra, (list, tuple)) else [extra]
    kinds = {type(cb) for cb in extra}
    out = [cb for cb in callbacks if type(cb) not in kinds] + extra
    out = [cb for cb in out if not isinstance(cb, ModelCheckpoint)] + [cb for cb in out if isinstance(cb, ModelCheckpoint)]
    keyed(out)
    return out
