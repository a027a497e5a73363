"""``DDPStrategy``: what the Trainer asks of a DistributedDataParallel job, in one object.

``ParallelStrategy`` holds what every data-parallel strategy shares (``DDPStrategy`` here,
``FSDPStrategy`` in ``ember.distributed.fsdp``); each adds how it wraps the model and runs its step.
The Trainer holds one and calls it at fixed places (docs/DISTRIBUTED.md): ``setup()`` joins the job,
``setup_module`` wraps the model, ``distributed_loader`` shards the training data,
``reduce`` / ``any_rank`` agree on values, ``gather_loop_state`` / ``scatter_loop_state`` put every
rank's position in rank 0's checkpoint and back, ``failure_guard`` makes one rank's error every
rank's, ``teardown()`` leaves the job.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, IterableDataset, RandomSampler, SequentialSampler
from torch.utils.data.distributed import DistributedSampler

from ember import compat
from ember.distributed import group
from ember.checkpoint import ranks as per_rank
from ember.distributed.env import DistributedError, global_rank, local_rank, world_size
from ember.errors import MisconfigurationError

_OPS = {"sum": dist.ReduceOp.SUM, "mean": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}


class ParallelStrategy:
    """What every strategy over the processes of one job shares (gloo on CPU, NCCL on CUDA): joining
    and leaving, ranks, sharding the training data, agreeing on values, loop state, failures.
    Subclasses add ``setup_module`` and ``training_step``.

    Args:
        accelerator: "cpu" (gloo), "cuda"/"gpu" (NCCL) or "auto"; a wrong name raises ``DistributedError``.
        timeout: seconds any collective may wait (default 600).
        grace: seconds a rank may take to stop on its own after another failed (default 30).
    """

    def __init__(self, *, accelerator: str = "auto", timeout: float = group.DEFAULT_TIMEOUT,
                 grace: float = group.DEFAULT_GRACE) -> None:
        group.backend_for(accelerator)  # a wrong name fails here, before any process is joined
        self.accelerator, self.timeout, self.grace = accelerator, timeout, grace
        self.device: torch.device | None = None

    # ---------------------------------------------------------------- the job
    def setup(self) -> torch.device:
        """Join the job (idempotent); returns this process's device."""
        self.device = group.init(self.accelerator, timeout=self.timeout, grace=self.grace)
        return self.device

    def teardown(self, *, wait: bool = True) -> None:
        """Leave the job (``wait=False`` when leaving because of an error).

        Args:
            wait: wait at a barrier for every rank first (default True).
        """
        group.teardown(wait=wait)
        self.device = None

    @property
    def global_rank(self) -> int:
        return global_rank()

    @property
    def local_rank(self) -> int:
        return local_rank()

    @property
    def world_size(self) -> int:
        return world_size()

    @property
    def is_global_zero(self) -> bool:
        return global_rank() == 0

    def _require_group(self, what: str) -> None:
        if not dist.is_initialized():
            raise DistributedError(f"{what} needs the job's process group; call {type(self).__name__}.setup() first "
                                   "(after ember.distributed.launch(devices) when not under torchrun).")

    # ---------------------------------------------------------------- data
    def distributed_loader(self, loader: Any, shuffle: bool | None = None) -> Any:
        """``loader`` with a ``DistributedSampler`` in place of its sampler: each rank reads its own
        shard, and the shards of one epoch are disjoint and cover the dataset (the last ones padded
        with repeated samples when the dataset does not divide evenly, as DistributedSampler does).

        The loader's shuffling (``shuffle=None``: as the loader does), batch size, ``drop_last``,
        workers, collate function, generator and the rest are kept; the shuffle seed comes from the
        loader's generator (``initial_seed()``), else from ``seed_everything``, else 0, and rank 0's is
        used everywhere. Returned as it is: anything but a plain DataLoader over a map-style dataset
        with a random or sequential sampler, or one that already has a DistributedSampler, or any
        loader when no group is joined.

        Args:
            loader: the DataLoader to shard.
            shuffle: shuffle each epoch's shard; None keeps what the loader does.
        """
        if not isinstance(loader, DataLoader) or isinstance(loader.dataset, IterableDataset):
            return loader  # an iterable stream shards itself (or not): nothing to sample
        if not dist.is_initialized() or _has_distributed_sampler(loader):
            return loader
        if type(loader) is not DataLoader:
            raise MisconfigurationError(
                f"the training loader is a {type(loader).__name__} (a DataLoader subclass), which ember cannot "
                "rebuild with a DistributedSampler. Give it one yourself: sampler=DistributedSampler(dataset, "
                "shuffle=...), and call ember with that loader; ember leaves it alone.")
        sampler_shuffle = _shuffles(loader)
        if loader.batch_size is None or sampler_shuffle is None:
            kind = type(loader.batch_sampler if loader.batch_size is None else loader.sampler).__name__
            raise MisconfigurationError(
                f"the training loader uses a custom {kind}, which ember cannot shard across ranks. Expected "
                "DataLoader(dataset, batch_size=..., shuffle=True/False); received a "
                f"{'batch_sampler' if loader.batch_size is None else 'sampler'} of type {kind}. Make it rank-aware "
                "yourself (e.g. wrap the indices it yields with DistributedSampler) and pass a loader whose "
                "sampler is a DistributedSampler; ember leaves such a loader alone.")
        sampler = DistributedSampler(loader.dataset, num_replicas=dist.get_world_size(), rank=dist.get_rank(),
                                     shuffle=sampler_shuffle if shuffle is None else shuffle,
                                     seed=self.broadcast_object(_seed_of(loader)), drop_last=False)
        return DataLoader(
            loader.dataset, batch_size=loader.batch_size, sampler=sampler, num_workers=loader.num_workers,
            collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, drop_last=loader.drop_last,
            timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
            multiprocessing_context=loader.multiprocessing_context, generator=loader.generator,
            prefetch_factor=loader.prefetch_factor, persistent_workers=loader.persistent_workers,
            pin_memory_device=loader.pin_memory_device, in_order=getattr(loader, "in_order", True))

    # ---------------------------------------------------------------- agreeing on values
    def reduce(self, value: Any, op: str = "mean") -> torch.Tensor:
        """Collective: ``value`` (a tensor or number) reduced over every rank: "mean", "sum", "max" or
        "min". Returns a new tensor on ``value``'s device (floating for "mean"); ``value`` is not
        changed. Without a joined group, ``value`` as a tensor.

        Args:
            value: a tensor or a number.
            op: "mean" (default), "sum", "max" or "min".
        """
        if op not in _OPS:
            raise MisconfigurationError(f"reduce op must be one of {sorted(_OPS)}; received op={op!r}.")
        t = value.detach() if isinstance(value, torch.Tensor) else torch.tensor(value)
        if op == "mean" and not (t.is_floating_point() or t.is_complex()):
            t = t.to(torch.get_default_dtype())
        if not dist.is_initialized():
            return t.clone()
        work = t.to(self._comm_device(), copy=True)
        dist.all_reduce(work, op=_OPS[op])
        if op == "mean":
            work /= dist.get_world_size()
        return work.to(t.device)

    def any_rank(self, flag: bool) -> bool:
        """Collective: True on every rank when ``flag`` is True on any (a stop request, say).

        Args:
            flag: this rank's value.
        """
        return bool(self.reduce(torch.tensor(int(bool(flag))), op="max").item())

    def barrier(self) -> None:
        """Collective: wait until every rank is here (bounded by the group's timeout)."""
        if dist.is_initialized():
            dist.barrier()

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """Collective: rank ``src``'s ``obj`` on every rank (pickled between the job's own processes).

        Args:
            obj: the object to send (used on rank ``src`` only).
            src: the rank that sends (default 0).
        """
        if not dist.is_initialized():
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=src, device=self._comm_device())
        return box[0]

    def _comm_device(self) -> torch.device:
        return group.device() if dist.get_backend() == "nccl" else torch.device("cpu")

    # ---------------------------------------------------------------- checkpoints
    def gather_loop_state(self, state: dict[str, Any],
                          keys: tuple[str, ...] = per_rank.PER_RANK_KEYS) -> dict[str, Any] | None:
        """Collective: every rank's ``keys`` entries (RNG states and data position) gathered into rank
        0's loop state (``loops.fit.ranks``); None on other ranks. See ``ember.checkpoint.ranks``.

        Args:
            state: this rank's loop state.
            keys: the per-rank entries to gather (default: RNG states and data position).
        """
        return per_rank.gather(state, keys)

    def scatter_loop_state(self, saved: dict[str, Any], path: Any = "the checkpoint") -> dict[str, Any]:
        """This rank's own loop state from a checkpoint's (no communication: every rank reads the file).

        Args:
            saved: the checkpoint's loop state (with ``loops.fit.ranks``).
            path: where the checkpoint came from, for messages.
        """
        return per_rank.scatter(saved, path)

    # ---------------------------------------------------------------- failures
    @contextlib.contextmanager
    def failure_guard(self) -> Iterator[None]:
        """Around fit on every rank: this rank's error is posted for its peers, and an error a peer's
        failure caused here becomes ``PeerFailedError`` naming that rank."""
        watch = group.watch()
        if watch is None:
            yield
            return
        with watch.guard():
            yield

    def check_peers(self) -> None:
        """At a step boundary: raise ``PeerFailedError`` if another rank has failed (one store round trip)."""
        watch = group.watch()
        if watch is not None:
            watch.check()


