"""LightningDataModule: the data of a run in one object, and where each stage's loaders come from.

``prepare_data()`` (once), ``setup(stage)``, ``train/val/test/predict_dataloader()``,
``teardown(stage)``; ``state_dict()`` is saved in every checkpoint under the class's name (as
Lightning does) and given back to ``load_state_dict()`` on resume; ``save_hyperparameters()`` works
as on a module (saved under ``datamodule_hyper_parameters``)."""

from __future__ import annotations

import functools
from argparse import Namespace
from typing import Any, Mapping

from torch.utils.data import DataLoader

from ember.core.data_hooks import DataHooks
from ember.core.hooks import HparamsSurface
from ember.core.init_args import AttributeDict, init_arguments, store_hparams
from ember.core.pickling import dropped_for_pickling
from ember.errors import MisconfigurationError

LOADER_METHODS = {"fit": "train_dataloader", "validate": "val_dataloader", "test": "test_dataloader",
                  "predict": "predict_dataloader"}


def _capturing(init):
    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        self.__dict__.setdefault("_ember_init_calls", []).append((init, args, kwargs))
        init(self, *args, **kwargs)

    wrapper._ember_wrapped = True  # noqa: SLF001
    return wrapper


class LightningDataModule(DataHooks, HparamsSurface):
    """Subclass it and define the ``*_dataloader()`` methods your stages use. The batch-transfer hooks
    (``on_before_batch_transfer``, ``transfer_batch_to_device``, ``on_after_batch_transfer``) have Lightning's
    defaults, so an override may call ``super()``; one the datamodule overrides wins over the module's."""

    name: str | None = None  # Lightning's optional display name

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "_ember_wrapped", False):
            cls.__init__ = _capturing(init)

    def __getstate__(self) -> dict[str, Any]:
        return dropped_for_pickling(self.__dict__)  # no Trainer, no recorded __init__ calls

    def __init__(self) -> None:
        self.__dict__.setdefault("_hparams", AttributeDict())
        self.trainer = None

    # ---------------------------------------------------------------- hyperparameters
    @property
    def hparams(self) -> Any:
        return self.__dict__.setdefault("_hparams", AttributeDict())

    def save_hyperparameters(self, *args: Any, ignore: str | list[str] | None = None) -> None:
        """Save ``__init__``'s arguments (all, some by name, or a dict/Namespace) as ``self.hparams``.

        Args:
            *args: names of ``__init__`` arguments to save (an unknown name raises ``MisconfigurationError``),
                or one dict/``argparse.Namespace`` saved as it is; none saves them all.
            ignore: a name, or names, not to save.
        """
        if len(args) == 1 and isinstance(args[0], (Mapping, Namespace)):
            store_hparams(self, dict(vars(args[0]) if isinstance(args[0], Namespace) else args[0]), (), ignore)
        else:
            store_hparams(self, init_arguments(self), args, ignore)

    # ---------------------------------------------------------------- hooks (override)
    def prepare_data(self) -> None:
        """Download or write data once, before setup; do not assign state here."""

    def setup(self, stage: str) -> None:
        """Build datasets for ``stage``: ``"fit"``, ``"validate"``, ``"test"`` or ``"predict"``.

        Args:
            stage: the Trainer method about to run.
        """

    def teardown(self, stage: str) -> None:
        """Release what ``setup`` built, after ``stage`` ends; does nothing by default.

        Args:
            stage: the Trainer method that ended: ``"fit"``, ``"validate"``, ``"test"`` or ``"predict"``.
        """

    def train_dataloader(self):
        """The training DataLoader(s); define it to fit (the default raises ``MisconfigurationError``)."""
        raise _missing(self, "train_dataloader", "fit")

    def val_dataloader(self):
        """The validation DataLoader(s); define it to validate (the default raises ``MisconfigurationError``)."""
        raise _missing(self, "val_dataloader", "validate")

    def test_dataloader(self):
        """The test DataLoader(s); define it to test (the default raises ``MisconfigurationError``)."""
        raise _missing(self, "test_dataloader", "test")

    def predict_dataloader(self):
        """The prediction DataLoader(s); define it to predict (the default raises ``MisconfigurationError``)."""
        raise _missing(self, "predict_dataloader", "predict")

    def state_dict(self) -> dict[str, Any]:
        """State saved in checkpoints (under the class's name); empty by default."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned, when a checkpoint is loaded; does nothing by default.

        Args:
            state_dict: the dict saved for this datamodule.
        """

    @classmethod
    def from_datasets(cls, train_dataset=None, val_dataset=None, test_dataset=None, predict_dataset=None,
                      batch_size: int = 1, num_workers: int = 0, **loader_kwargs: Any) -> "LightningDataModule":
        """A datamodule serving the given datasets (training data shuffled)."""
        def loader(ds, shuffle=False):
            return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers, **loader_kwargs)

        dm = cls()
        for name, ds, shuffle in (("train_dataloader", train_dataset, True), ("val_dataloader", val_dataset, False),
                                  ("test_dataloader", test_dataset, False),
                                  ("predict_dataloader", predict_dataset, False)):
            if ds is not None:
                setattr(dm, name, functools.partial(loader, ds, shuffle))
        return dm


DataModule = LightningDataModule


def _missing(dm, method: str, stage: str) -> MisconfigurationError:
    return MisconfigurationError(f"{type(dm).__name__} has no {method}(); define it to {stage} with this "
                                 "datamodule, or pass the loaders to the Trainer.")


def defines(obj, method: str) -> bool:
    """Whether ``obj`` provides ``method`` itself (not the datamodule base's placeholder)."""
    fn = getattr(obj, method, None)
    if not callable(fn):
        return False
    base = getattr(LightningDataModule, method, None)
    return method in vars(obj) or getattr(type(obj), method, None) is not base


def loaders_for(stage: str, given: Any, datamodule: Any, model: Any, method: str | None = None) -> Any:
    """The loaders ``stage`` uses: those passed, else the datamodule's, else the module's method."""
    if given is not None:
        return given
    method = method or LOADER_METHODS[stage]
    for source in (datamodule, model):
        if source is not None and defines(source, method):
            return getattr(source, method)()
    return None


def split_datamodule(loaders: Any, datamodule: Any) -> tuple[Any, Any]:
    """Lightning accepts a datamodule in place of the loaders: ``trainer.fit(model, dm)``."""
    if isinstance(loaders, LightningDataModule):
        if datamodule is not None:
            raise MisconfigurationError("a datamodule was passed twice (in place of the loaders and as "
                                        "datamodule=); pass it once.")
        return None, loaders
    if datamodule is not None and not isinstance(datamodule, LightningDataModule) and not any(
            callable(getattr(datamodule, m, None)) for m in LOADER_METHODS.values()):
        raise MisconfigurationError(
            f"datamodule must be an ember.LightningDataModule (or an object with *_dataloader() methods); received "
            f"{type(datamodule).__name__}.")
    return loaders, datamodule
