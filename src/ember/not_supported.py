"""Lightning's names and options that ember does not provide, each with the reason and what to use instead.

This is the one list. Every name on it can still be imported from the same path as in Lightning (so a
script's imports do not fail before it runs); using it (constructing the class, calling the function,
passing the option to ``Trainer``) raises :class:`ember.errors.NotSupportedError` with the text below.
``tests/test_lightning_surface.py`` checks that every public Lightning name is either in ember or here.

Two kinds: ``WILL_NOT_DO`` (hardware, back ends and services outside ember's scope, on purpose) and
``NOT_YET`` (features ember means to have but does not have yet).
"""

from __future__ import annotations

import os
import sys
import types
from dataclasses import dataclass
from typing import Any, NoReturn

from ember.errors import NotSupportedError


@dataclass(frozen=True)
class Refusal:
    """One thing ember does not do.

    Args:
        what: the names it covers: dotted paths under ``ember`` (``"strategies.DeepSpeedStrategy"``) or
            Trainer options (``"Trainer(accelerator='tpu')"``).
        reason: why ember does not do it.
        instead: what to use instead.
    """

    what: tuple[str, ...]
    reason: str
    instead: str

    def message(self, name: str) -> str:
        """The error text for ``name``: what it is, why ember lacks it, and what to use.

        Args:
            name: how to name the thing refused, e.g. ``"Lightning's strategies.DeepSpeedStrategy"``.
        """
        return f"ember does not support {name}: {self.reason}. Instead: {self.instead}."


_TPU = "TPUs need torch_xla, which ember does not build on; ember runs on CPUs and CUDA GPUs"
_CPU_CUDA = "Trainer(accelerator='cpu') or accelerator='cuda'"
_DS = "DeepSpeed keeps its checkpoints in its own format, which ember's verified checkpoints do not cover"
_FSDP = "Trainer(strategy='fsdp') (FSDP2, sharded checkpoints that ember verifies)"
_SERVICE = "ember ships no client for hosted experiment trackers yet"
_LOGGERS = "CSVLogger or TensorBoardLogger, or subclass ember.loggers.Logger for your tracker"
_IO = "ember owns the checkpoint format (safetensors-based, checksummed, atomic)"
_IO_INSTEAD = ("ModelCheckpoint for when and where to save, Trainer(storage_options=...) for fsspec "
               "locations (s3://, gs://, ...); saves are already asynchronous")
_PRECISION_OBJ = "ember picks its precision from the string argument, not from plugin objects"
_PRECISION_INSTEAD = "Trainer(precision='32' | '16-mixed' | 'bf16-mixed')"

