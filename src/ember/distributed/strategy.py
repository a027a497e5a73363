"""``DDPStrategy``: what the Trainer asks of a DistributedDataParallel job, in one object.

``ParallelStrategy`` holds what every data-parallel strategy shares (``DDPStrategy`` here, ``FSDPStrategy`` in
``ember.distributed.fsdp``); each adds how it wraps the model and runs its step.
The Trainer holds one and calls it at fixed places (docs/DISTRIBUTED.md): ``setup()`` joins the job,
``setup_module`` wraps the model, ``distributed_loader`` shards the training data,
``reduce`` / ``any_rank`` agree on values, ``gather_loop_state`` / ``scatter_loop_state`` put every
rank's position in rank 0's checkpoint and back, ``failure_guard`` makes one rank's error every
rank's, ``teardown()`` leaves the job."""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, IterableDataset

from ember.checkpoint import ranks as per_rank
from ember.distributed import group
from ember.distributed.env import DistributedError, JobEnv, JobRanks
from ember.distributed.samplers import has_distributed_sampler, rebuilt, seed_of, shard_sampler, shuffles
from ember.distributed.single import _op_name
from ember.errors import MisconfigurationError

_OPS = {"sum": dist.ReduceOp.SUM, "mean": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}


class ParallelStrategy(JobRanks):
    """What every strategy over the processes of one job shares (gloo on CPU, NCCL on CUDA): joining
    and leaving, ranks, sharding the training data, agreeing on values, loop state, failures.
    Subclasses add ``setup_module`` and ``training_step``.

    Args:
        accelerator: "cpu" (gloo), "cuda"/"gpu" (NCCL) or "auto"; a wrong name raises ``DistributedError``.
        timeout: seconds any collective may wait (default 600).
        grace: seconds a rank may take to stop on its own after another failed (default 30).
    """

    pads_predictions = False
    """Whether ``predict`` loaders are padded to equal lengths (needed where every step is a collective)."""

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
    def root_device(self) -> torch.device:
        """This rank's device (its CUDA device under NCCL, else the CPU)."""
        return self.device or group.device()

    @property
    def node_rank(self) -> int:
        """This machine's rank among the job's machines (``NODE_RANK`` or torchrun's ``GROUP_RANK``; 0)."""
        for name in ("NODE_RANK", "GROUP_RANK"):
            value = os.environ.get(name, "")
            if value.isdigit():
                return int(value)
        return 0

    @property
    def num_nodes(self) -> int:
        """Machines in the job: processes in the job over processes on this machine."""
        job = JobEnv.detect()
        return max(1, job.world_size // job.local_world_size) if job is not None else 1

    def _require_group(self, what: str) -> None:
        if not dist.is_initialized():
            raise DistributedError(f"{what} needs the job's process group; call {type(self).__name__}.setup() first "
                                   "(after ember.distributed.launch(devices) when not under torchrun).")

    # ---------------------------------------------------------------- data
    def distributed_loader(self, loader: Any, shuffle: bool | None = None, *, stage: str = "train") -> Any:
        """``loader`` with a ``DistributedSampler`` in place of its sampler: each rank reads its own
        shard, and the shards of one epoch are disjoint and cover the dataset (the last ones padded
        with repeated samples when the dataset does not divide evenly, as DistributedSampler does).

        ``stage``: "train", or "validate" / "test" / "predict" (named in errors). Under DDP
        "predict" is not padded (``UnevenSampler``: every sample predicted once, ranks may get
        one batch fewer); a strategy whose steps are collectives (FSDP) pads it like the others.

        As Lightning: a RandomSampler or SequentialSampler is replaced by a DistributedSampler over the
        dataset; any other sampler is wrapped (``ShardedSampler``: each epoch what it yields is drawn
        and shared out); a custom batch sampler is made again around the DistributedSampler
        (``type(bs)(sampler, batch_size=..., drop_last=...)``, else ``SamplerError``).
        ``shuffle=None`` shuffles when the loader's sampler is a RandomSampler. Batch size,
        ``drop_last``, workers, collate function, generator and the rest are kept; the shuffle seed
        comes from the loader's generator (``initial_seed()``), else from ``seed_everything``, else 0,
        and rank 0's is used everywhere. Returned as it is: an IterableDataset's loader, one that
        already has a DistributedSampler, anything but a DataLoader, or any loader when no group is joined.

        Args:
            loader: the DataLoader to shard.
            shuffle: shuffle each epoch's shard; None keeps what the loader does.
        """
        if not isinstance(loader, DataLoader) or isinstance(loader.dataset, IterableDataset):
            return loader  # an iterable stream shards itself (or not): nothing to sample
        if not dist.is_initialized() or has_distributed_sampler(loader):
            return loader
        what = _LOADER_NAMES[stage]
        if type(loader) is not DataLoader:
            raise MisconfigurationError(
                f"the {what} loader is a {type(loader).__name__} (a DataLoader subclass), which ember cannot "
                "rebuild with a DistributedSampler. Give it one yourself: sampler=DistributedSampler(dataset, "
                "shuffle=...), and call ember with that loader; ember leaves it alone (or pass "
                "Trainer(use_distributed_sampler=False)).")
        sampler = shard_sampler(loader, what, uneven=stage == "predict" and not self.pads_predictions,
                                num_replicas=dist.get_world_size(), rank=dist.get_rank(),
                                shuffle=shuffles(loader) if shuffle is None else shuffle,
                                seed=self.broadcast_object(seed_of(loader)))
        return rebuilt(loader, sampler, what, predict=stage == "predict")

    # ---------------------------------------------------------------- agreeing on values
    def reduce(self, value: Any, op: str | None = None, *, group: Any = None,
               reduce_op: str | None = None) -> torch.Tensor:
        """Collective: ``value`` (a tensor or number) reduced over every rank: ``op`` (or Lightning's
        keyword ``reduce_op``) "mean" (the default), "sum", "max" or "min"; ``group`` is accepted for
        Lightning's signature and must be None (the whole job). Returns a new tensor on ``value``'s

        Args:
            value: a tensor or a number.
            op: "mean" (default), "sum", "max" or "min".
            group: must be None.
            reduce_op: Lightning's name for ``op``.
        """
        op = _op_name(op, reduce_op)
        if group is not None:
            raise MisconfigurationError("reduce(group=...) is not supported: ember reduces over every rank of the job; "
                                        "call torch.distributed.all_reduce with your group instead.")
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

    def barrier(self, name: str | None = None) -> None:
        """Collective: wait until every rank is here (bounded by the group's timeout).

        Args:
            name: accepted as Lightning's is (it only labels the barrier).
        """
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

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """Lightning's name for ``broadcast_object``: rank ``src``'s ``obj`` on every rank (collective).

        Args:
            obj: the object to send (used on rank ``src`` only).
            src: the rank that sends (default 0).
        """
        return self.broadcast_object(obj, src)

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
        """``module`` moved to ``device`` (default: this rank's), put in a ``StepDispatch`` and that
        wrapped in DistributedDataParallel, which copies rank 0's parameters and buffers to every rank.
        The module's own ``forward`` is left alone. Unwrap with ``checkpoint.state.unwrap_model``. An

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
        return DistributedDataParallel(StepDispatch(module), device_ids=device_ids, **self.ddp_kwargs)

    def training_step(self, wrapped: DistributedDataParallel, *args: Any, **kwargs: Any) -> Any:
        """``module.training_step(*args, **kwargs)`` run through DistributedDataParallel's forward, so
        that the backward of its loss all-reduces the gradients (calling ``training_step`` on the bare
        module would skip DDP's hooks and leave every rank with its own gradients).

        Args:
            wrapped: the module ``setup_module`` returned.
            *args: the arguments of ``training_step`` (batch, batch_idx).
            **kwargs: its keyword arguments.
        """
        return self.run_step(wrapped, "training_step", *args, **kwargs)

    def run_step(self, wrapped: Any, step: str, *args: Any, **kwargs: Any) -> Any:
        """The module's ``step`` method ("training_step", "validation_step", ...) through DDP's forward
        (a collective when the module has buffers: DDP broadcasts rank 0's before each forward).

        With manual optimization the step's backwards ran inside it (``pre_backward`` readied each),
        so DDP must not ready another when its forward returns: no backward would follow, and the
        next forward would fail ("initialize_buckets must NOT be called during autograd execution").

        Args:
            wrapped: the module ``setup_module`` returned.
            step: the step method's name.
            *args: its arguments.
            **kwargs: its keyword arguments.
        """
        if not isinstance(wrapped, DistributedDataParallel):
            return getattr(wrapped, step)(*args, **kwargs)
        dispatch = wrapped.module
        if step != "training_step" or getattr(dispatch.module, "automatic_optimization", True):
            return wrapped(step, *args, **kwargs)
        sync = wrapped.require_backward_grad_sync

        def after_step() -> None:
            wrapped.require_backward_grad_sync = False

        dispatch.after_step = after_step
        try:
            return wrapped(step, *args, **kwargs)
        finally:
            dispatch.after_step = None
            wrapped.require_backward_grad_sync = sync

    def sync_buffers(self, wrapped: Any) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every rank before fit's validation, as
        Lightning's first validation forward through DDP does (``broadcast_buffers=True``, DDP's default).

        Args:
            wrapped: the module ``setup_module`` returned.
        """
        if isinstance(wrapped, DistributedDataParallel) and wrapped.broadcast_buffers:
            with torch.no_grad():
                for buffer in wrapped.module.buffers():
                    dist.broadcast(buffer, src=0)

    def pre_backward(self, wrapped: Any, loss: torch.Tensor) -> None:
        """Before a ``manual_backward`` inside ``training_step``: DDP readies its gradient all-reduce
        when its forward returns, but with manual optimization the backward runs before that, so the
        reducer is readied here (it searches ``loss``'s graph for unused parameters when
        ``find_unused_parameters=True``).

        Args:
            wrapped: the DistributedDataParallel module ``setup_module`` returned.
            loss: the tensor about to be backpropagated.
        """
        if not isinstance(wrapped, DistributedDataParallel) or not torch.is_grad_enabled() \
                or not wrapped.require_backward_grad_sync:
            return
        wrapped.require_forward_param_sync = True
        reducer = wrapped.reducer
        reducer._rebuild_buckets()  # noqa: SLF001 - as DDP's own forward does before its first backward
        reducer.prepare_for_backward(list(_tensors_in(loss)) if wrapped.find_unused_parameters else [])


class StepDispatch(torch.nn.Module):
    """What DistributedDataParallel wraps: ``forward(step, *args)`` runs the module's ``step`` method
    (``training_step``, ...). The module's own ``forward`` stays the user's, so ``self(x)`` in a step
    or a hook calls it; the module is the only child, so parameters and buffers are the module's."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module
        self.after_step: Any = None  # called when the step returns, inside DDP's forward (manual optimization)

    def forward(self, step: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(step, str):  # called as the model itself (``ddp(x)``): the module's own forward
            step, args = "forward", (step, *args)
        out = getattr(self.module, step)(*args, **kwargs)
        if self.after_step is not None:
            self.after_step()
        return out


def _tensors_in(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors_in(v)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors_in(v)


_LOADER_NAMES = {"train": "training", "validate": "validation", "test": "test", "predict": "prediction"}
