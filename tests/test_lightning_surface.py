"""Lightning's public surface, read from the installed pytorch_lightning at test time, against ember's.

Every public name of Lightning's public modules must import from the same path under ``ember``; every
``Trainer.__init__`` argument must be accepted; every public attribute of ``Trainer``, ``LightningModule`` and
``LightningDataModule`` must exist; every callback's constructor must take Lightning's arguments. Where ember
does not do something, the name must be on the one list in ``ember.not_supported`` and using it must
raise NotSupportedError naming it and what to use instead. A new Lightning name that is neither fails here.

Three lists below are to-do lists that cannot go stale: each test also fails when an entry is no longer needed.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import typing
import warnings

import pytest
import torch

import ember
from ember.trainer import arguments
from ember.errors import MisconfigurationError, NotSupportedError
from ember.not_supported import NOT_YET, REFUSALS, WILL_NOT_DO

pl = pytest.importorskip("pytorch_lightning")

ROOTS = ["", "callbacks", "loggers", "profilers", "tuner", "utilities", "cli", "core", "strategies", "plugins",
         "accelerators", "trainer.states"]

# Names other branches are building (issue 18); the lead empties this after merging them. A name listed here
# that already exists fails the test, so the set cannot outlive the merge.
PENDING_FROM_OTHER_BRANCHES: set[str] = set()

# Lightning module paths whose ember module has not moved to its place yet (issue 20); each must go once the
# Lightning path imports under ember.
MOVED_UNTIL_MERGE: dict[str, str] = {}

# Members ember lacks for a reason, not yet decided or built. Each must still be missing (delete it when added).
KNOWN_GAPS = {
    # ember runs a stage when the module defines its step or loader; the base class leaves them undefined so that
    # presence says it (Lightning defines them and asks is_overridden, which ember.utilities.model_helpers has).
    **{f"LightningModule.{n}": "detected by presence" for n in (
        "validation_step", "test_step", "train_dataloader", "val_dataloader", "test_dataloader",
        "predict_dataloader")},
    "LightningModule.configure_sharded_model": "deprecated in Lightning; ember calls configure_model only",
    "LightningDataModule.on_exception": "ember does not call datamodule hooks on exceptions yet",
    "LightningDataModule.load_from_checkpoint": "ember checkpoints do not hold datamodule hyperparameters yet",
    "ModelCheckpoint(enable_version_counter=)": "issue 18 behaviour list",
    "ModelSummary(summarize_kwargs=)": "RichModelSummary branch",
}

# A value other than Lightning's default for each Trainer argument ember may refuse.
TRAINER_SAMPLES = {"max_time": "00:00:01:00", "overfit_batches": 0.5, "plugins": [object()], "sync_batchnorm": True,
                   "use_distributed_sampler": False, "barebones": True, "model_registry": "name:v1",
                   "enable_autolog_hparams": False}


def _lightning_modules() -> list[str]:
    found = set()
    for root in ROOTS:
        name = "pytorch_lightning" + ("." + root if root else "")
        found.add(name)
        module = importlib.import_module(name)
        if root and hasattr(module, "__path__"):
            for info in pkgutil.walk_packages(module.__path__, name + "."):
                if not any(part.startswith("_") for part in info.name.split(".")):
                    found.add(info.name)
    return sorted(found)


def _public_names(name: str) -> set[str]:
    """``__all__``, plus what the module defines, plus what it re-exports from Fabric's module of the same path."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = importlib.import_module(name)
    except ImportError:  # an optional dependency of Lightning's is missing: not public API here
        return set()
    twin = name.replace("pytorch_lightning", "lightning_fabric", 1)
    out = set(getattr(module, "__all__", ()))
    for attr, value in vars(module).items():
        if attr.startswith("_") or isinstance(value, typing.TypeVar) or inspect.ismodule(value):
            continue
        origin = getattr(value, "__module__", None)
        if origin == name or (origin == twin and getattr(value, "__name__", attr) == attr):
            out.add(attr)
    return {n for n in out if not n.startswith("_")}


def _surface() -> list[str]:
    """``"callbacks.early_stopping.EarlyStopping"``: every public Lightning name, as a path under ember."""
    out = []
    for name in _lightning_modules():
        rest = name[len("pytorch_lightning"):].lstrip(".")
        out += [f"{rest}.{n}" if rest else n for n in sorted(_public_names(name))]
    return out


SURFACE = _surface()


def _ember_module(rest: str):
    for lightning_path, ember_path in MOVED_UNTIL_MERGE.items():
        if rest == lightning_path or rest.startswith(lightning_path + "."):
            rest = ember_path[len("ember."):] + rest[len(lightning_path):]
    return importlib.import_module("ember" + ("." + rest if rest else ""))


def _lookup(path: str):
    """The object at ``ember.<path>``; raises ImportError / AttributeError when it is missing."""
    rest, _, name = path.rpartition(".")
    return getattr(_ember_module(rest), name)


