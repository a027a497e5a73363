"""Trainer arguments beyond the loop's settings: unknown names, fast_dev_run, backend flags, summary."""

from __future__ import annotations

import ast
import contextlib
import functools
import inspect
import os
import warnings
from typing import Any

import torch
from torch.utils.data import DataLoader, RandomSampler

from ember import compat
from ember.accelerators import Accelerator
from ember.callbacks.model_checkpoint import ModelCheckpoint
from ember.core.callback import Callback
from ember.errors import MisconfigurationError
from ember.loops.hooks import keyed
from ember.not_supported import REFUSALS, refuse
from ember.strategies import SingleDeviceStrategy

NOT_IMPLEMENTED = {  # Lightning 2.x Trainer arguments ember does not implement yet, with Lightning's defaults
    "plugins": None, "sync_batchnorm": False,
    "barebones": False, "model_registry": None, "enable_autolog_hparams": True,
}  # fmt: skip
NOT_IMPLEMENTED["enable_autolog_hparams"] = True  # ember always logs hyperparameters (not_supported.py)
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
                     "at Lightning's default, or remove)" + _instead(not_yet, kwargs))
    if removed:
        parts.append("Lightning 2.x removed " + ", ".join(f"{k} (use {REMOVED[k]})" for k in removed))
    if unknown:
        parts.append(f"{unknown} {'is not a Trainer argument' if len(unknown) == 1 else 'are not Trainer arguments'}"
                     " in Lightning or ember (check the spelling)")
    if parts:
        raise MisconfigurationError("Trainer(...): " + "; ".join(parts) + ".")


def _instead(names: list[str], kwargs: dict[str, Any]) -> str:
    """What ``ember.not_supported`` says to use instead of each refused argument."""
    found = []
    for name in names:
        for key in (f"Trainer({name}={kwargs[name]!r})", f"Trainer({name}=...)"):
            if key in REFUSALS:
                found.append(f"{name}: {REFUSALS[key].reason}; instead: {REFUSALS[key].instead}")
                break
    return (" [" + "; ".join(found) + "]") if found else ""


_OPTION_FAMILIES = {("strategy", "deepspeed"): "Trainer(strategy='deepspeed')",
                    ("strategy", "xla"): "Trainer(strategy='xla')",
                    ("strategy", "single_xla"): "Trainer(strategy='xla')",
                    ("precision", "transformer-engine"): "Trainer(precision='transformer-engine')"}  # fmt: skip


def hardware(accelerator: Any, strategy: Any, devices: Any) -> tuple[Any, Any, Any]:
    """``accelerator``, ``strategy`` and ``devices`` as the Trainer's selection understands them: accelerator
    objects become their names, ``SingleDeviceStrategy(device)`` becomes one process on that device, and the
    options listed in ``ember.not_supported`` (``accelerator="tpu"``, ``strategy="deepspeed"``, ...)
    raise NotSupportedError naming what to use instead.

    Args:
        accelerator: ``Trainer(accelerator=...)``: a name or an ``ember.accelerators.Accelerator``.
        strategy: ``Trainer(strategy=...)``: a name or a strategy object.
        devices: ``Trainer(devices=...)``.
    """
    if isinstance(accelerator, Accelerator):
        accelerator = accelerator.name
    if isinstance(strategy, SingleDeviceStrategy):
        accelerator, strategy, devices = strategy.root_device.type, "auto", 1
    elif strategy == "single_device":
        strategy, devices = "auto", 1
    refuse_options(accelerator=accelerator, strategy=strategy)
    return accelerator, strategy, devices


def on_unless_false(*flags: Any) -> tuple[bool, ...]:
    """``enable_*`` flags as Lightning reads them: None (its signature's default, and what a printed config
    holds) means on.

    Args:
        *flags: the values given (None, True, False or anything truthy).
    """
    return tuple(True if flag is None else bool(flag) for flag in flags)