class DDPStrategy(ParallelStrategy):
    """Data-parallel training over the processes of one job: every rank holds the whole model, and
    DistributedDataParallel all-reduces the gradients.

    Args:
        accelerator: "cpu" (gloo), "cuda"/"gpu" (NCCL) or "auto"; a wrong name raises ``DistributedError``.
        timeout: seconds any collective may wait (default 600).
        grace: seconds a rank may take to stop on its own after another failed (default 30).
        find_unused_parameters: passed to ``DistributedDataParallel`` (default False).
        **ddp_kwargs: other keyword arguments of ``DistributedDataParallel``.
    """

    def __init__(self, *, accelerator: str = "auto", timeout: float = group.DEFAULT_TIMEOUT,
                 grace: float = group.DEFAULT_GRACE, find_unused_parameters: bool = False, **ddp_kwargs: Any) -> None:
        super().__init__(accelerator=accelerator, timeout=timeout, grace=grace)
        self.ddp_kwargs = dict(ddp_kwargs, find_unused_parameters=find_unused_parameters)

    def setup_module(self, module: torch.nn.Module, device: torch.device | None = None) -> DistributedDataParallel:
        """``module`` moved to ``device`` (default: this rank's) and wrapped in DistributedDataParallel,
        which copies rank 0's parameters and buffers to every rank. Unwrap with
        ``checkpoint.state.unwrap_model``. An already wrapped module is returned as it is.

        Args:
            module: the LightningModule to wrap.
            device: the device to move it to (None: this rank's).
        """
        if isinstance(module, DistributedDataParallel):
            return module
        self._require_group("setup_module()")
        device = device or self.device or group.device()
        module.to(device)
        device_ids = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids, **self.ddp_kwargs)

    def training_step(self, wrapped: DistributedDataParallel, *args: Any, **kwargs: Any) -> Any:
        """``module.training_step(*args, **kwargs)`` run through DistributedDataParallel's forward, so
        that the backward of its loss all-reduces the gradients (calling ``training_step`` on the bare
        module would skip DDP's hooks and leave every rank with its own gradients).

        Args:
            wrapped: the module ``setup_module`` returned.
            *args: the arguments of ``training_step`` (batch, batch_idx).
            **kwargs: its keyword arguments.
        """
        if not isinstance(wrapped, DistributedDataParallel):
            return wrapped.training_step(*args, **kwargs)
        module = wrapped.module
        module.forward = module.training_step  # an instance attribute: DDP's forward calls it
        try:
            return wrapped(*args, **kwargs)
        finally:
            del module.forward


def _has_distributed_sampler(loader: DataLoader) -> bool:
    return isinstance(loader.sampler, DistributedSampler) or isinstance(
        getattr(loader.batch_sampler, "sampler", None), DistributedSampler)


def _shuffles(loader: DataLoader) -> bool | None:
    """True for a loader made with shuffle=True, False for shuffle=False, None for anything custom."""
    if loader.batch_sampler is not None and type(loader.batch_sampler) is not BatchSampler:
        return None
    sampler = loader.sampler
    if type(sampler) is SequentialSampler:
        return False
    if type(sampler) is RandomSampler and not sampler.replacement and sampler._num_samples is None:
        return True
    return None


def _seed_of(loader: DataLoader) -> int:
    """The shuffle seed: the loader's (or its sampler's) generator's, else seed_everything's, else 0."""
    for gen in (loader.generator, getattr(loader.sampler, "generator", None)):
        if isinstance(gen, torch.Generator):
            return int(gen.initial_seed()) % 2**63
    env = os.environ.get(compat.GLOBAL_SEED_ENV, "")
    return int(env) if env.lstrip("-").isdigit() else 0