WILL_NOT_DO: tuple[Refusal, ...] = (
    Refusal(("accelerators.XLAAccelerator", "accelerators.xla.XLAAccelerator", "Trainer(accelerator='tpu')",
             "strategies.xla.XLAStrategy", "strategies.single_xla.SingleDeviceXLAStrategy",
             "Trainer(strategy='xla')", "plugins.XLAPrecision", "plugins.precision.XLAPrecision",
             "plugins.precision.xla.XLAPrecision", "plugins.XLACheckpointIO", "plugins.io.XLACheckpointIO"),
            _TPU, _CPU_CUDA),
    Refusal(("profilers.XLAProfiler", "profilers.xla.XLAProfiler"), _TPU,
            "Trainer(profiler='simple' | 'advanced' | 'pytorch')"),
    Refusal(("accelerators.MPSAccelerator", "accelerators.mps.MPSAccelerator", "accelerators.mps.get_device_stats",
             "Trainer(accelerator='mps')"),
            "Apple's MPS back end lacks operations ember's loop and checks rely on, and ember is not tested on it",
            _CPU_CUDA),
    Refusal(("Trainer(accelerator='hpu')", "Trainer(accelerator='ipu')"),
            "Habana HPUs and Graphcore IPUs need vendor plugins that Lightning itself moved out of its core",
            _CPU_CUDA),
    Refusal(("strategies.DeepSpeedStrategy", "strategies.deepspeed.DeepSpeedStrategy",
             "strategies.deepspeed.remove_module_hooks", "Trainer(strategy='deepspeed')",
             "plugins.DeepSpeedPrecision", "plugins.precision.DeepSpeedPrecision",
             "plugins.precision.deepspeed.DeepSpeedPrecision",
             "utilities.deepspeed.convert_zero_checkpoint_to_fp32_state_dict", "utilities.deepspeed.ds_checkpoint_dir",
             "utilities.model_summary.model_summary_deepspeed.DeepSpeedSummary",
             "utilities.model_summary.model_summary_deepspeed.DeepSpeedLayerSummary",
             "utilities.model_summary.model_summary_deepspeed.deepspeed_param_size"),
            _DS, _FSDP),
    Refusal(("plugins.BitsandbytesPrecision", "plugins.precision.BitsandbytesPrecision",
             "plugins.precision.bitsandbytes.BitsandbytesPrecision", "Trainer(precision='transformer-engine')",
             "plugins.TransformerEnginePrecision", "plugins.precision.TransformerEnginePrecision",
             "plugins.precision.transformer_engine.TransformerEnginePrecision"),
            "quantised and FP8 layers (bitsandbytes, Transformer Engine) replace the model's modules, which "
            "ember's checkpoints would then have to describe", _PRECISION_INSTEAD),
    Refusal(("plugins.CheckpointIO", "plugins.io.CheckpointIO", "plugins.TorchCheckpointIO",
             "plugins.io.TorchCheckpointIO", "plugins.AsyncCheckpointIO", "plugins.io.AsyncCheckpointIO",
             "plugins.io.async_plugin.AsyncCheckpointIO"),
            _IO, _IO_INSTEAD),
    Refusal(("plugins.MixedPrecision", "plugins.precision.MixedPrecision", "plugins.precision.amp.MixedPrecision",
             "plugins.HalfPrecision", "plugins.precision.HalfPrecision", "plugins.precision.half.HalfPrecision",
             "plugins.DoublePrecision", "plugins.precision.DoublePrecision", "plugins.precision.double.DoublePrecision",
             "plugins.precision.double.LightningDoublePrecisionModule", "plugins.FSDPPrecision",
             "plugins.precision.FSDPPrecision", "plugins.precision.fsdp.FSDPPrecision", "Trainer(plugins=...)"),
            _PRECISION_OBJ, _PRECISION_INSTEAD),
    Refusal(("utilities.model_registry.download_model_from_registry",
             "utilities.model_registry.find_model_local_ckpt_path", "Trainer(model_registry=...)"),
            "Lightning's model registry is a hosted service", "a checkpoint path or an fsspec URL as ckpt_path"),
    Refusal(("utilities.migration.utils.migrate_checkpoint", "utilities.migration.utils.pl_legacy_patch",
             "utilities.upgrade_checkpoint.main"),
            "ember reads Lightning's .ckpt files of every 2.x version as they are, without upgrading them",
            "ember.load_checkpoint(path) or Trainer.fit(ckpt_path=path); `ember ckpt convert SRC DST` turns a "
            ".ckpt into an ember checkpoint"),

    Refusal(("LightningModule.to_tensorrt",),
            "TensorRT export needs torch_tensorrt and NVIDIA's runtime, which ember does not build on",
            "self.to_onnx(path, input_sample) and TensorRT's own tools, or self.to_torchscript()"),
)

NOT_YET: tuple[Refusal, ...] = (
    Refusal(tuple(f"callbacks.progress.rich_progress.{n}" for n in (
        "BatchesProcessedColumn", "CustomBarColumn", "CustomInfiniteTask", "CustomProgress", "CustomTimeColumn",
        "MetricsTextColumn", "ProcessingSpeedColumn")),
            "RichProgressBar draws with rich's own columns; Lightning's column classes are not rebuilt",
            "RichProgressBar(theme=RichProgressBarTheme(...)) for its look"),
    Refusal(("profilers.pytorch.RegisterRecordFunction", "profilers.pytorch.ScheduleWrapper"),
            "PyTorchProfiler records through torch.profiler directly; Lightning's helper classes are not rebuilt",
            "PyTorchProfiler(schedule=..., record_module_names=...) or torch.profiler itself"),
    Refusal(("loggers.CometLogger", "loggers.comet.CometLogger", "loggers.MLFlowLogger", "loggers.mlflow.MLFlowLogger",
             "loggers.WandbLogger", "loggers.wandb.WandbLogger", "loggers.neptune.NeptuneLogger",
             "loggers.LitLogger", "loggers.litlogger.LitLogger"),
            _SERVICE, _LOGGERS),
    Refusal(("callbacks.ModelPruning", "callbacks.pruning.ModelPruning"),
            "pruning changes parameter names (weight_orig, weight_mask), which ember's resume does not map yet",
            "torch.nn.utils.prune in your module's hooks"),
    Refusal(("callbacks.SpikeDetection", "callbacks.spike.SpikeDetection"),
            "loss-spike detection is not built yet", "a Callback whose on_train_batch_end checks the loss"),
    Refusal(("callbacks.ThroughputMonitor", "callbacks.throughput_monitor.ThroughputMonitor"),
            "throughput monitoring is not built yet", "a Callback that times on_train_batch_start/end"),
    Refusal(("callbacks.WeightAveraging", "callbacks.weight_averaging.WeightAveraging", "callbacks.EMAWeightAveraging",
             "callbacks.weight_averaging.EMAWeightAveraging"),
            "weight averaging other than StochasticWeightAveraging is not built yet",
            "callbacks.StochasticWeightAveraging, or torch.optim.swa_utils.AveragedModel in your module"),
    Refusal(("strategies.ModelParallelStrategy", "strategies.model_parallel.ModelParallelStrategy"),
            "tensor parallelism (2-D device meshes) is not built yet", _FSDP),
    Refusal(("Trainer(sync_batchnorm=True)", "plugins.LayerSync", "plugins.layer_sync.LayerSync",
             "plugins.TorchSyncBatchNorm", "plugins.layer_sync.TorchSyncBatchNorm"),
            "batch-norm synchronisation across processes is not wired into ember's DDP yet",
            "torch.nn.SyncBatchNorm.convert_sync_batchnorm(model) before fit"),
    Refusal(("Trainer(barebones=True)",), "the bare-bones mode is not built yet",
            "enable_checkpointing=False, logger=False, enable_progress_bar=False, enable_model_summary=False"),
    Refusal(("Trainer(enable_autolog_hparams=False)",), "ember always logs the hyperparameters to every logger",
            "leave enable_autolog_hparams=True; log nothing by not calling save_hyperparameters"),
)


