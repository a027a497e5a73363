"""trainer.validate/test/predict, the setup/teardown hooks of every stage, and the datamodule's
place in checkpoints (its state under its class's name, its hparams under
``datamodule_hyper_parameters``, as Lightning writes them)."""

from __future__ import annotations

import os
import warnings
from typing import Any

from ember.checkpoint import lightning
from ember.checkpoint.io import load_from
from ember.checkpoint.lookup import resolve_ckpt_path
from ember.checkpoint.state import load_weights, unwrap_model
from ember.checkpoint.store import resolve
from ember.datamodule import LOADER_METHODS, loaders_for, split_datamodule
from ember.errors import MisconfigurationError
from ember.evaluation import STAGES, EvalLoop, print_results
from ember.hooks import Hooks
from ember.fit_parts import as_loaders
from ember.precision import Precision

DATAMODULE_HPARAMS = "datamodule_hyper_parameters"


def setup(trainer, hooks: Hooks, stage: str) -> None:
    """Lightning's order: prepare_data (datamodule, module; once per node), then setup(stage) of the
    datamodule, the callbacks and the module, then configure_model."""
    dm = trainer.datamodule
    if trainer.local_rank == 0:
        _call(dm, "prepare_data")
        hooks.module_hook("prepare_data")
    _call(dm, "setup", stage)
    hooks("setup", stage)
    if not (stage == "fit" and getattr(trainer, "_sharded", False)):  # FSDP calls it, with device_mesh set
        hooks.module_hook("configure_model")


def _call(dm: Any, hook: str, *args: Any) -> None:
    """A datamodule's hook, if it has one (a plain object with *_dataloader() methods may serve as one)."""
    fn = getattr(dm, hook, None)
    if callable(fn):
        fn(*args)


def teardown(trainer, hooks: Hooks, stage: str) -> None:
    _call(trainer.datamodule, "teardown", stage)
    hooks("teardown", stage)


def evaluate(trainer, stage: str, model, dataloaders, ckpt_path, verbose: bool, datamodule,
             return_predictions: bool = False) -> list:
    """One validate/test/predict call: connect, set up, load ``ckpt_path``'s weights, run, tear down."""
    dataloaders, datamodule = split_datamodule(dataloaders, datamodule)
    if model is None:
        model = trainer.module
        if model is None:
            raise MisconfigurationError(f"trainer.{stage}() needs a model: pass trainer.{stage}(model, ...) or "
                                        "call trainer.fit(model) first.")
        if dataloaders is None and datamodule is None:
            datamodule = trainer.datamodule
        if ckpt_path is None and trainer.checkpoint_callback is not None and _best(trainer):
            warnings.warn(f"trainer.{stage}(ckpt_path=None) was called without a model: the best checkpoint of "
                          f"the previous fit is used. Pass ckpt_path='best', 'last' or a path to silence this.",
                          stacklevel=3)
            ckpt_path = "best"
    names = STAGES[stage]
    if not callable(getattr(model, names.step, None)):
        raise MisconfigurationError(f"trainer.{stage}() needs {type(model).__name__}.{names.step}(batch, batch_idx); "
                                    "define it.")
    hooks = trainer._attach(model, datamodule)
    settings = trainer.settings
    try:
        setup(trainer, hooks, stage)
        loaders = loaders_for(stage, dataloaders, datamodule, model)
        if loaders is None:
            method = LOADER_METHODS[stage]
            raise MisconfigurationError(f"no data to {stage}: pass trainer.{stage}(model, dataloaders=...), a "
                                        f"datamodule with {method}(), or define {method}() on the module.")
        if ckpt_path is not None:
            load_for_evaluation(trainer, ckpt_path)
        loop = EvalLoop(stage, model, hooks, trainer._sink, trainer._hub, device=trainer.device,
                        precision=Precision(settings.precision, trainer.device), inference_mode=settings.inference_mode,
                        reduce=trainer.reduce, step=lambda: (trainer.global_step, trainer.current_epoch))
        limit = {"validate": settings.limit_val_batches, "test": settings.limit_test_batches,
                 "predict": settings.limit_predict_batches}[stage]
        out = loop.run(shard_loaders(trainer, stage, as_loaders(loaders)), limit, return_predictions)
        teardown(trainer, hooks, stage)
    except BaseException as e:
        hooks("on_exception", e)
        raise
    finally:
        model.__dict__["_logged"] = None
        if trainer.logger is not None and trainer.is_global_zero:
            trainer.logger.save()
    if verbose and stage != "predict" and trainer.is_global_zero:
        print_results(names.title, out)
    return out


def shard_loaders(trainer, stage: str, loaders: list) -> list:
    """Each loader with a DistributedSampler in a job of many processes (as Lightning's
    ``use_distributed_sampler=True``): validate/test unshuffled and padded to equal lengths, so that
    ``sync_dist`` values are reduced over every sample; predict per ``strategy.distributed_loader``."""
    strategy = trainer._parallel  # noqa: SLF001
    if strategy is None or not trainer.use_distributed_sampler:
        return loaders
    return [strategy.distributed_loader(loader, stage=stage) for loader in loaders]


def _best(trainer) -> str:
    trainer.checkpoint_writer.wait()  # the best file may still be being written
    return trainer.checkpoint_callback.best_model_path


def load_for_evaluation(trainer, ckpt_path) -> None:
    """Load the weights (only) of ``"best"``, ``"last"`` or a path into the model, as Lightning does."""
    if ckpt_path == "best":
        cb = trainer.checkpoint_callback
        path = _best(trainer) if cb is not None else ""
        if not path:
            raise MisconfigurationError(
                "ckpt_path='best' needs a ModelCheckpoint that has saved a checkpoint (fit with checkpointing on "
                "first); pass the checkpoint's path instead.")
    else:
        trainer.checkpoint_writer.wait()
        default_dir = os.path.join(trainer.default_root_dir, "checkpoints")
        path = resolve_ckpt_path(ckpt_path, trainer.checkpoint_managers, default_dir, trainer.storage_options)
        if path is None:
            raise MisconfigurationError(f"ckpt_path='last' found no checkpoint in {default_dir}; pass a path.")
    ckpt = load_from(*resolve(path, trainer.storage_options), map_location="cpu")
    if lightning.is_lightning(ckpt):
        ckpt = lightning.to_ember(ckpt, path=path)
    module = unwrap_model(trainer.module)
    module.on_load_checkpoint(ckpt)
    strategy = trainer._parallel  # noqa: SLF001
    if hasattr(strategy, "load_weights") and any(type(p).__name__ == "DTensor" for p in module.parameters()):
        strategy.load_weights(module, ckpt["state_dict"])  # the module is sharded (after an FSDP fit): every rank
    else:
        load_weights(module, ckpt["state_dict"], strict=True, source=path)
    restore_datamodule(trainer.datamodule, ckpt)
    trainer.ckpt_path = path


def dump_datamodule(dm: Any, ckpt: dict) -> None:
    if dm is None:
        return
    state = dm.state_dict() if callable(getattr(dm, "state_dict", None)) else None
    if state:
        ckpt[type(dm).__qualname__] = state
    if getattr(dm, "hparams", None):
        ckpt[DATAMODULE_HPARAMS] = dict(dm.hparams)


def restore_datamodule(dm: Any, ckpt: dict) -> None:
    if dm is not None and type(dm).__qualname__ in ckpt and callable(getattr(dm, "load_state_dict", None)):
        dm.load_state_dict(ckpt[type(dm).__qualname__])
