"""The checkpoint manager as users meet it: bookkeeping that changes only on commit, retention that
survives resume, monitors that appear late, stable callback keys and consistent background saves."""

from __future__ import annotations

import time
import warnings

import pytest
import torch

import ember
from ember.callbacks import Callback, ModelCheckpoint
from ember.checkpoint.format import container
from ember.checkpoint import writer
from tiny import TinyModel, make_loader, trainer_kwargs


class Scripted(TinyModel):
    """Logs a scripted 'score' at each validation: scores[current_epoch]."""

    def __init__(self, scores=(5.0, 3.0, 4.0, 1.0, 2.0, 0.5, 6.0), **kw):
        super().__init__(**kw)
        self.scores = list(scores)

    def validation_step(self, batch, batch_idx):
        self.log("score", self.scores[self.current_epoch])


def fit(root, epochs, callbacks=(), ckpt_path=None, model=None, **kw):
    trainer = ember.Trainer(max_epochs=epochs, callbacks=list(callbacks), **trainer_kwargs(root, **kw))
    trainer.fit(model or Scripted(), make_loader(), make_loader(n=8, shuffle=False), ckpt_path=ckpt_path)
    return trainer


def names(folder):
    return sorted(p.name for p in folder.glob("*.ckpt"))


# ----------------------------------------------------------------------------- retention across resume


def test_a_top_2_run_resumed_twice_holds_two_files_plus_last(tmp_path):
    def top2():
        return ModelCheckpoint(dirpath=tmp_path / "c", filename="{epoch}", monitor="score", save_top_k=2,
                               save_last=True)

    fit(tmp_path, 2, [top2()])                    # scores 5, 3
    fit(tmp_path, 4, [top2()], ckpt_path="last")  # 4, 1
    fit(tmp_path, 6, [top2()], ckpt_path="last")  # 2, 0.5
    assert names(tmp_path / "c") == ["epoch=3.ckpt", "epoch=5.ckpt", "last.ckpt"]


def test_latest_only_retention_survives_resumes(tmp_path):
    for epochs in (1, 2, 3):
        fit(tmp_path, epochs, [ModelCheckpoint(dirpath=tmp_path / "c")], ckpt_path="last")
    assert names(tmp_path / "c") == ["epoch=2-step=12.ckpt"]


def test_a_resumed_run_never_deletes_a_file_it_did_not_write(tmp_path):
    folder = tmp_path / "c"
    fit(tmp_path, 1, [ModelCheckpoint(dirpath=folder)])
    (folder / "someone-else.ckpt").write_bytes((folder / "epoch=0-step=4.ckpt").read_bytes())
    fit(tmp_path, 3, [ModelCheckpoint(dirpath=folder)], ckpt_path=str(folder / "epoch=0-step=4.ckpt"))
    assert names(folder) == ["epoch=2-step=12.ckpt", "someone-else.ckpt"]


def test_milestones_are_kept_for_good_beside_the_best(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "c", filename="{step}", monitor="score", save_top_k=1,
                         keep_every_n_train_steps=8)
    fit(tmp_path, 4, [cb])  # scores 5, 3, 4, 1 at steps 4, 8, 12, 16
    assert names(tmp_path / "c") == ["step=16.ckpt", "step=8.ckpt"]


# ----------------------------------------------------------------------------- bookkeeping only on commit


def test_a_failed_background_save_leaves_best_and_last_naming_committed_files(tmp_path, monkeypatch):
    real = writer.write_file

    def fail_epoch_1(target, tree, tensors, **kw):
        if "epoch=1" in target[1]:
            raise ember.CheckpointError("could not save: disk full")
        return real(target, tree, tensors, **kw)

    monkeypatch.setattr(writer, "write_file", fail_epoch_1)
    cb = ModelCheckpoint(dirpath=tmp_path / "c", filename="{epoch}", monitor="score", save_last=True)
    with pytest.raises(ember.CheckpointError, match="disk full"):
        fit(tmp_path, 2, [cb])
    assert cb.best_model_path.endswith("epoch=0.ckpt") and cb.best_model_score == 5.0
    assert cb.last_model_path.endswith("last.ckpt")
    for path in (cb.best_model_path, cb.last_model_path):
        container.verify_file(path)
        assert ember.load_checkpoint(path)["epoch"] == 0


def test_best_model_path_is_set_only_once_the_file_is_committed(tmp_path, monkeypatch):
    seen = []
    real = container.write

    def slow(f, tree, tensors, **kw):
        time.sleep(0.2)
        real(f, tree, tensors, **kw)

    monkeypatch.setattr(container, "write", slow)

    class Probe(Callback):
        def on_train_epoch_end(self, trainer, module):
            path = trainer.checkpoint_callback.best_model_path
            seen.append(path == "" or (tmp_path / "c" / path.rsplit("/", 1)[-1]).exists())

    fit(tmp_path, 3, [ModelCheckpoint(dirpath=tmp_path / "c"), Probe()])
    assert seen == [True, True, True]


