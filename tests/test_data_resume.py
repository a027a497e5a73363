"""Mid-epoch resume sees exactly the batches an uninterrupted run would, for every sampler kind,
and skips consumed batches without reading them."""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import (BatchSampler, DataLoader, Dataset, DistributedSampler, IterableDataset,
                              RandomSampler, SequentialSampler, WeightedRandomSampler)

import ember
from ember.callbacks import Callback, ModelCheckpoint, OnExceptionCheckpoint
from ember.loops.data import ResumableLoader
from tiny import trainer_kwargs

N = 24


class Indexed(Dataset):
    """Item i is (i, random noise drawn from torch's global generator in __getitem__)."""

    def __init__(self):
        self.reads = 0

    def __len__(self):
        return N

    def __getitem__(self, i):
        self.reads += 1
        return torch.tensor([float(i)])


class Recorder(ember.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Linear(1, 1)
        self.seen: list[list[int]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch.flatten().long().tolist())
        return self.w(batch).mean() + torch.rand(()) * 0  # draws from the global stream too

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class StatefulSampler(torch.utils.data.Sampler):
    """A sampler with its own state: a counter that shifts each epoch's order."""

    def __init__(self):
        self.offset = 0

    def __iter__(self):
        order = [(i + self.offset) % N for i in range(N)]
        self.offset += 5
        return iter(order)

    def __len__(self):
        return N

    def state_dict(self):
        return {"offset": self.offset}

    def load_state_dict(self, state):
        self.offset = state["offset"]


def replacement_shared_generator(ds):
    """A sampler that draws lazily (32 indices at a time) from the generator the loader draws from too."""
    g = torch.Generator().manual_seed(5)
    sampler = RandomSampler(ds, replacement=True, num_samples=48, generator=g)
    return DataLoader(ds, batch_size=4, sampler=sampler, generator=g)


def loaders():
    """name -> factory building a fresh DataLoader (as a restarted process would)."""
    return {
        "shuffle": lambda ds: DataLoader(ds, batch_size=4, shuffle=True),
        "shuffle-generator": lambda ds: DataLoader(ds, batch_size=4, shuffle=True,
                                                   generator=torch.Generator().manual_seed(3)),
        "random-sampler-own-generator": lambda ds: DataLoader(
            ds, batch_size=4, sampler=RandomSampler(ds, generator=torch.Generator().manual_seed(5))),
        "replacement": lambda ds: DataLoader(ds, batch_size=4, sampler=RandomSampler(ds, replacement=True)),
        "sequential": lambda ds: DataLoader(ds, batch_size=4, sampler=SequentialSampler(ds)),
        "batch-sampler": lambda ds: DataLoader(ds, batch_sampler=BatchSampler(RandomSampler(ds), 4, False)),
        "weighted": lambda ds: DataLoader(ds, batch_size=4, sampler=WeightedRandomSampler([1.0] * N, N)),
        "distributed": lambda ds: DataLoader(ds, batch_size=4,
                                             sampler=DistributedSampler(ds, num_replicas=2, rank=1, seed=7)),
        "stateful-sampler": lambda ds: DataLoader(ds, batch_size=4, sampler=StatefulSampler()),
        "workers": lambda ds: DataLoader(ds, batch_size=4, shuffle=True, num_workers=2),
        "workers-generator": lambda ds: DataLoader(ds, batch_size=4, shuffle=True, num_workers=2,
                                                   generator=torch.Generator().manual_seed(3)),
        "replacement-shared-generator": replacement_shared_generator,
        "persistent-workers-generator": lambda ds: DataLoader(ds, batch_size=4, shuffle=True, num_workers=2,
                                                              persistent_workers=True,
                                                              generator=torch.Generator().manual_seed(3)),
    }


def fit(root, make_loader, ckpt_path=None, epochs=3, every_step=True):
    ember.seed_everything(0 if ckpt_path is None else 99)  # a resumed run must not depend on the seed
    model, dataset = Recorder(), Indexed()
    cb = ModelCheckpoint(dirpath=root, every_n_train_steps=1 if every_step else None, save_top_k=-1)
    trainer = ember.Trainer(max_epochs=epochs, checkpoint_callback=cb, **trainer_kwargs(root))
    trainer.fit(model, make_loader(dataset), ckpt_path=ckpt_path)
    return model, dataset, trainer


@pytest.mark.parametrize("kind", list(loaders()))
def test_mid_epoch_resume_sees_the_same_batches(tmp_path, kind):
    make = loaders()[kind]
    straight, _, trainer = fit(tmp_path / "a", make)
    per_epoch = len(straight.seen) // 3
    resume_step = per_epoch + 2  # two batches into the second epoch
    path = next((tmp_path / "a").glob(f"epoch=1-step={resume_step}.ckpt"))
    resumed, _, _ = fit(tmp_path / "b", make, ckpt_path=str(path))
    assert resumed.seen == straight.seen[resume_step:]
    assert all(torch.equal(a, b) for a, b in zip(straight.parameters(), resumed.parameters()))


def test_resume_after_a_lazy_samplers_later_draws_sees_the_same_batches(tmp_path):
    """RandomSampler(replacement=True) draws indices 32 at a time, when they are needed; resuming after
    more than 32 of them must not move the loader's own draw from the same generator between them."""
    make = replacement_shared_generator
    straight, _, _ = fit(tmp_path / "a", make, epochs=2)
    resumed, _, _ = fit(tmp_path / "b", make, ckpt_path=str(tmp_path / "a" / "epoch=0-step=10.ckpt"), epochs=2)
    assert resumed.seen == straight.seen[10:]


def with_generator(num_workers):
    return lambda ds: DataLoader(ds, batch_size=4, shuffle=True, num_workers=num_workers,
                                 generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_epoch_end_resume_with_a_loader_generator_sees_the_same_batches(tmp_path, num_workers):
    straight, _, _ = fit(tmp_path / "a", with_generator(num_workers), epochs=4, every_step=False)
    path = tmp_path / "a" / "epoch=1-step=12.ckpt"  # written at the end of the second epoch
    resumed, _, _ = fit(tmp_path / "b", with_generator(num_workers), ckpt_path=str(path), epochs=4, every_step=False)
    assert resumed.seen == straight.seen[12:]
    assert all(torch.equal(a, b) for a, b in zip(straight.parameters(), resumed.parameters()))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_restore_epoch_end_continues_the_loader_generator(num_workers):
    def epochs(loader, first, last):
        return [[b.flatten().tolist() for b in loader.epoch_iterator(e)[0]] for e in range(first, last)]

    straight = ResumableLoader(with_generator(num_workers)(Indexed()))
    before = epochs(straight, 0, 2)
    saved = straight.state_dict()  # as a checkpoint written at the end of epoch 1 holds it
    after = epochs(straight, 2, 4)
    resumed = ResumableLoader(with_generator(num_workers)(Indexed()))
    resumed.restore_epoch_end(saved)
    assert before[0] != after[0]  # the generator moves on: epochs differ
    assert epochs(resumed, 2, 4) == after


def test_persistent_workers_yield_every_epoch(tmp_path):
    make = lambda ds: DataLoader(ds, batch_size=4, shuffle=True, num_workers=2, persistent_workers=True)  # noqa: E731
    model, _, _ = fit(tmp_path, make, epochs=2, every_step=False)
    assert len(model.seen) == 2 * N // 4
    assert sorted(sum(model.seen[N // 4:], [])) == list(range(N))


def test_a_process_with_persistent_workers_exits(tmp_path):
    """At exit multiprocessing stops leftover workers with SIGTERM, which ember's workers ignore."""
    import subprocess
    import sys

    script = (
        "import ember, test_data_resume as t\n"
        "from torch.utils.data import DataLoader\n"
        "loader = DataLoader(t.Indexed(), batch_size=4, num_workers=2, persistent_workers=True)\n"
        f"ember.Trainer(max_epochs=1, checkpoint_callback=False, **t.trainer_kwargs({str(tmp_path)!r}))"
        ".fit(t.Recorder(), loader)\n"
    )
    tests = str(pathlib.Path(__file__).parent)
    subprocess.run([sys.executable, "-c", script], cwd=tests, timeout=120, check=True,
                   env={**os.environ, "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])})


class Augmented(Indexed):
    """Random augmentation inside the workers: item i is i + noise from the worker's torch generator."""

    def __getitem__(self, i):
        return torch.tensor([float(i)]) + torch.rand(1)


def test_random_augmentation_in_workers_resumes_exactly(tmp_path):
    class Seen(Recorder):
        def training_step(self, batch, batch_idx):
            self.seen.append(batch.flatten().tolist())
            return self.w(batch).mean()

    def fit_aug(root, ckpt=None):
        ember.seed_everything(0 if ckpt is None else 5)
        model = Seen()
        cb = ModelCheckpoint(dirpath=root, every_n_train_steps=1, save_top_k=-1)
        trainer = ember.Trainer(max_epochs=2, checkpoint_callback=cb, **trainer_kwargs(root))
        trainer.fit(model, DataLoader(Augmented(), batch_size=4, shuffle=True, num_workers=2), ckpt_path=ckpt)
        return model

    straight = fit_aug(tmp_path / "a")
    resumed = fit_aug(tmp_path / "b", str(tmp_path / "a" / "epoch=1-step=9.ckpt"))  # odd: workers swap roles
    assert resumed.seen == straight.seen[9:]
    assert all(torch.equal(a, b) for a, b in zip(straight.parameters(), resumed.parameters()))


def test_resume_skips_consumed_batches_without_reading_them(tmp_path):
    make = lambda ds: DataLoader(ds, batch_size=4, shuffle=True)  # noqa: E731
    fit(tmp_path / "a", make)
    path = tmp_path / "a" / "epoch=2-step=16.ckpt"  # 4 of 6 batches into the last epoch
    _, dataset, _ = fit(tmp_path / "b", make, ckpt_path=str(path))
    assert dataset.reads == 2 * 4  # only the two remaining batches were read


class Stream(IterableDataset):
    def __iter__(self):
        return iter(torch.tensor([float(i)]) for i in range(N))


def test_iterable_dataset_without_state_restarts_the_epoch_with_a_warning(tmp_path):
    make = lambda ds: DataLoader(Stream(), batch_size=4)  # noqa: E731
    fit(tmp_path / "a", make, epochs=1)
    with pytest.warns(UserWarning, match="starts again from its beginning"):
        resumed, _, _ = fit(tmp_path / "b", make, ckpt_path=str(tmp_path / "a" / "epoch=0-step=2.ckpt"), epochs=1)
    assert resumed.seen[0] == [0, 1, 2, 3]


class StatefulStream(IterableDataset):
    def __init__(self):
        self.pos = 0

    def __iter__(self):
        while self.pos < N:
            self.pos += 1
            yield torch.tensor([float(self.pos - 1)])
        self.pos = 0

    def state_dict(self):
        return {"pos": self.pos}

    def load_state_dict(self, state):
        self.pos = state["pos"]


def test_iterable_dataset_with_state_resumes_mid_epoch(tmp_path):
    make = lambda ds: DataLoader(StatefulStream(), batch_size=4)  # noqa: E731
    straight, _, _ = fit(tmp_path / "a", make, epochs=1)
    resumed, _, _ = fit(tmp_path / "b", make, ckpt_path=str(tmp_path / "a" / "epoch=0-step=2.ckpt"), epochs=1)
    assert resumed.seen == straight.seen[2:]


def test_checkpoint_holds_every_global_random_state(tmp_path):
    _, _, trainer = fit(tmp_path, lambda ds: DataLoader(ds, batch_size=4), epochs=1)
    rng = ember.load_checkpoint(tmp_path / "epoch=0-step=6.ckpt")["rng"]
    assert {"python", "numpy", "torch"} <= set(rng)
    assert isinstance(rng["numpy"]["keys"], (torch.Tensor, np.ndarray))


def test_on_exception_checkpoint_saves_and_reraises(tmp_path):
    class Boom(Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.global_step == 3:
                raise RuntimeError("boom")

    trainer = ember.Trainer(max_epochs=1, checkpoint_callback=False,
                            callbacks=[Boom(), OnExceptionCheckpoint(tmp_path)], **trainer_kwargs(tmp_path))
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(Recorder(), DataLoader(Indexed(), batch_size=4))
    assert ember.load_checkpoint(tmp_path / "on_exception.ckpt")["global_step"] == 3


def test_sigterm_in_process_saves_last_and_stops(tmp_path):
    import os
    import signal

    class Term(Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.global_step == 2:
                os.kill(os.getpid(), signal.SIGTERM)

    trainer = ember.Trainer(max_epochs=2, callbacks=[Term()], **trainer_kwargs(tmp_path))
    trainer.fit(Recorder(), DataLoader(Indexed(), batch_size=4))
    assert trainer.should_stop and trainer.global_step == 2
    assert ember.load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 2
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back after fit
