"""Fit with no training batch (``limit_train_batches=0``, an empty loader, a fraction that leaves none), under real
Lightning and ember (``tests/parity.py``): Lightning skips training altogether (the sanity check and the fit hooks
still run; no on_train_start, no epoch, no on_train_end), warns of an empty loader, and refuses a fraction."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

import ember
import ember.utilities.exceptions  # noqa: F401 - lib.utilities.exceptions below
from parity import assert_same_run, classifier, loader, pl, run_both


def empty_loader() -> DataLoader:
    return DataLoader(TensorDataset(torch.zeros(0, 4), torch.zeros(0).long()), batch_size=8)


class Stream(IterableDataset):
    def __iter__(self):
        return iter(loader().dataset)


@pytest.mark.parametrize("kw", [dict(limit_train_batches=0), dict(limit_train_batches=0.0),
                                dict(limit_train_batches=0, limit_val_batches=0),
                                dict(fit_kw={"train_dataloaders": empty_loader()})],
                         ids=["limit-0", "limit-0.0", "limit-0-no-val", "empty-loader"])
def test_no_training_batch_skips_the_training_loop_and_its_hooks(tmp_path, kw):
    lightning, ours = run_both(classifier, tmp_path, **kw)
    assert not any(h[0].startswith("on_train") for h in lightning.hooks)
    assert (lightning.current_epoch, lightning.global_step) == (0, 0)
    assert_same_run(lightning, ours)


def fit_noting(lib, tmp_path, caplog, train, **kw) -> tuple[list[str], list[str]]:
    """(warnings about an empty loader, the ``Trainer.fit stopped`` notes) of one fit."""
    caplog.clear()
    trainer = lib.Trainer(max_epochs=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                          enable_checkpointing=False, default_root_dir=str(tmp_path / lib.__name__), **kw)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(classifier(lib), train, loader(16))
    return ([str(w.message) for w in caught if "is zero" in str(w.message)],
            [r.getMessage() for r in caplog.records if "`Trainer.fit` stopped" in r.getMessage()])


@pytest.mark.parametrize("kw", [{}, dict(limit_train_batches=0)], ids=["empty-loader", "limit-0"])
def test_empty_train_loader_warns_and_notes_as_lightning(tmp_path, caplog, kw):
    logger = logging.getLogger("pytorch_lightning")
    propagate, logger.propagate = logger.propagate, True  # as Lightning's own tests have it
    try:
        (l_warned, l_noted), (e_warned, e_noted) = (fit_noting(lib, tmp_path, caplog, empty_loader(), **kw)
                                                    for lib in (pl, ember))
    finally:
        logger.propagate = propagate
    assert e_noted == l_noted == ([] if kw else ["`Trainer.fit` stopped: No training batches."])
    # Lightning warns for the DataLoader and again for the CombinedLoader it wraps it in (ember has no such wrapper)
    assert e_warned == [w for w in l_warned if "`DataLoader`" in w]
    assert e_warned == ([] if kw else ["Total length of `DataLoader` across ranks is zero. Please make sure this was "
                                       "your intention."])


@pytest.mark.parametrize(("limit", "train"), [(0.1, loader), (0.5, lambda: DataLoader(Stream(), batch_size=8))],
                         ids=["too-small", "no-length"])
def test_limit_train_batches_fraction_leaving_no_batch_is_refused_as_lightning(tmp_path, limit, train):
    messages = []
    for lib in (pl, ember):
        trainer = lib.Trainer(max_epochs=1, limit_train_batches=limit, logger=False, enable_progress_bar=False,
                              enable_checkpointing=False, default_root_dir=str(tmp_path))
        with pytest.raises(lib.utilities.exceptions.MisconfigurationException) as info:
            trainer.fit(classifier(lib), train(), loader(16))
        messages.append(str(info.value))
    assert messages[1] == messages[0]