# ----------------------------------------------------------------------------- a monitor that appears late


def test_step_saves_before_the_first_validation_warn_once_and_start_when_the_metric_exists(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "c", filename="{step}", monitor="score", every_n_train_steps=2,
                         save_top_k=-1)
    with pytest.warns(UserWarning, match="'score' has not been logged yet") as record:
        fit(tmp_path, 2, [cb])
    assert len([w for w in record if "has not been logged yet" in str(w.message)]) == 1
    assert names(tmp_path / "c") == ["step=6.ckpt", "step=8.ckpt"]  # after epoch 0's validation


def test_validation_every_second_epoch_saves_after_each_validation(tmp_path):
    """Lightning's rule (tests/test_parity_checkpoints.py runs it against Lightning): with
    check_val_every_n_epoch > 1 the saves follow the validations, where the monitored value is new."""
    cb = ModelCheckpoint(dirpath=tmp_path / "c", filename="{epoch}", monitor="score", save_top_k=-1)
    fit(tmp_path, 4, [cb], check_val_every_n_epoch=2)
    assert names(tmp_path / "c") == ["epoch=1.ckpt", "epoch=3.ckpt"]


# ----------------------------------------------------------------------------- file names stay in dirpath


def test_a_metric_named_with_a_slash_stays_in_dirpath_and_last_finds_it(tmp_path):
    class Slashed(TinyModel):
        def validation_step(self, batch, batch_idx):
            self.log("val/loss", 0.25)

    cb = ModelCheckpoint(dirpath=tmp_path / "c", filename="{epoch}-{val/loss:.2f}", monitor="val/loss")
    fit(tmp_path, 1, [cb], model=Slashed())
    assert names(tmp_path / "c") == ["epoch=0-val_loss=0.25.ckpt"]
    assert [p for p in (tmp_path / "c").iterdir() if p.is_dir()] == []
    trainer = fit(tmp_path, 2, [ModelCheckpoint(dirpath=tmp_path / "c", filename="{epoch}-{val/loss:.2f}",
                                                monitor="val/loss")], model=Slashed(), ckpt_path="last")
    assert trainer.ckpt_path.endswith("epoch=0-val_loss=0.25.ckpt")


@pytest.mark.parametrize("template", ["/abs/{epoch}", "sub/{epoch}", "../{epoch}"])
def test_a_template_that_leaves_dirpath_is_refused(template):
    with pytest.raises(ember.MisconfigurationError, match="must name a file inside dirpath"):
        ModelCheckpoint(filename=template)


# ----------------------------------------------------------------------------- callback state keys


def test_model_checkpoint_state_key_is_short_and_stable():
    assert ModelCheckpoint().state_key == "ModelCheckpoint"
    assert ModelCheckpoint(monitor="val_loss", mode="max").state_key == "ModelCheckpoint[val_loss:max]"
    assert ModelCheckpoint(monitor="val_loss", state_key="best").state_key == "best"


def test_two_callbacks_with_one_state_key_are_refused():
    with pytest.raises(ember.MisconfigurationError, match="state key 'ModelCheckpoint'.*state_key="):
        ember.Trainer(callbacks=[ModelCheckpoint(dirpath="a"), ModelCheckpoint(dirpath="b")])


def test_state_no_callback_claims_is_reported_not_dropped_silently(tmp_path):
    class Counter(Callback):
        def state_dict(self):
            return {"n": 1}

    fit(tmp_path, 1, [Counter()])
    with pytest.warns(UserWarning, match=r"state for callbacks \[.*Counter'\] that no callback of this Trainer claims"):
        fit(tmp_path, 2, ckpt_path="last")


