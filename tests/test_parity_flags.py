"""Trainer flags and behaviours, each run under real Lightning and ember through the parity harness
(``tests/parity.py``): the same program, compared hook by hook, metric by metric, step by step."""

from __future__ import annotations


from parity import assert_same_run, classifier, loader, run_both


def test_a_plain_fit_agrees_in_hooks_metrics_logged_steps_and_weights(tmp_path):
    assert_same_run(*run_both(classifier, tmp_path))


def test_log_every_n_steps_logs_at_the_same_steps(tmp_path):
    lightning, ours = run_both(classifier, tmp_path, log_every_n_steps=2, max_epochs=3)
    assert [s for s, _ in ours.logged] == [s for s, _ in lightning.logged]
    assert_same_run(lightning, ours)


def test_sanity_values_are_in_callback_metrics_until_training_starts(tmp_path):
    lightning, ours = run_both(classifier, tmp_path, num_sanity_val_steps=1)
    sanity_end = [h for h in lightning.hooks if h[0] == "on_validation_end" and h[1]]
    assert sanity_end and sanity_end[0][2] == ["val_loss"]  # what Lightning does, pinned
    assert ours.hooks == lightning.hooks


def test_max_steps_mid_epoch_leaves_the_same_current_epoch(tmp_path):
    lightning, ours = run_both(classifier, tmp_path, max_steps=2)
    assert lightning.current_epoch == 1
    assert_same_run(lightning, ours)


def test_overfit_batches_trains_on_the_same_first_batches(tmp_path):
    shuffled = {"train_dataloaders": loader(shuffle=True)}
    lightning, ours = run_both(classifier, tmp_path, overfit_batches=2, fit_kw=shuffled)
    assert lightning.global_step == 4
    assert_same_run(lightning, ours)


def test_max_time_stops_training_like_lightning(tmp_path):
    def slow(lib):
        model = classifier(lib)
        step = model.training_step

        def training_step(batch, batch_idx):
            if model.global_step >= 3:
                import time
                time.sleep(1.1)  # the budget is spent here
            return step(batch, batch_idx)

        model.training_step = training_step
        return model

    lightning, ours = run_both(slow, tmp_path, max_time={"seconds": 1}, max_epochs=50)
    assert lightning.global_step == 4
    assert_same_run(lightning, ours)


def with_datamodule(lib):
    """A datamodule whose loaders are rebuilt every epoch (their count is compared)."""

    class Data(lib.LightningDataModule):
        def __init__(self):
            super().__init__()
            self.built = []

        def train_dataloader(self):
            self.built.append("train")
            return loader()

        def val_dataloader(self):
            self.built.append("val")
            return loader(16)

    data = Data()
    model = classifier(lib)
    model.data = data
    return model, {"datamodule": data, "train_dataloaders": None, "val_dataloaders": None}


def test_reload_dataloaders_every_n_epochs_with_a_datamodule(tmp_path):
    lightning, ours = run_both(with_datamodule, tmp_path, reload_dataloaders_every_n_epochs=1, max_epochs=3)
    assert ours.model.data.built.count("train") == lightning.model.data.built.count("train") == 3
    assert_same_run(lightning, ours)


def test_validation_step_set_to_none_skips_validation(tmp_path):
    def no_validation(lib):
        model = classifier(lib)
        model.validation_step = None
        return model

    lightning, ours = run_both(no_validation, tmp_path, reload_dataloaders_every_n_epochs=1)
    assert not any(h[0] == "on_validation_start" for h in lightning.hooks)
    assert_same_run(lightning, ours)