def _index() -> dict[str, Refusal]:
    out: dict[str, Refusal] = {}
    for r in WILL_NOT_DO + NOT_YET:
        for name in r.what:
            if name in out:
                raise AssertionError(f"{name} is listed twice in ember.not_supported")
            out[name] = r
    return out


REFUSALS: dict[str, Refusal] = _index()


def refuse(name: str) -> NoReturn:
    """Raise the NotSupportedError for ``name`` (a key of :data:`REFUSALS`).

    Args:
        name: a listed path (``"strategies.DeepSpeedStrategy"``) or Trainer option (``"Trainer(strategy='xla')"``).
    """
    raise NotSupportedError(REFUSALS[name].message(f"Lightning's {name}"))


def _placeholder(path: str, is_class: bool) -> Any:
    """A stand-in importable at ``ember.<path>``: a class that refuses construction, or a function that
    refuses every call. Subclassing the class is allowed (so a module defining a subclass imports), and
    ``isinstance(x, Placeholder)`` is simply False for everything ember makes."""
    module, _, name = ("ember." + path).rpartition(".")

    def refuse_call(*args: Any, **kwargs: Any) -> NoReturn:
        refuse(path)

    if is_class:
        members = {"__init__": refuse_call, "__module__": module, "__not_supported__": path,
                   "__doc__": REFUSALS[path].message(f"Lightning's {path}")}
        if path.startswith("accelerators."):  # `if XLAAccelerator.is_available():` answers, as it would here
            members.update(is_available=staticmethod(lambda: False), auto_device_count=staticmethod(lambda: 0))
        return type(name, (), members)
    refuse_call.__name__ = refuse_call.__qualname__ = name
    refuse_call.__module__ = module
    refuse_call.__doc__ = REFUSALS[path].message(f"Lightning's {path}")
    refuse_call.__not_supported__ = path  # type: ignore[attr-defined]
    return refuse_call


def placeholder(path: str) -> Any:
    """The stand-in for ``ember.<path>`` (a listed name): a class when the name is capitalised, else a function.

    Args:
        path: the dotted path under ``ember``, e.g. ``"accelerators.XLAAccelerator"``.
    """
    return _placeholder(path, path.rpartition(".")[2][:1].isupper())


def install(package: str) -> dict[str, Any]:
    """Put the listed names of ``ember.<package>`` and of its listed submodules in place.

    Names directly under the package are returned (for the package's namespace); listed submodules that have
    no file of their own (``ember.strategies.deepspeed``) are made as module objects and registered, so
    ``from ember.strategies.deepspeed import DeepSpeedStrategy`` imports and raises only when used.

    Args:
        package: the package's path under ``ember`` (``"strategies"``).
    """
    direct: dict[str, Any] = {}
    prefix = package + "."
    for path in REFUSALS:
        if not path.startswith(prefix):
            continue
        rest = path[len(prefix):]
        if "." not in rest:
            direct[rest] = placeholder(path)
            continue
        submodule, _, name = rest.rpartition(".")
        if not _has_file(package, submodule.split(".")[0]):
            _module("ember." + package + "." + submodule).__dict__[name] = placeholder(path)
    return direct


def _has_file(package: str, submodule: str) -> bool:
    """Whether ``ember.<package>.<submodule>`` is a real module; such a file defines its listed names itself
    (``name = placeholder("package.submodule.name")``)."""
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), *package.split("."))
    return os.path.exists(os.path.join(folder, submodule + ".py")) or os.path.isdir(os.path.join(folder, submodule))


def _module(full: str) -> types.ModuleType:
    """The module ``full``, made (and attached to its parent) when it has no file of its own."""
    if full in sys.modules:
        return sys.modules[full]
    parent, _, leaf = full.rpartition(".")
    mod = types.ModuleType(full, f"Lightning's {full.replace('ember', 'lightning.pytorch', 1)}: not in ember "
                                 "(see ember.not_supported).")
    mod.__path__ = []  # a package, so listed submodules below it import too
    sys.modules[full] = mod
    setattr(_module(parent), leaf, mod)
    return mod