def test_callback_state_saved_by_ember_0_1_under_a_repr_key_still_loads(tmp_path):
    cb = ModelCheckpoint(dirpath=tmp_path / "c", filename="{epoch}", monitor="score", save_top_k=2)
    fit(tmp_path, 2, [cb])
    ckpt = ember.load_checkpoint(tmp_path / "c" / "epoch=1.ckpt")
    state = ckpt["callbacks"].pop(cb.state_key)
    old = {"monitor": "score", "mode": "min", "dirpath": str(tmp_path / "c"), "best_model_score": 3.0,
           "best_model_path": state["best_model_path"], "best_k_models": state["best_k_models"],
           "kth_best_model_path": state["kth_best_model_path"], "kth_value": 5.0, "last_model_path": ""}
    ckpt["callbacks"]["ModelCheckpoint{'monitor': 'score', 'mode': 'min', 'every': ['EveryNEpochs(n=1)'], " \
                      "'weights_only': False}"] = old
    ckpt["loops"]["fit"].update(epoch=ckpt["epoch"], global_step=ckpt["global_step"])  # 0.1 stored them twice
    ember.save_checkpoint(ckpt, tmp_path / "old.ckpt")
    again = ModelCheckpoint(dirpath=tmp_path / "c", filename="{epoch}", monitor="score", save_top_k=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", "Checkpoint directory .* exists and is not empty")  # Lightning's too
        fit(tmp_path, 2, [again], ckpt_path=str(tmp_path / "old.ckpt"))
    assert again.best_model_score == 3.0
    assert sorted(again.best_k_models.values()) == [3.0, 5.0]


# ----------------------------------------------------------------------------- one moment's state


class EditsWeightsInPlace(TinyModel):
    """Edits weights in place in training_step, through .data (the WGAN weight-clipping idiom) or under
    no_grad, and records, in on_save_checkpoint, the weights at the moment each checkpoint is taken."""

    def __init__(self, how="data", **kw):
        super().__init__(**kw)
        self.how, self.at_save = how, {}

    def training_step(self, batch, batch_idx):
        for p in self.parameters():
            if self.how == "data":
                p.data.mul_(0.5)  # .data has its own version counter: invisible to a version check
            else:
                with torch.no_grad():
                    p.add_(1.0)
        return super().training_step(batch, batch_idx)

    def on_save_checkpoint(self, checkpoint):
        self.at_save[checkpoint["global_step"]] = {k: v.clone() for k, v in self.state_dict().items()}


@pytest.mark.parametrize("how", ["data", "no_grad"])
def test_background_saves_hold_one_moment_when_user_code_edits_weights_in_place(tmp_path, monkeypatch, how):
    real = writer._Snapshot.copy

    def slow_copy(self, names, tensors, out, sync=True):
        time.sleep(0.02)  # widen the window in which the next step's edits could reach the copy
        real(self, names, tensors, out, sync)

    monkeypatch.setattr(writer._Snapshot, "copy", slow_copy)
    model = EditsWeightsInPlace(how)
    fit(tmp_path, 2, [ModelCheckpoint(dirpath=tmp_path / "c", filename="{step}", every_n_train_steps=1,
                                      save_top_k=-1)], model=model)
    assert len(model.at_save) == 8
    for step, expected in model.at_save.items():
        saved = ember.load_checkpoint(tmp_path / "c" / f"step={step}.ckpt")["state_dict"]
        for k, v in expected.items():
            assert torch.equal(saved[k], v), (step, k)


# ----------------------------------------------------------------------------- clear errors


def test_resuming_from_a_folder_says_it_is_a_folder(tmp_path):
    (tmp_path / "dir").mkdir()
    with pytest.raises(ember.CheckpointError, match="it is a folder"):
        fit(tmp_path, 1, ckpt_path=str(tmp_path / "dir"))


def test_resuming_an_adam_checkpoint_with_sgd_names_both(tmp_path):
    fit(tmp_path, 1)

    class WithSGD(Scripted):
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

    with pytest.raises(ember.CheckpointMismatchError, match=r"saved by torch\.optim\.Adam.*returns SGD"):
        fit(tmp_path, 2, ckpt_path="last", model=WithSGD())


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(state_dict=None), "state_dict must be a dict"),
    (lambda c: c.update(loops={}), r"no loop position"),
    (lambda c: c.update(global_step=None), "global_step must be an int"),
])
def test_a_malformed_checkpoint_is_refused_with_a_checkpoint_error_naming_it(tmp_path, edit, message):
    fit(tmp_path, 1)
    ckpt = ember.load_checkpoint(tmp_path / "checkpoints" / "epoch=0-step=4.ckpt")
    edit(ckpt)
    ember.save_checkpoint(ckpt, tmp_path / "bad.ckpt")
    with pytest.raises(ember.CheckpointMismatchError, match=f"bad.ckpt.*{message}"):
        fit(tmp_path, 2, ckpt_path=str(tmp_path / "bad.ckpt"))


@pytest.mark.parametrize("step", [None, torch.tensor(99), "7"])
def test_last_skips_a_stray_checkpoint_whose_global_step_is_not_an_int(tmp_path, step):
    fit(tmp_path, 1)
    good = tmp_path / "checkpoints" / "epoch=0-step=4.ckpt"
    ckpt = ember.load_checkpoint(good)
    ckpt["global_step"] = step
    ember.save_checkpoint(ckpt, tmp_path / "checkpoints" / "stray.ckpt")
    with pytest.warns(UserWarning, match="skipping .*stray.ckpt: its global_step"):
        trainer = fit(tmp_path, 2, ckpt_path="last")
    assert trainer.ckpt_path.endswith("epoch=0-step=4.ckpt")


