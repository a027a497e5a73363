"""trainer.validate/test/predict, and the setup/teardown hooks of every stage."""

from __future__ import annotations

import warnings
from typing import Any

from ember.checkpoint.state import unwrap_model
from ember.loops.data import end_workers
from ember.core.datamodule import LOADER_METHODS, loaders_for, split_datamodule
from ember.checkpoint import resume
from ember.errors import MisconfigurationError
from ember.loops.evaluation import STAGES, EvalLoop, print_results
from ember.loops.hooks import Hooks
from ember.loops.parts import as_loaders
from ember.loops.precision import Precision
from ember.utilities.compile import unwrap_compiled


REMOVED_HOOKS = {"fit": ("training_epoch_end", "validation_epoch_end"), "validate": ("validation_epoch_end",),
                 "test": ("test_epoch_end",), "predict": ()}  # Lightning 1.x hooks that 2.x refuses


def check_removed_hooks(module: Any, stage: str) -> None:
    """A Lightning 1.x epoch-end hook on the module would never run: refuse it, naming its replacement."""
    for name in REMOVED_HOOKS[stage]:
        if callable(getattr(module, name, None)):
            raise NotImplementedError(
                f"Support for `{name}` has been removed in Lightning 2.0 (and ember): `{type(module).__name__}` "
                f"implements this method. Use the `on_{name.replace('training', 'train')}` hook instead; to reach "
                "the step outputs, keep them in a list attribute in the step and read (then clear) it there.")


def setup(trainer, hooks: Hooks, stage: str) -> None:
    """Lightning's order: prepare_data (datamodule, module; once per node), then setup(stage) of the
    datamodule, the callbacks and the module, then configure_model."""
    check_removed_hooks(trainer.module, stage)
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
    model = unwrap_compiled(model)  # torch.compile(model): its module, with compiled step methods
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
    settings, loaders = trainer.settings, None
    trainer.profiler.setup(stage, trainer.local_rank if trainer.world_size > 1 else None, trainer.log_dir)
    trainer._last_fn, trainer._interrupted = stage, False  # trainer.state
    try:
        setup(trainer, hooks, stage)
        loaders = loaders_for(stage, dataloaders, datamodule, model)
        if loaders is None:
            method = LOADER_METHODS[stage]
            raise MisconfigurationError(f"no data to {stage}: pass trainer.{stage}(model, dataloaders=...), a "
                                        f"datamodule with {method}(), or define {method}() on the module.")
        trainer._stage_loaders = {**getattr(trainer, "_stage_loaders", {}), stage: as_loaders(loaders)}
        if ckpt_path is not None:
            load_for_evaluation(trainer, stage, ckpt_path)
        loop = EvalLoop(stage, model, hooks, trainer._sink, trainer._hub, device=trainer.device,
                        precision=Precision(settings.precision, trainer.device), inference_mode=settings.inference_mode,
                        reduce=trainer.reduce, step=lambda: (trainer.global_step, trainer.current_epoch),
                        bar=trainer._bar)
        limit = {"validate": settings.limit_val_batches, "test": settings.limit_test_batches,
                 "predict": settings.limit_predict_batches}[stage]
        # trainer.{stage}_dataloaders and BasePredictionWriter (the batch indices) read them there
        out = loop.run(shard_loaders(trainer, stage, trainer._stage_loaders[stage]), limit, return_predictions)
        teardown(trainer, hooks, stage)
    except BaseException as e:
        trainer._interrupted = True
        hooks("on_exception", e)
        raise
    finally:
        for loader in as_loaders(loaders):
            end_workers(loader)  # a persistent loader's workers, as Lightning's teardown does
        model.__dict__["_logged"] = None
        if trainer.logger is not None and trainer.is_global_zero:
            trainer.logger.save()
        trainer.profiler.describe()
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


def load_for_evaluation(trainer, stage: str, ckpt_path) -> None:
    """Load the weights (only) of ``"best"``, ``"last"``, ``"hpc"`` or a path into the model, as Lightning
    does; the location is found as fit finds it (``resume.locate``)."""
    trainer.checkpoint_writer.wait()  # the file named may still be being written
    path = resume.locate(ckpt_path, trainer._checkpoint_place(), entry=stage)
    if path is None:
        return
    ckpt = resume.read(path, storage_options=trainer.storage_options)
    module, strategy = unwrap_model(trainer.module), trainer._parallel
    sharded = hasattr(strategy, "load_weights") and any(type(p).__name__ == "DTensor" for p in module.parameters())
    resume.restore_weights(module, ckpt, path, datamodule=trainer.datamodule,
                           load=strategy.load_weights if sharded else None)  # after an FSDP fit: every rank
    trainer.ckpt_path = path


class TrainerEvaluation:
    """``validate``, ``test`` and ``predict`` of ``ember.Trainer`` (a mixin over ``evaluate``)."""

    def validate(self, model=None, dataloaders=None, ckpt_path=None, verbose: bool = True, datamodule=None,
                 weights_only: bool | None = None):
        """Run one validation pass; returns ``[{metric: value}]``, one dict per loader (Lightning's shape).
        ``ckpt_path``: None (the model as it is), ``"best"``, ``"last"`` or a path: its weights are loaded.

        Args:
            model: the LightningModule (None: the one last fitted).
            dataloaders: the validation DataLoader(s), or a LightningDataModule.
            ckpt_path: the weights to load first, as above.
            verbose: print the results.
            datamodule: the LightningDataModule giving the loaders.
            weights_only: Lightning's ``torch.load`` flag; ember files hold no pickle, so it changes nothing.
        """
        return evaluate(self, "validate", model, dataloaders, ckpt_path, verbose, datamodule)

    def test(self, model=None, dataloaders=None, ckpt_path=None, verbose: bool = True, datamodule=None,
             weights_only: bool | None = None):
        """Run the test loop (``test_step``); returns ``[{metric: value}]``, one dict per loader.

        Args:
            model: the LightningModule (None: the one last fitted).
            dataloaders: the test DataLoader(s), or a LightningDataModule.
            ckpt_path: the weights to load first: None, "best", "last" or a path.
            verbose: print the results.
            datamodule: the LightningDataModule giving the loaders.
            weights_only: Lightning's ``torch.load`` flag; ember files hold no pickle, so it changes nothing.
        """
        return evaluate(self, "test", model, dataloaders, ckpt_path, verbose, datamodule)

    def predict(self, model=None, dataloaders=None, datamodule=None, return_predictions: bool | None = None,
                ckpt_path=None, weights_only: bool | None = None):
        """Run ``predict_step`` over the loaders; returns its outputs (a list per loader when several).

        Args:
            model: the LightningModule (None: the one last fitted).
            dataloaders: the prediction DataLoader(s), or a LightningDataModule.
            datamodule: the LightningDataModule giving the loaders.
            return_predictions: return the outputs (None counts as True); False returns None.
            ckpt_path: the weights to load first: None, "best", "last" or a path.
            weights_only: Lightning's ``torch.load`` flag; ember files hold no pickle, so it changes nothing.
        """
        return evaluate(self, "predict", model, dataloaders, ckpt_path, False, datamodule,
                                     return_predictions=True if return_predictions is None else return_predictions)