def refuse_options(**options: Any) -> None:
    """Raise NotSupportedError for a Trainer option on the not-supported list (``accelerator="tpu"``).

    Args:
        **options: Trainer argument names and the values given; only strings are looked up.
    """
    for name, value in options.items():
        if not isinstance(value, str):
            continue
        key = f"Trainer({name}={value.lower()!r})"
        if key in REFUSALS:
            refuse(key)
        for (option, prefix), family in _OPTION_FAMILIES.items():
            if option == name and value.lower().startswith(prefix):
                refuse(family)


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


def with_module_callbacks(callbacks: list, module) -> list:
    """Lightning's ``configure_callbacks``: the module's callbacks replace the Trainer's of the same
    class and join the list; checkpoint callbacks go last (they see what the others did)."""
    extra = module.configure_callbacks()
    if not extra:
        return callbacks
    extra = list(extra) if isinstance(extra, (list, tuple)) else [extra]
    kinds = {type(cb) for cb in extra}
    out = [cb for cb in callbacks if type(cb) not in kinds] + extra
    out = ([cb for cb in out if not isinstance(cb, ModelCheckpoint)]
           + [cb for cb in out if isinstance(cb, ModelCheckpoint)])
    keyed(out)
    return out


def build_callbacks(enable_checkpointing, checkpoint_callback, callbacks) -> list[Callback]:
    callbacks = [callbacks] if isinstance(callbacks, Callback) else list(callbacks or [])
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise MisconfigurationError(
                f"callbacks must be ember.callbacks.Callback instances; received {type(cb).__name__}.")
    out, enabled = compat.checkpoint_callbacks(enable_checkpointing, checkpoint_callback, callbacks, ModelCheckpoint)
    has_ckpt = any(isinstance(cb, ModelCheckpoint) for cb in out)
    if not enabled and has_ckpt:
        raise MisconfigurationError(
            "checkpointing is turned off (enable_checkpointing=False or checkpoint_callback=False) but a "
            "ModelCheckpoint was given in callbacks; remove one of the two.")
    if enabled and not has_ckpt:
        out.append(ModelCheckpoint())
    keyed(out)
    return out


def overfit(overfit_batches: int | float, limit_train: int | float, limit_val: int | float) -> tuple:
    """``(overfit_batches, limit_train_batches, limit_val_batches)``: with ``overfit_batches`` (an int count or
    a float fraction) set, Lightning trains and validates on that many first batches every epoch."""
    v = overfit_batches
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or (isinstance(v, float) and v > 1.0):
        raise MisconfigurationError(f"overfit_batches must be an int >= 0 (batches) or a float in [0, 1]; "
                                    f"received {v!r}.")
    return (v, v, v) if v else (v, limit_train, limit_val)


def for_overfit(loaders: Any, trainer: Any, kind: str) -> Any:
    """With ``overfit_batches``, fit's loaders read in order (Lightning turns shuffling off, warning)."""
    if not trainer.overfit_batches or loaders is None:
        return loaders
    if isinstance(loaders, (list, tuple)):
        return type(loaders)(for_overfit(dl, trainer, kind) for dl in loaders)
    if type(loaders) is not DataLoader or not isinstance(loaders.sampler, RandomSampler):
        return loaders  # already in order, or a loader ember cannot rebuild: left as it is
    warnings.warn(f"You requested to overfit but enabled {kind} dataloader shuffling. We are turning off the {kind} "
                  "dataloader shuffling for you.", stacklevel=3)
    dl = loaders
    extra = dict(prefetch_factor=dl.prefetch_factor, persistent_workers=dl.persistent_workers) if dl.num_workers else {}
    return DataLoader(dl.dataset, batch_size=dl.batch_size, shuffle=False, num_workers=dl.num_workers,
                      collate_fn=dl.collate_fn, pin_memory=dl.pin_memory, drop_last=dl.drop_last, timeout=dl.timeout,
                      worker_init_fn=dl.worker_init_fn, multiprocessing_context=dl.multiprocessing_context,
                      generator=dl.generator, **extra)


