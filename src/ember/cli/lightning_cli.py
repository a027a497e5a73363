"""LightningCLI: a command line for a training script, built from the signatures of the model, the
data module and the Trainer (needs jsonargparse: ``pip install 'ember-train[cli]'``).

``python train.py fit --config config.yaml --trainer.max_epochs 5 --model.lr 0.01 --ckpt_path last``;
``--print_config`` prints the resolved configuration. ``fit`` saves it as ``config.yaml`` in the
run's log folder (the first logger's ``log_dir``, else ``default_root_dir``).
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import random
import sys
import warnings
from typing import Any, Callable, Mapping

from ember.checkpoint.storage.locations import open_store
from ember.cli.parser import add_configure_optimizers, configure_optimizers, parser_class
from ember.core.callback import Callback
from ember.core.datamodule import LightningDataModule
from ember.core.module import Module
from ember.seed import seed_everything
from ember.trainer import Trainer
from ember.trainer.arguments import NOT_IMPLEMENTED

__all__ = ["LightningArgumentParser", "LightningCLI", "SaveConfigCallback"]

EXTRA_HINT = "install it with `pip install 'ember-train[cli]'` (or `pip install jsonargparse`)"
SUBCOMMANDS = ("fit", "validate", "test", "predict")
_SKIPPED_FN_ARGS = {"model", "train_dataloaders", "val_dataloaders", "dataloaders", "datamodule"}


def _require_jsonargparse() -> None:
    if importlib.util.find_spec("jsonargparse") is None:
        raise ModuleNotFoundError(f"LightningCLI needs the jsonargparse package, which is not installed; {EXTRA_HINT}.")


def LightningArgumentParser(*args: Any, **kwargs: Any):  # noqa: N802 - Lightning's name for the parser class
    """A ``jsonargparse.ArgumentParser`` with Lightning's ``add_lightning_class_args``, ``add_optimizer_args``
    and ``add_lr_scheduler_args`` (what ``add_arguments_to_parser`` receives; ``ember.cli.parser``).

    Args:
        *args: passed to ``jsonargparse.ArgumentParser``.
        **kwargs: passed to ``jsonargparse.ArgumentParser``.
    """
    _require_jsonargparse()
    return parser_class()(*args, **kwargs)


def log_dir_of(trainer) -> str:
    """Where a run's files go: ``trainer.log_dir`` (the first logger's, else ``default_root_dir``).

    Args:
        trainer: the Trainer of the run.
    """
    return os.fspath(trainer.log_dir)


class SaveConfigCallback(Callback):
    """Writes the resolved configuration to ``<log dir>/<config_filename>`` when fit starts, on the
    global-zero process. An existing file is an error unless ``overwrite=True``.

    Args:
        parser: the jsonargparse parser that parsed ``config`` (it writes the file).
        config: the parsed configuration to save.
        config_filename: the file's name inside the log folder (default "config.yaml").
        overwrite: replace an existing file instead of raising ``RuntimeError``.
        multifile: accepted for Lightning's signature; the configuration is saved as one file.
    """

    def __init__(self, parser, config, config_filename: str = "config.yaml", overwrite: bool = False,
                 multifile: bool = False) -> None:
        self.parser, self.config = parser, config
        self.config_filename, self.overwrite, self.multifile = config_filename, overwrite, multifile
        self.already_saved = False

    def on_fit_start(self, trainer, module) -> None:
        if self.already_saved or not trainer.is_global_zero:
            return
        folder = log_dir_of(trainer)
        store = open_store(folder)
        if not self.overwrite and self.config_filename in store.list(self.config_filename):
            raise RuntimeError(
                f"SaveConfigCallback expected {folder}/{self.config_filename} to not exist, so as not to overwrite "
                "the configuration of an earlier run. Delete it, pass LightningCLI(save_config_kwargs="
                "{'overwrite': True}), or LightningCLI(save_config_callback=None) to save no configuration.")
        with warnings.catch_warnings():  # jsonargparse >= 4.49 calls skip_none deprecated; it still keeps None values
            warnings.simplefilter("ignore")
            text = self.parser.dump(self.config, skip_none=False)
        with store.open_write(self.config_filename) as f:
            f.write(text.encode("utf-8"))
        self.already_saved = True


class LightningCLI:
    """Parse the command line, build the model, data module and Trainer, and run the subcommand.

    ``model_class``/``datamodule_class`` None: any ``ember.Module`` (data: any class) chosen with
    ``--model.class_path``. ``trainer_defaults`` overrides Trainer defaults (callbacks given there
    are added to those of the command line). ``seed_everything_default``: True picks a seed and
    records it in the configuration; an int seeds with it; False does not seed. ``args``: a list,
    a dict or None (``sys.argv``). ``run=False`` parses without subcommands and only builds the objects.
    ``parser_kwargs`` go to every parser, or per subcommand as ``{"fit": {...}}``.
    ``auto_configure_optimizers``: add ``--optimizer`` and ``--lr_scheduler`` (``--optimizer=Adam
    --optimizer.lr=0.01``); when given, they replace the model's ``configure_optimizers``.

    Args:
        model_class: the LightningModule class (or a function returning one), or None for any subclass.
        datamodule_class: the LightningDataModule class (or a function returning one), or None for any class.
        save_config_callback: the callback class that saves the configuration at fit start; None saves none.
        save_config_kwargs: keyword arguments of ``save_config_callback`` (e.g. ``{"overwrite": True}``).
        trainer_class: the Trainer class to build (default ``ember.Trainer``).
        trainer_defaults: Trainer arguments used as defaults (objects given there are passed as they are).
        seed_everything_default: True, an int, or False, as above.
        parser_kwargs: keyword arguments of the parsers, for all, or per subcommand.
        subclass_mode_model: accept any subclass of ``model_class`` chosen with ``--model.class_path``.
        subclass_mode_data: accept any subclass of ``datamodule_class`` chosen with ``--data.class_path``.
        args: the arguments to parse: a list, a dict, or None for ``sys.argv``.
        run: parse a subcommand and run it (default); False only builds the objects.
        auto_configure_optimizers: add ``--optimizer`` and ``--lr_scheduler`` (default True).
    """

    def __init__(self, model_class: type | Callable | None = None, datamodule_class: type | Callable | None = None,
                 save_config_callback: type[SaveConfigCallback] | None = SaveConfigCallback,
                 save_config_kwargs: dict | None = None, trainer_class: type = Trainer,
                 trainer_defaults: dict | None = None, seed_everything_default: bool | int = True,
                 parser_kwargs: dict | None = None, subclass_mode_model: bool = False,
                 subclass_mode_data: bool = False, args: list[str] | dict | None = None, run: bool = True,
                 auto_configure_optimizers: bool = True) -> None:
        _require_jsonargparse()
        self.save_config_callback = save_config_callback
        self.save_config_kwargs = save_config_kwargs or {}
        self.trainer_class = trainer_class
        self.trainer_defaults = dict(trainer_defaults or {})
        self.seed_everything_default = seed_everything_default
        self.parser_kwargs = parser_kwargs or {}
        self.auto_configure_optimizers = auto_configure_optimizers
        self.model_class = model_class or Module
        self._model_subclass = model_class is None or subclass_mode_model
        self.datamodule_class = datamodule_class
        self._data_subclass = datamodule_class is None or subclass_mode_data
        self.subcommand: str | None = None
        self._subcommand_parsers: dict[str, Any] = {}
        self.parser = self._build_parser(run)
        self.config = self._parse(args)
        self.subcommand = self.config["subcommand"] if run else None
        self._run_subcommand = run
        self.before_instantiate_classes()
        self.instantiate_classes()
        if run:
            self._run(self.subcommand)

    # ---------------------------------------------------------------- parser
    def add_arguments_to_parser(self, parser) -> None:
        """Override to add arguments (e.g. ``parser.link_arguments(...)``).

        Args:
            parser: the ``LightningArgumentParser`` being built (the main one, or a subcommand's).
        """

    def before_instantiate_classes(self) -> None:
        """Override to change ``self.config`` before the objects are built."""

    def _core_parser(self, **kwargs: Any):
        from jsonargparse import ActionConfigFile  # deferred: optional dependency (jsonargparse)

        parser = LightningArgumentParser(**{"exit_on_error": True, **kwargs})
        parser.add_argument("-c", "--config", action=ActionConfigFile, help="a YAML configuration file")
        parser.add_argument("--seed_everything", type=bool | int, default=self.seed_everything_default,
                            help="True: pick a seed (recorded in the configuration); an int: that seed; False: none")
        plain = {k: v for k, v in self.trainer_defaults.items() if _is_plain(v)}
        parser.add_class_arguments(self.trainer_class, "trainer", fail_untyped=False, instantiate=False,
                                   sub_configs=True)
        _add_lightning_only_trainer_args(parser)
        if plain:
            parser.set_defaults({f"trainer.{k}": v for k, v in plain.items()})
        if self._model_subclass:
            parser.add_subclass_arguments(self.model_class, "model", fail_untyped=False, required=True)
        else:
            parser.add_class_arguments(self.model_class, "model", fail_untyped=False, sub_configs=True)
        if self._data_subclass:  # as Lightning: any LightningDataModule, or none (``data: null``)
            base = self.datamodule_class or LightningDataModule
            parser.add_subclass_arguments(base, "data", fail_untyped=False, required=False)
        else:
            parser.add_class_arguments(self.datamodule_class, "data", fail_untyped=False, sub_configs=True)
        self.add_arguments_to_parser(parser)
        if self.auto_configure_optimizers:
            if not parser._optimizers:
                parser.add_optimizer_args()
            if not parser._lr_schedulers:
                parser.add_lr_scheduler_args()
        return parser

    @staticmethod
    def configure_optimizers(lightning_module, optimizer, lr_scheduler=None) -> Any:
        """What the model's configure_optimizers returns with ``--optimizer``/``--lr_scheduler``
        (override to change)."""
        return configure_optimizers(lightning_module, optimizer, lr_scheduler)

    def _build_parser(self, run: bool):
        kwargs = dict(self.parser_kwargs)
        per_subcommand = any(k in SUBCOMMANDS for k in kwargs)  # {"fit": {...}, ...} or one dict for every parser
        if not run:
            return self._core_parser(**({} if per_subcommand else kwargs))
        parser = LightningArgumentParser(**{"exit_on_error": True, **({} if per_subcommand else kwargs)})
        subcommands = parser.add_subcommands(required=True, dest="subcommand")
        for name in self.subcommands():
            own = kwargs.get(name, {}) if per_subcommand else kwargs
            sub = self._subcommand_parsers[name] = self._core_parser(**own)
            fn = getattr(self.trainer_class, name)
            skip = {p for p in inspect.signature(fn).parameters if p in _SKIPPED_FN_ARGS}
            sub.add_method_arguments(self.trainer_class, name, skip=skip, fail_untyped=False)
            subcommands.add_subcommand(name, sub, help=(inspect.getdoc(fn) or "").split("\n")[0])
        return parser

    def subcommands(self) -> list[str]:
        """The subcommands this Trainer class has (fit, and validate/test/predict where defined)."""
        return [name for name in SUBCOMMANDS if callable(getattr(self.trainer_class, name, None))]

    def _parse(self, args: list[str] | dict | None):
        if isinstance(args, dict):
            return self.parser.parse_object(args)
        return self.parser.parse_args(sys.argv[1:] if args is None else list(args))

    # ---------------------------------------------------------------- objects
    def _section(self, config):
        return config[self.subcommand] if self.subcommand else config

    def instantiate_classes(self) -> None:
        """Seed (``seed_everything`` setting), then build ``self.model``, ``self.datamodule`` and ``self.trainer``."""
        section = self._section(self.config)
        seed = section["seed_everything"]
        if seed is True:
            seed = random.randint(0, 2**32 - 1)
            section["seed_everything"] = seed  # the saved configuration reproduces the run
        if seed is not False and seed is not None:
            seed_everything(int(seed))
        instantiate = getattr(self.parser, "instantiate", None) or self.parser.instantiate_classes  # renamed in 4.49
        self.config_init = instantiate(self.config)
        init = self._section(self.config_init)
        self.datamodule = init.get("data")
        self.model = init["model"]
        parser = self._subcommand_parsers.get(self.subcommand, self.parser)
        add_configure_optimizers(self, parser, init)
        self._extra_callbacks = [init[k] for k in getattr(parser, "callback_keys", []) if init.get(k) is not None]
        self.trainer = self.instantiate_trainer(dict(init["trainer"]))

    def instantiate_trainer(self, kwargs: dict) -> Any:
        """Build the Trainer, with the configuration's callbacks, those of ``trainer_defaults`` and, for fit,
        the ``save_config_callback``.

        Args:
            kwargs: the Trainer's arguments from the parsed configuration.
        """
        objects = {k: v for k, v in self.trainer_defaults.items() if not _is_plain(v)}
        callbacks = _as_list(kwargs.pop("callbacks", None)) + _as_list(objects.pop("callbacks", None))
        callbacks += getattr(self, "_extra_callbacks", [])  # those of add_lightning_class_args
        if self.save_config_callback is not None and self._run_subcommand_is_fit():
            parser = self._subcommand_parsers.get(self.subcommand, self.parser)  # the file works as --config
            callbacks.append(self.save_config_callback(parser, self._section(self.config), **self.save_config_kwargs))
        return self.trainer_class(**{**kwargs, **objects, "callbacks": callbacks})

    def _run_subcommand_is_fit(self) -> bool:
        return self.subcommand in (None, "fit")

    # ---------------------------------------------------------------- running
    def _run(self, name: str) -> None:
        fn = getattr(self.trainer, name)
        kwargs = {k: v for k, v in dict(self._section(self.config_init)).items()
                  if k in inspect.signature(fn).parameters and k not in _SKIPPED_FN_ARGS}
        params = inspect.signature(fn).parameters
        if self.datamodule is not None:
            if "datamodule" in params:
                kwargs["datamodule"] = self.datamodule
            else:  # a Trainer without datamodule=: hand it the data module's loaders
                kwargs.update(_loaders_for(name, self.datamodule, params))
        fn(self.model, **kwargs)


_LOADER_OF = {"validate": "val_dataloader", "test": "test_dataloader", "predict": "predict_dataloader"}


def _loaders_for(name: str, datamodule: Any, params: Mapping[str, Any]) -> dict[str, Any]:
    def loader(method: str) -> Any:
        fn = getattr(datamodule, method, None)
        return fn() if callable(fn) else None

    if name == "fit":
        return {"train_dataloaders": loader("train_dataloader"), "val_dataloaders": loader("val_dataloader")}
    return {"dataloaders": loader(_LOADER_OF[name])} if "dataloaders" in params else {}


def _add_lightning_only_trainer_args(parser) -> None:
    """Lightning's Trainer arguments that ember takes only at their defaults (``ember.trainer.arguments``): in the
    parser too, so that a configuration printed by Lightning's ``--print_config`` is accepted."""
    known = {a.dest for a in parser._actions}
    for name, default in NOT_IMPLEMENTED.items():
        if f"trainer.{name}" not in known:
            parser.add_argument(f"--trainer.{name}", type=Any, default=default,
                                help=f"Lightning's; ember runs with the default ({default!r}) only")


def _is_plain(value: Any) -> bool:
    """Whether a trainer default can be a parser default (data), not an object handed over as is."""
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(_is_plain(v) for v in value.values())
    return value is None or isinstance(value, (bool, int, float, str))


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]