def _exists(path: str) -> bool:
    try:
        _lookup(path)
    except (ImportError, AttributeError):
        return False
    return True


def test_the_walk_finds_lightnings_surface():
    assert len(SURFACE) > 250  # if Lightning's layout changed so that the walk finds little, say so
    assert "utilities.exceptions.MisconfigurationException" in SURFACE
    assert "callbacks.early_stopping.EarlyStopping" in SURFACE


@pytest.mark.parametrize("path", [p for p in SURFACE if p not in PENDING_FROM_OTHER_BRANCHES and p not in REFUSALS])
def test_every_public_lightning_name_exists_at_the_same_path_under_ember(path):
    obj = _lookup(path)  # ImportError / AttributeError name the missing module or name
    assert not hasattr(obj, "__not_supported__"), f"ember.{path} is a refusing stand-in but is not on the list"


@pytest.mark.parametrize("path", sorted(p for p in REFUSALS if not p.startswith(("Trainer(", "LightningModule."))))
def test_every_listed_name_imports_and_raises_naming_itself_and_what_to_use_instead(path):
    assert path in SURFACE, f"{path} is on ember's not-supported list but is not a public Lightning name"
    obj = _lookup(path)
    with pytest.raises(NotSupportedError, match=r"ember does not support Lightning's .*Instead: ") as info:
        obj()
    assert path in str(info.value)


def test_lightning_module_to_tensorrt_raises_naming_itself():
    class Tiny(ember.LightningModule):
        pass

    with pytest.raises(NotSupportedError, match=r"LightningModule.to_tensorrt.*Instead: self.to_onnx"):
        Tiny().to_tensorrt()


@pytest.mark.parametrize("path", sorted(PENDING_FROM_OTHER_BRANCHES))
def test_pending_names_are_still_pending(path):
    if path not in SURFACE:  # some names exist only with an optional package (rich) installed
        pytest.skip(f"{path} is not a public Lightning name in this environment")
    assert not _exists(path), f"ember.{path} exists now: remove it from PENDING_FROM_OTHER_BRANCHES"


@pytest.mark.parametrize("lightning_path", sorted(MOVED_UNTIL_MERGE))
def test_moved_module_aliases_are_still_needed(lightning_path):
    try:
        importlib.import_module("ember." + lightning_path)
    except ImportError:
        return
    pytest.fail(f"ember.{lightning_path} imports now: remove it from MOVED_UNTIL_MERGE")


def test_each_refusal_has_a_reason_and_an_alternative():
    for refusal in WILL_NOT_DO + NOT_YET:
        assert refusal.reason and refusal.instead and refusal.what


@pytest.mark.parametrize("name", [n for n in inspect.signature(pl.Trainer.__init__).parameters if n != "self"])
def test_every_trainer_argument_is_taken_or_refused_by_name(name):
    if name in inspect.signature(ember.Trainer.__init__).parameters:
        return
    assert name in arguments.NOT_IMPLEMENTED, f"Trainer({name}=...) is neither taken nor refused by name"
    listed = [k for k in REFUSALS if k.startswith(f"Trainer({name}=")]
    assert listed, f"Trainer({name}=) is refused but not on ember.not_supported's list"
    with pytest.raises(MisconfigurationError, match=rf"\b{name}\b.*instead: "):
        ember.Trainer(logger=False, **{name: TRAINER_SAMPLES[name]})
    ember.Trainer(logger=False, **{name: arguments.NOT_IMPLEMENTED[name]})  # Lightning's default is accepted


@pytest.mark.parametrize("option", sorted(k for k in REFUSALS if k.startswith("Trainer(") and "=..." not in k
                                          and k.split("=")[0][8:] in ("accelerator", "strategy", "precision")))
def test_refused_trainer_option_values_raise_naming_themselves(option):
    name, _, value = option[len("Trainer("):-1].partition("=")
    with pytest.raises(NotSupportedError, match=r"Instead: "):
        ember.Trainer(logger=False, **{name: value.strip("'")})


def _instances() -> dict[str, object]:
    class Tiny(ember.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(1, 1)

    class Data(ember.LightningDataModule):
        pass

    return {"Trainer": ember.Trainer(logger=False), "LightningModule": Tiny(), "LightningDataModule": Data()}


def _has(obj: object, name: str) -> bool:
    try:
        getattr(obj, name)
    except AttributeError:
        return False
    except Exception:  # noqa: BLE001 - a property that needs a running fit exists
        return True
    return True


MEMBERS = [(cls, n) for cls in ("Trainer", "LightningModule", "LightningDataModule")
           for n in sorted(dir(getattr(pl, cls))) if not n.startswith("_")]


@pytest.fixture(scope="module")
def instances(tmp_path_factory):
    import os

    here = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("surface"))
    try:
        yield _instances()
    finally:
        os.chdir(here)