NONE_IS_DEFAULT = ("logger", "enable_checkpointing", "enable_progress_bar", "log_every_n_steps", "enable_model_summary",
                   "num_sanity_val_steps", "limit_train_batches", "limit_val_batches", "limit_test_batches",
                   "limit_predict_batches", "val_check_interval", "precision", "accumulate_grad_batches")


def defaults_from_env(init):
    """Lightning's ``PL_<CLASS>_<ARGUMENT>`` environment defaults (``PL_TRAINER_MAX_EPOCHS=3``): read for
    every ``__init__`` argument not passed, values parsed as Python literals (else kept as strings).
    As in Lightning, None passed for the arguments of ``NONE_IS_DEFAULT`` means their default (a
    configuration printed by Lightning's CLI has ``logger: null``, ``limit_train_batches: null``, ...)."""

    @functools.wraps(init)
    def with_env_defaults(self, *args: Any, **kwargs: Any) -> None:
        names = [n for n in inspect.signature(init).parameters if n not in ("self", "kwargs")]
        kwargs.update(zip(names, args))
        for name in NONE_IS_DEFAULT:
            if name in kwargs and kwargs[name] is None:
                del kwargs[name]
        prefix = f"PL_{type(self).__name__.upper()}_"
        for name in names:
            raw = os.environ.get(prefix + name.upper())
            if raw and name not in kwargs:
                try:
                    kwargs[name] = ast.literal_eval(raw)
                except (ValueError, SyntaxError):
                    kwargs[name] = raw
        init(self, **kwargs)

    return with_env_defaults


def without_checkpoints(callbacks) -> list:
    """fast_dev_run: the callbacks without checkpointing ones."""
    return [cb for cb in ([callbacks] if isinstance(callbacks, Callback) else callbacks or [])
            if not isinstance(cb, ModelCheckpoint)]


@contextlib.contextmanager
def anomaly(enabled: bool):
    """``detect_anomaly=True``: autograd's anomaly detection around fit."""
    if not enabled:
        yield
        return
    with torch.autograd.set_detect_anomaly(True):
        yield


