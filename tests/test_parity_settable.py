"""The Trainer attributes Lightning lets programs and callbacks set (``limit_*_batches``, ``val_check_interval``,
``check_val_every_n_epoch``, ``val_check_batch``), set before fit and during it, under real Lightning and ember
(``tests/parity.py``): every training and validation batch is recorded and compared.

The harness trains 3 batches per epoch for 3 epochs and validates on 2 batches, without a sanity check."""

from __future__ import annotations

import functools

import pytest

import ember
from parity import assert_same_run, classifier, loader, pl, run, run_both


def recording(lib, when: str | None = None, epoch: int = 0, reload: bool = False, **values):
    """The harness's classifier, noting ``("train", epoch, batch_idx)`` and ``("val", epoch, global_step,
    batch_idx)`` in ``model.events``; it sets ``values`` on its Trainer in ``when`` (``"on_train_start"`` or
    ``"on_train_epoch_start"`` of ``epoch``). ``reload``: its own loaders, which fit reloads (with
    ``reload_dataloaders_every_n_epochs``)."""

    class Recording(type(classifier(lib))):
        def __init__(self):
            super().__init__()
            self.events = []

        def training_step(self, batch, batch_idx):
            self.events.append(("train", self.current_epoch, batch_idx))
            return super().training_step(batch, batch_idx)

        def validation_step(self, batch, batch_idx):
            self.events.append(("val", self.current_epoch, self.global_step, batch_idx))
            return super().validation_step(batch, batch_idx)

        def _set(self, hook):
            if hook == when and (hook == "on_train_start" or self.current_epoch == epoch):
                for name, value in values.items():
                    setattr(self.trainer, name, value)

        def on_train_start(self):
            self._set("on_train_start")

        def on_train_epoch_start(self):
            self._set("on_train_epoch_start")

    model = Recording()
    if not reload:
        return model
    model.train_dataloader, model.val_dataloader = loader, lambda: loader(16)
    return model, {"train_dataloaders": None, "val_dataloaders": None}


def same_batches(program, tmp_path, **kw) -> list:
    """Both libraries' batches (asserted equal, with the rest of the run), Lightning's returned."""
    lightning, ours = run_both(program, tmp_path, max_epochs=3, num_sanity_val_steps=0, **kw)
    assert ours.model.events == lightning.model.events
    assert_same_run(lightning, ours)
    return lightning.model.events


def validated(events: list) -> list:
    """(epoch, global_step, batches) of each validation."""
    out: dict = {}
    for e in events:
        if e[0] == "val":
            out[e[1:3]] = out.get(e[1:3], 0) + 1
    return [(*k, n) for k, n in out.items()]


def trained(events: list) -> list:
    """Training batches per epoch."""
    return [sum(1 for e in events if e[:2] == ("train", ep)) for ep in range(3)]


def test_settable_attributes_set_before_fit_act_as_trainer_arguments(tmp_path):
    def setting_first(lib):
        model = recording(lib)
        model.setup = lambda stage: (setattr(model.trainer, "limit_train_batches", 2),
                                     setattr(model.trainer, "limit_val_batches", 1),
                                     setattr(model.trainer, "check_val_every_n_epoch", 2),
                                     setattr(model.trainer, "val_check_interval", 1))
        return model

    events = same_batches(setting_first, tmp_path)
    assert trained(events) == [2, 2, 2] and validated(events) == [(1, 3, 1), (1, 4, 1)]


def test_settable_attributes_read_back_what_was_set(tmp_path):
    for lib in (pl, ember):
        trainer = lib.Trainer(logger=False, default_root_dir=str(tmp_path))
        trainer.limit_train_batches, trainer.limit_val_batches = 4, 0.5
        trainer.limit_test_batches, trainer.limit_predict_batches = 2, 0.25
        trainer.check_val_every_n_epoch, trainer.val_check_interval, trainer.val_check_batch = 3, 0.5, 7
        assert (trainer.limit_train_batches, trainer.limit_val_batches, trainer.limit_test_batches,
                trainer.limit_predict_batches, trainer.check_val_every_n_epoch, trainer.val_check_interval,
                trainer.val_check_batch) == (4, 0.5, 2, 0.25, 3, 0.5, 7)


@pytest.mark.parametrize(("start", "value", "expected"), [
    (1.0, 0, [(0, 3, 2)]),                 # turned off from epoch 1
    (0, 1.0, [(1, 6, 2), (2, 9, 2)]),      # turned on from epoch 1
    (1.0, 1, [(0, 3, 2), (1, 6, 2), (2, 9, 2)]),  # Lightning keeps the first validation's count
], ids=["off", "on", "count-kept"])
def test_limit_val_batches_set_mid_fit(tmp_path, start, value, expected):
    program = functools.partial(recording, when="on_train_epoch_start", epoch=1, limit_val_batches=value)
    assert validated(same_batches(program, tmp_path, limit_val_batches=start)) == expected