def test_a_second_interrupt_while_waiting_for_a_save_names_itself(tmp_path, capsys, monkeypatch):
    class Interrupt(Callback):
        def on_train_epoch_end(self, trainer, module):
            raise KeyboardInterrupt

    trainer = ember.Trainer(max_epochs=1, callbacks=[Interrupt()], **trainer_kwargs(tmp_path))

    def interrupted_wait():
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer.checkpoint_writer, "wait", interrupted_wait)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(TinyModel(), make_loader())
    assert "a background checkpoint save also failed: KeyboardInterrupt()" in capsys.readouterr().err


def test_only_the_global_zero_process_writes(tmp_path, monkeypatch):
    """(A real 2-rank job: tests/distributed/test_trainer_ddp.py.)"""
    monkeypatch.setattr(ember.distributed.env, "global_rank", lambda: 1)  # as on rank 1 of a job
    trainer = fit(tmp_path, 1)
    trainer.save_checkpoint(tmp_path / "manual.ckpt")
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "manual.ckpt").exists()


def test_checkpoint_names_in_a_resumed_state_that_are_not_plain_files_are_never_deleted(tmp_path):
    folder = tmp_path / "c"
    fit(tmp_path, 1, [ModelCheckpoint(dirpath=folder)])
    ckpt = ember.load_checkpoint(folder / "epoch=0-step=4.ckpt")
    (folder / "data").mkdir()
    (tmp_path / "outside.ckpt").write_bytes(b"keep me")
    ckpt["callbacks"]["ModelCheckpoint"]["checkpoints"] = [
        {"name": "data", "epoch": 0, "global_step": 1, "score": None},
        {"name": "../outside.ckpt", "epoch": 0, "global_step": 2, "score": None},
        {"name": "epoch=0-step=4.ckpt", "epoch": 0, "global_step": 4, "score": None}]
    ember.save_checkpoint(ckpt, folder / "epoch=0-step=4.ckpt")
    with pytest.warns(UserWarning, match=r"\['data', '../outside.ckpt'\].*left alone"):
        fit(tmp_path, 2, [ModelCheckpoint(dirpath=folder)], ckpt_path="last")
    assert (folder / "data").is_dir() and (tmp_path / "outside.ckpt").read_bytes() == b"keep me"
    assert names(folder) == ["epoch=1-step=8.ckpt"]


def test_a_resumed_run_deletes_neither_a_listed_user_file_nor_a_listed_user_folder(tmp_path):
    """Names a resumed state lists are adopted, but deleted only when the file itself says this run
    (its lineage) wrote it under that name: a user's copy of a checkpoint and a user's folder stay."""
    folder = tmp_path / "c"
    fit(tmp_path, 1, [ModelCheckpoint(dirpath=folder)])
    ckpt = ember.load_checkpoint(folder / "epoch=0-step=4.ckpt")
    (folder / "precious.ckpt").write_bytes((folder / "epoch=0-step=4.ckpt").read_bytes())  # same run, other name
    (folder / "keep_me.ckpt").mkdir()
    (folder / "keep_me.ckpt" / "notes.txt").write_text("mine")
    ckpt["callbacks"]["ModelCheckpoint"]["checkpoints"] = [
        {"name": "precious.ckpt", "epoch": 0, "global_step": 1, "score": None},
        {"name": "keep_me.ckpt", "epoch": 0, "global_step": 2, "score": None},
        {"name": "epoch=0-step=4.ckpt", "epoch": 0, "global_step": 4, "score": None}]
    ember.save_checkpoint(ckpt, folder / "epoch=0-step=4.ckpt")
    with pytest.warns(UserWarning, match=r"precious.ckpt was listed .* not written by this run .* left alone"):
        fit(tmp_path, 2, [ModelCheckpoint(dirpath=folder)], ckpt_path="last")
    assert (folder / "keep_me.ckpt" / "notes.txt").read_text() == "mine"
    assert names(folder) == ["epoch=1-step=8.ckpt", "keep_me.ckpt", "precious.ckpt"]


def test_a_resumed_run_still_deletes_the_checkpoints_it_wrote_before_the_resume(tmp_path):
    folder = tmp_path / "c"
    fit(tmp_path, 1, [ModelCheckpoint(dirpath=folder, save_top_k=1)])
    fit(tmp_path, 2, [ModelCheckpoint(dirpath=folder, save_top_k=1)], ckpt_path="last")
    assert names(folder) == ["epoch=1-step=8.ckpt"]


def test_a_resume_whose_callbacks_all_claim_their_state_warns_nothing_about_unclaimed_state(tmp_path):
    fit(tmp_path, 1, [ModelCheckpoint(dirpath=tmp_path / "c", save_last=True)])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        fit(tmp_path, 2, [ModelCheckpoint(dirpath=tmp_path / "c", save_last=True)], ckpt_path="last")
    assert not [w for w in seen if "no callback of this Trainer claims" in str(w.message)]