INIT_DOC = """Set up a Trainer (every argument has Lightning's meaning; ``help(ember.Trainer)`` lists them).

Args:
    accelerator: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"gpu"``.
    strategy: ``"auto"``, ``"ddp"``, ``"ddp_spawn"`` (run as ``"ddp"``), ``"fsdp"``, or a strategy object.
    devices: how many devices (or which), ``"auto"`` for all the accelerator has.
    num_nodes: machines in a multi-node job.
    precision: ``"32"``, ``"16-mixed"`` or ``"bf16-mixed"`` (16, "bf16" and the like are accepted).
    logger: True (the default TensorBoardLogger, a CSVLogger without tensorboard or for a URL root, in
        ``<default_root_dir>/lightning_logs/version_N``), False for none, a logger or a list of loggers.
    callbacks: a callback or a list of them (a ModelCheckpoint is added when checkpointing is on).
    fast_dev_run: True or n: run n batches of every stage once, without checkpoints or loggers.
    max_epochs: stop after this many epochs (None with max_steps unset: 1000; -1: no limit).
    min_epochs: a stop request (EarlyStopping, should_stop) waits until this many epochs are done.
    max_steps: stop after this many optimizer steps (-1 or None: no limit).
    min_steps: a stop request waits until this many optimizer steps are taken.
    limit_train_batches: batches per training epoch: an int count or a float fraction of the loader.
    limit_val_batches: batches per validation: an int count or a float fraction.
    limit_test_batches: batches per test loader: an int count or a float fraction.
    limit_predict_batches: batches per prediction loader: an int count or a float fraction.
    val_check_interval: when to validate within an epoch: after every n training batches (an int; 2.0 counts as
        2; more than an epoch's batches only with ``check_val_every_n_epoch=None``, else MisconfigurationError),
        after each fraction of the epoch (a float in [0, 1]; 1.0, the default: at its end; 0.0: every batch), or
        once this much wall-clock time has passed since the last validation (or since training started), checked
        after every batch: ``"DD:HH:MM:SS"``, a ``timedelta`` or a dict such as ``{"minutes": 5}``. A time
        interval does not validate at an epoch's end unless the time is up there too.
    check_val_every_n_epoch: validate only in every n-th epoch (default 1: every epoch), at the points
        ``val_check_interval`` gives (a time interval that ran out in between waits for the first batch of the
        next such epoch). None: validate every ``val_check_interval`` (an int or a time) training batches
        counted across epochs, so the interval may be longer than an epoch or the loader have no length.
    num_sanity_val_steps: validation batches run before training to catch bugs early (-1: all, 0: none).
    log_every_n_steps: send the step values to the loggers every n optimizer steps.
    enable_checkpointing: add the default ModelCheckpoint (latest epoch kept) when none is given.
    enable_progress_bar: draw the progress bar (on the global-zero process).
    enable_model_summary: print the table of the model's layers and parameter counts at fit start.
    accumulate_grad_batches: batches whose gradients are summed before each optimizer step.
    gradient_clip_val: clip gradients to this norm (or value) before each step; None or 0: no clipping.
    gradient_clip_algorithm: ``"norm"`` (the default) or ``"value"``.
    deterministic: True uses deterministic algorithms only, ``"warn"`` warns about the others.
    benchmark: set ``torch.backends.cudnn.benchmark``.
    inference_mode: validate/test/predict under ``torch.inference_mode`` (False: ``torch.no_grad``);
        fit's own validation always runs under ``torch.no_grad``.
    profiler: profile the run (None: not profiled).
    detect_anomaly: turn on autograd's anomaly detection during fit.
    reload_dataloaders_every_n_epochs: ask the datamodule or module for fresh loaders every n epochs.
    default_root_dir: where logs and checkpoints go when no logger or dirpath says otherwise (a path or
        a URL); the working directory by default.
    checkpoint_callback: the seed's name: False turns checkpointing off, a ModelCheckpoint replaces the
        default one.
    resume_from_checkpoint: the seed's name for ``fit(ckpt_path=...)``.
    default_save_path: the seed's name for ``default_root_dir``.
    storage_options: options for the fsspec backend of URL paths (credentials, endpoint).
    use_distributed_sampler: shard every loader across the processes of a job with a DistributedSampler
        (training shuffled, evaluation padded, as Lightning); False: every process reads every batch.
    max_time: stop training after this wall-clock time: ``"DD:HH:MM:SS"``, a ``timedelta`` or a dict such
        as ``{"hours": 1}`` (checked after every batch; Lightning's Timer).
    overfit_batches: train and validate on this many first batches (int) or fraction (float) every
        epoch, in order (training shuffling is turned off), to check that the model can overfit.
    kwargs: Lightning's other arguments (plugins, sync_batchnorm, barebones,
        model_registry, enable_autolog_hparams) are accepted at their defaults and refused otherwise,
        naming what ember does not implement; Lightning 1.x names are refused naming their replacement.
"""


def documented(init):
    """Give ``Trainer.__init__`` its Args section (kept here so that trainer.py stays small)."""
    init.__doc__ = INIT_DOC
    return init


def epoch_limit(max_epochs: int | None, max_steps: int | None, max_time: Any) -> int | None:
    """The epoch limit, as Lightning sets it: unset with max_time, none (-1); unset with no other limit, None
    (FitSettings makes it 1000, and fit warns: ``messages.fit_hints``)."""
    return -1 if max_epochs is None and (max_steps is None or max_steps == -1) and max_time is not None else max_epochs
