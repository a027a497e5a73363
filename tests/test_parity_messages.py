"""Lightning's info messages (``rank_zero_info``) that ember repeats on its ``ember`` logger, compared under both
libraries through ``caplog`` with no ``set_level``: Lightning's logger is at INFO, so its tests read them so."""

from __future__ import annotations

import logging

import pytest

import ember
from parity import pl

NOTES = ("was configured so", "`fast_dev_run` mode", "`Trainer.fit` stopped")


@pytest.fixture
def lightning_propagates():
    """As Lightning's own test suite does: its logger propagates to caplog's root handler (it does not when
    pytorch_lightning was imported before any root handler existed)."""
    logger = logging.getLogger("pytorch_lightning")
    before, logger.propagate = logger.propagate, True
    yield
    logger.propagate = before


def notes(lib, caplog, tmp_path, **kw) -> list[tuple[int, str]]:
    """(level, text) of the notes ``lib.Trainer(**kw)`` logged."""
    caplog.clear()
    lib.Trainer(logger=False, enable_progress_bar=False, default_root_dir=str(tmp_path), **kw)
    return [(r.levelno, r.getMessage()) for r in caplog.records if any(n in r.getMessage() for n in NOTES)]


@pytest.mark.parametrize("kw", [
    dict(limit_train_batches=1, limit_val_batches=1.0, limit_test_batches=1, limit_predict_batches=1.0),
    dict(limit_train_batches=1.0, limit_val_batches=1, limit_test_batches=1.0, limit_predict_batches=1),
    dict(val_check_interval=1), dict(val_check_interval=1.0), dict(val_check_interval="00:00:00:01"),
    dict(overfit_batches=1, limit_train_batches=1, limit_test_batches=1.0), dict(overfit_batches=1.0),
    dict(fast_dev_run=True, limit_train_batches=1), dict(fast_dev_run=3, overfit_batches=1),
    dict(), dict(limit_train_batches=2, limit_val_batches=0.5, val_check_interval=0.5),
], ids=str)
def test_limit_notes_match_lightnings_texts(tmp_path, caplog, lightning_propagates, kw):
    lightning, ours = (notes(lib, caplog, tmp_path / lib.__name__, **kw) for lib in (pl, ember))
    assert ours == lightning


def test_limit_train_batches_1_note_reaches_caplog_without_set_level(tmp_path, caplog, lightning_propagates):
    assert notes(ember, caplog, tmp_path, limit_train_batches=1) == [
        (logging.INFO, "`Trainer(limit_train_batches=1)` was configured so 1 batch per epoch will be used.")]