@pytest.mark.parametrize(("cls", "name"), MEMBERS, ids=[f"{c}.{n}" for c, n in MEMBERS])
def test_every_public_attribute_of_the_core_classes_exists(instances, cls, name):
    key = f"{cls}.{name}"
    present = _has(instances[cls], name)
    if key in KNOWN_GAPS:
        assert not present, f"{key} exists now: remove it from KNOWN_GAPS"
    elif key not in REFUSALS:
        assert present, f"ember's {cls} has no {name!r}"


def _callback_classes() -> list[str]:
    return [n for n in pl.callbacks.__all__ if inspect.isclass(getattr(pl.callbacks, n))
            and f"callbacks.{n}" not in PENDING_FROM_OTHER_BRANCHES and f"callbacks.{n}" not in REFUSALS]


CALLBACK_ARGS = [(c, p) for c in _callback_classes()
                 for p in list(inspect.signature(getattr(pl.callbacks, c).__init__).parameters)[1:]
                 if p not in ("args", "kwargs")]


@pytest.mark.parametrize(("cls", "arg"), CALLBACK_ARGS, ids=[f"{c}({a}=)" for c, a in CALLBACK_ARGS])
def test_every_callback_takes_lightnings_constructor_arguments(cls, arg):
    params = inspect.signature(getattr(ember.callbacks, cls).__init__).parameters
    key = f"{cls}({arg}=)"
    if key in KNOWN_GAPS:
        assert arg not in params, f"{key} is taken now: remove it from KNOWN_GAPS"
    else:
        assert arg in params, f"ember's {cls} does not take {arg}="


@pytest.mark.parametrize("key", sorted(KNOWN_GAPS))
def test_known_gaps_name_real_lightning_members(key):
    if "(" in key:
        cls, arg = key[:-2].split("(")
        assert (cls, arg) in CALLBACK_ARGS
    else:
        assert tuple(key.split(".")) in MEMBERS


TRAINER_DEFAULTS = [(n, p.default) for n, p in inspect.signature(pl.Trainer.__init__).parameters.items()
                    if n != "self" and p.default is not inspect.Parameter.empty]


@pytest.mark.parametrize(("name", "default"), TRAINER_DEFAULTS, ids=[n for n, _ in TRAINER_DEFAULTS])
def test_every_trainer_argument_accepts_lightnings_default_value(tmp_path, name, default):
    # a config printed by Lightning (--print_config) holds these values, None for most
    ember.Trainer(**{"logger": False, "default_root_dir": tmp_path, name: default})


@pytest.mark.parametrize("name", ["enable_checkpointing", "enable_progress_bar", "enable_model_summary"])
def test_enable_flags_set_to_none_mean_on_as_in_lightning(tmp_path, name):
    from ember.trainer.arguments import on_unless_false

    assert on_unless_false(None, False, 1) == (True, False, True)
    trainer = ember.Trainer(logger=False, default_root_dir=tmp_path, **{name: None})
    on = {"enable_checkpointing": trainer.checkpoint_callback is not None,
          "enable_progress_bar": trainer.progress_bar_callback is not None,
          "enable_model_summary": trainer.enable_model_summary}
    assert on[name]


def test_settings_given_none_take_embers_defaults(tmp_path):
    trainer = ember.Trainer(logger=False, default_root_dir=tmp_path, limit_val_batches=None, precision=None,
                            num_sanity_val_steps=None, log_every_n_steps=None, val_check_interval=None)
    s = trainer.settings
    assert (s.limit_val_batches, s.precision, s.num_sanity_val_steps, s.log_every_n_steps, s.val_check_interval) == (
        1.0, "32", 2, 50, 1.0)


@pytest.mark.parametrize(("cls", "arg"), [(c, a) for c, a in CALLBACK_ARGS if f"{c}({a}=)" not in KNOWN_GAPS],
                         ids=[f"{c}({a}=)" for c, a in CALLBACK_ARGS if f"{c}({a}=)" not in KNOWN_GAPS])
def test_every_callback_argument_defaults_to_lightnings_value(cls, arg):
    theirs = inspect.signature(getattr(pl.callbacks, cls).__init__).parameters[arg].default
    ours = inspect.signature(getattr(ember.callbacks, cls).__init__).parameters[arg].default
    assert _same_default(ours, theirs), f"{cls}({arg}=) defaults to {ours!r}; Lightning's to {theirs!r}"


def _same_default(ours, theirs) -> bool:
    """Equal values; for a default that is an instance of a dataclass (a theme) or a function (a schedule),
    the same fields, or the same name and results, since ember's class or function is its own."""
    import dataclasses

    if dataclasses.is_dataclass(ours) and dataclasses.is_dataclass(theirs):
        return dataclasses.asdict(ours) == dataclasses.asdict(theirs)
    if inspect.isfunction(ours) and inspect.isfunction(theirs):
        return ours.__name__ == theirs.__name__ and all(ours(e) == theirs(e) for e in range(5))
    return ours == theirs