def test_limit_val_batches_set_mid_fit_counts_again_after_a_reload(tmp_path):
    program = functools.partial(recording, when="on_train_epoch_start", epoch=1, reload=True, limit_val_batches=1)
    events = same_batches(program, tmp_path, reload_dataloaders_every_n_epochs=1)
    assert validated(events) == [(0, 3, 2), (1, 6, 1), (2, 9, 1)]


@pytest.mark.parametrize(("when", "expected"), [("on_train_start", [(1, 6, 2)]),
                                                ("on_train_epoch_start", [(0, 3, 2), (1, 6, 2)])])
def test_check_val_every_n_epoch_set_mid_fit_applies_from_that_epoch(tmp_path, when, expected):
    program = functools.partial(recording, when=when, epoch=1, check_val_every_n_epoch=2)
    assert validated(same_batches(program, tmp_path)) == expected


@pytest.mark.parametrize(("when", "value", "steps"), [("on_train_start", 1, [1, 2, 3, 4, 5, 6, 7, 8, 9]),
                                                      ("on_train_epoch_start", 2, [3, 5, 8])])
def test_val_check_batch_set_mid_fit_applies_at_once(tmp_path, when, value, steps):
    program = functools.partial(recording, when=when, epoch=1, val_check_batch=value)
    assert [step for _, step, _ in validated(same_batches(program, tmp_path))] == steps


@pytest.mark.parametrize("values", [dict(limit_train_batches=1), dict(val_check_interval=1)], ids=str)
def test_limit_train_batches_and_val_check_interval_set_mid_fit_wait_for_a_reload(tmp_path, values):
    program = functools.partial(recording, when="on_train_epoch_start", epoch=1, **values)
    assert same_batches(program, tmp_path) == same_batches(recording, tmp_path / "plain")  # no effect
    reloading = functools.partial(program, reload=True)
    events = same_batches(reloading, tmp_path / "reload", reload_dataloaders_every_n_epochs=1)
    assert events != same_batches(functools.partial(recording, reload=True), tmp_path / "plain-reload",
                                  reload_dataloaders_every_n_epochs=1)  # the reload at epoch 2 applies it


def test_limit_test_and_predict_batches_set_between_calls(tmp_path):
    seen = []
    for lib in (pl, ember):
        trainer = lib.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                              default_root_dir=str(tmp_path))
        model, tested = classifier(lib), []
        model.test_step = lambda batch, batch_idx: tested.append(batch_idx)
        model.predict_step = lambda batch, batch_idx: batch_idx
        trainer.limit_test_batches = 1
        trainer.test(model, loader(16), verbose=False)
        trainer.limit_predict_batches = 2
        seen.append((tested, trainer.predict(model, loader(24))))
    assert seen[0] == ([0], [0, 1])
    assert seen[1] == seen[0]


def test_a_bad_value_set_is_refused_as_at_trainer_construction(tmp_path):
    trainer = ember.Trainer(logger=False, default_root_dir=str(tmp_path))
    with pytest.raises(ember.MisconfigurationError, match="limit_val_batches must be"):
        trainer.limit_val_batches = -1
    with pytest.raises(ember.MisconfigurationError, match="check_val_every_n_epoch must be"):
        trainer.check_val_every_n_epoch = 0
    assert (trainer.limit_val_batches, trainer.check_val_every_n_epoch) == (1.0, 1)


def test_a_learning_rate_search_leaves_validations_count_to_the_fit(tmp_path):
    """The search validates with its own limit; the fit's validations then count as limit_val_batches says."""
    def with_lr(lib):
        model = recording(lib)
        model.lr = 0.1
        return model

    counts = []
    for lib in (pl, ember):
        finder = lib.callbacks.LearningRateFinder(num_training_steps=4)
        model = run(lib, with_lr, tmp_path, max_epochs=2, num_sanity_val_steps=0, limit_val_batches=1,
                    callbacks_extra=[finder]).model
        counts.append([(e[2], e[3]) for e in model.events if e[0] == "val"])  # (global_step, batch_idx)
    assert counts[0] == [(3, 0), (3, 1), (3, 0), (6, 0)]  # the search's validation (2 batches), then the fit's
    assert counts[1] == counts[0]


@pytest.mark.parametrize("kw", [dict(limit_val_batches=1, num_sanity_val_steps=2),
                                dict(limit_val_batches=0.5, num_sanity_val_steps=-1), dict(num_sanity_val_steps=-1)],
                         ids=["count", "fraction-all", "all"])
def test_sanity_check_runs_no_more_batches_than_limit_val_batches(tmp_path, kw):
    def noting_sanity(lib):
        model = classifier(lib)
        model.sanity, step = [], model.validation_step

        def validation_step(batch, batch_idx):
            if model.trainer.sanity_checking:
                model.sanity.append((batch_idx, list(model.trainer.num_sanity_val_batches)))
            return step(batch, batch_idx)

        model.validation_step = validation_step
        return model

    lightning, ours = run_both(noting_sanity, tmp_path, max_epochs=1, **kw)
    assert len(lightning.model.sanity) == (2 if kw == dict(num_sanity_val_steps=-1) else 1)
    assert ours.model.sanity == lightning.model.sanity
