"""``FSDPStrategy``: data parallelism with every rank holding a shard of the model (FSDP2, ``fully_shard``).

The Trainer calls it where it calls ``DDPStrategy`` (docs/DISTRIBUTED.md, "FSDP"), with three
differences: the optimizers must be built *after* ``setup_module`` (they hold the sharded
parameters), the weights and optimizer states are saved and restored through ``state_for_save`` /
``load_state`` (sharded DTensors, for a folder checkpoint written by every rank), and
``gather_loop_state`` returns the gathered loop state on every rank (every rank writes its part of
the folder).

The optimizer states of a sharded model are keyed by parameter name (``"0.weight"``);
``optimizer_state_to_plain`` / ``optimizer_state_from_plain`` turn them into the numbered layout of
``torch.optim.Optimizer.state_dict()`` and back, so that a folder saved by FSDP loads into a plain
optimizer in one process, and a single-file checkpoint (one process, DDP) resumes under FSDP.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard, register_fsdp_forward_method
from torch.distributed.tensor import DTensor, distribute_tensor

from ember.distributed import group
from ember.checkpoint import ranks as per_rank
from ember.distributed.strategy import ParallelStrategy
from ember.errors import CheckpointMismatchError

STEP_METHODS = ("training_step", "validation_step", "test_step", "predict_step")
"""Module methods run with FSDP's forward hooks (all-gather before, reshard after), as ``forward`` is."""


class FSDPStrategy(ParallelStrategy):
    """Fully sharded data parallelism (FSDP2) over the processes of one job: each rank holds a shard
    of every parameter, gradient and optimizer state; parameters are all-gathered for each forward
    and backward, gradients reduce-scattered (averaged over the ranks, as DDP does).

    Args:
        accelerator: "cpu" (gloo), "cuda"/"gpu" (NCCL) or "auto"; a wrong name raises ``DistributedError``.
        timeout: seconds any collective may wait (default 600).
        grace: seconds a rank may take to stop on its own after another failed (default 30).
        **fsdp_kwargs: keyword arguments of every ``fully_shard`` call ember makes (``reshard_after_forward``,
            ``mp_policy``, ``offload_policy``).
    """

    pads_predictions = True  # every predict_step all-gathers: each rank must run as many

    def __init__(self, *, accelerator: str = "auto", timeout: float = group.DEFAULT_TIMEOUT,
                 grace: float = group.DEFAULT_GRACE, **fsdp_kwargs: Any) -> None:
        super().__init__(accelerator=accelerator, timeout=timeout, grace=grace)
        self.fsdp_kwargs = fsdp_kwargs
        self.device_mesh: DeviceMesh | None = None

    def setup(self) -> torch.device:
        """Join the job (idempotent) and build the 1-D device mesh over every rank; returns this
        process's device."""
        device = super().setup()
        if self.device_mesh is None:
            self.device_mesh = init_device_mesh(device.type, (dist.get_world_size(),))
        return device

    def teardown(self, *, wait: bool = True) -> None:
        """Leave the job and drop the device mesh.

        Args:
            wait: wait at a barrier for every rank first (default True; False when leaving on an error).
        """
        super().teardown(wait=wait)
        self.device_mesh = None

    # ---------------------------------------------------------------- the model
    def setup_module(self, module: nn.Module, device: torch.device | None = None) -> nn.Module:
        """Collective: ``module`` moved to ``device`` (default: this rank's), rank 0's parameters and
        buffers copied to every rank, then sharded in place; returns ``module`` itself (build the
        optimizers after this call, from its parameters).

        A module with a ``configure_model()`` method shards itself: ember sets ``module.device_mesh``
        and calls it (parameters it creates are copied from rank 0 too, unless it sharded them). If
        no submodule is sharded then (no ``configure_model``, or one that only builds layers), ember
        calls ``fully_shard`` on each submodule that directly holds parameters (innermost first; one
        whose parameters are shared with another module is left to its parent). The root is sharded
        last, unless ``configure_model`` did it, and the module's ``training_step`` /
        ``validation_step`` / ``test_step`` / ``predict_step`` run with FSDP's forward hooks (each is
        then a collective: every rank must call it). A module already sharded is returned as it is.

        Args:
            module: the LightningModule to shard.
            device: the device to move it to (None: this rank's).
        """
        if isinstance(module, FSDPModule):
            return module
        self._require_group("setup_module()")
        if self.device_mesh is None:
            self.setup()
        mesh, comm = self.device_mesh, self._comm_device()
        module.to(device or self.device or group.device())
        synced = _broadcast_from_rank0(module, comm, done=set())
        configure = getattr(module, "configure_model", None)
        if callable(configure):
            module.device_mesh = mesh
            configure()
            _broadcast_from_rank0(module, comm, done=synced)
        if not any(isinstance(m, FSDPModule) for m in module.modules()):
            for unit in shard_units(module):
                fully_shard(unit, mesh=mesh, **self.fsdp_kwargs)
        if not isinstance(module, FSDPModule):
            fully_shard(module, mesh=mesh, **self.fsdp_kwargs)
        for name in STEP_METHODS:
            if callable(getattr(module, name, None)):
                register_fsdp_forward_method(module, name)
        return module

    def training_step(self, wrapped: nn.Module, *args: Any, **kwargs: Any) -> Any:
        """``wrapped.training_step(*args, **kwargs)``: ``setup_module`` registered it with FSDP, so the
        root's parameters are gathered first and the backward of its loss reduce-scatters the gradients.

        Args:
            wrapped: the module ``setup_module`` returned.
            *args: the arguments of ``training_step`` (batch, batch_idx).
            **kwargs: its keyword arguments.
        """
        return wrapped.training_step(*args, **kwargs)

    # ---------------------------------------------------------------- checkpoints
    def gather_loop_state(self, state: dict[str, Any],
                          keys: tuple[str, ...] = per_rank.PER_RANK_KEYS) -> dict[str, Any]:
        """Collective: ``state`` plus ``loops.fit.ranks`` (every rank's ``keys`` entries: RNG states and
        data position), returned on *every* rank, with rank 0's ``keys`` entries at the top as in a
        single-process checkpoint: every rank writes its part of a folder checkpoint, and their
        non-tensor entries must agree. Other entries stay this rank's own (``accumulated_grads`` holds
        this rank's gradient shards as DTensors). Resume with ``scatter_loop_state``.

        Args:
            state: this rank's loop state.
            keys: the per-rank entries to gather (default: RNG states and data position).
        """
        gathered = per_rank.gather(state, keys)
        ranks = self.broadcast_object(gathered.get(per_rank.RANKS) if gathered is not None else None)
        if ranks is None:  # no joined group: one process
            return dict(state)
        return {**state, **ranks[0], per_rank.RANKS: ranks}

    def state_for_save(self, module: nn.Module, optimizers: Sequence[torch.optim.Optimizer]) -> dict[str, Any]:
        """Collective: ``{"state_dict": ..., "optimizer_states": [...]}`` of this rank's shards: the
        weights by parameter name as DTensors, each optimizer's state keyed by parameter name (its
        ``param_groups`` list names). Every rank gives this to the folder checkpoint's writer.

        Also the template to load into: a fresh sharded module and its optimizers give this, the
        reader fills it in place (resharding), and ``load_state`` puts it back. An optimizer that
        has not stepped yet gets its state created by a step with zero gradients and ``lr=0``.

        Args:
            module: the sharded module (from ``setup_module``).
            optimizers: its optimizers.
        """
        options = StateDictOptions(full_state_dict=False)
        return {"state_dict": get_model_state_dict(module, options=options),
                "optimizer_states": [get_optimizer_state_dict(module, opt, options=options) for opt in optimizers]}

    def load_weights(self, module: nn.Module, weights: Mapping[str, Any]) -> None:
        """Collective: ``weights`` (whole tensors on every rank, or this rank's DTensor shards) into the
        sharded ``module``: what ``trainer.validate/test/predict(ckpt_path=...)`` load after an FSDP fit.

        Args:
            module: the sharded module.
            weights: its state dict, whole or as this rank's shards.
        """
        set_model_state_dict(module, dict(weights), options=StateDictOptions(full_state_dict=not _has_dtensor(weights)))

    def load_state(self, module: nn.Module, optimizers: Sequence[torch.optim.Optimizer],
                   ckpt: Mapping[str, Any]) -> None:
        """Collective: put ``ckpt["state_dict"]`` and ``ckpt["optimizer_states"]`` back into the sharded
        ``module`` and its ``optimizers``. Either as ``state_for_save`` gave them (sharded DTensors,
        after the folder reader filled them), or full tensors on every rank (a single-file checkpoint;
        turn its numbered optimizer states into named ones with ``optimizer_state_from_plain``).

        Args:
            module: the sharded module (from ``setup_module``).
            optimizers: its optimizers, as many as ``ckpt["optimizer_states"]`` (else
                ``CheckpointMismatchError``).
            ckpt: the checkpoint dict with ``state_dict`` and ``optimizer_states``.
        """
        weights, opts = ckpt["state_dict"], list(ckpt.get("optimizer_states", []))
        if len(opts) != len(optimizers):
            raise CheckpointMismatchError(
                f"the checkpoint has {len(opts)} optimizer state(s) and the run has {len(optimizers)} optimizer(s); "
                "configure_optimizers must build the optimizers the checkpoint was saved with.")
        own = module.state_dict().keys()  # names only: no communication
        missing, unexpected = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
        if missing or unexpected:
            raise CheckpointMismatchError(
                f"the checkpoint's weights do not match the model: missing {missing[:10]}, unexpected "
                f"{unexpected[:10]}. Resume with the model class and settings that wrote the checkpoint.")
        for i, state in enumerate(opts):
            if isinstance(state, Mapping) and any(isinstance(k, int) for k in state.get("state", {})):
                raise CheckpointMismatchError(
                    f"optimizer state {i} is keyed by parameter numbers (Optimizer.state_dict()'s layout); "
                    "FSDP needs names: pass optimizer_state_from_plain(state, module, optimizer).")
        sharded = _has_dtensor(weights)
        options = StateDictOptions(full_state_dict=not sharded)
        set_model_state_dict(module, weights, options=options)
        for opt, state in zip(optimizers, opts):
            if opt.state and any(p not in opt.state for g in opt.param_groups for p in g["params"]):
                # param groups put back after the state was made (BaseFinetuning's): torch makes the state of
                # every parameter, which it loads into, only for an optimizer that has none
                opt.state.clear()
            set_optimizer_state_dict(module, opt, _shard_whole_entries(module, state) if sharded else state,
                                     options=options)


_WHOLE_UNITS = (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)
"""Layers sharded as one unit: in eval mode their fast path reads the weights of their attention
submodule without calling its forward, so that submodule cannot be a unit of its own."""


def shard_units(module: nn.Module) -> list[nn.Module]:
    """The submodules ``setup_module`` shards one by one, innermost first: each one, not the root,
    that directly holds parameters none of which another module also holds (a tied weight is left to
    the root, which covers every parameter not in a unit); a transformer encoder/decoder layer is one
    unit with everything in it."""
    holders: dict[int, int] = {}
    for sub in module.modules():
        for p in sub.parameters(recurse=False):
            holders[id(p)] = holders.get(id(p), 0) + 1
    seen: set[int] = set()
    units: list[nn.Module] = []

    def visit(sub: nn.Module) -> None:
        if id(sub) in seen:
            return
        seen.add(id(sub))
        if isinstance(sub, _WHOLE_UNITS) and sub is not module:  # its fast path reads its children's weights
            if all(holders[id(p)] == 1 for p in sub.parameters()):
                units.append(sub)
            return
        for child in sub.children():
            visit(child)
        own = list(sub.parameters(recurse=False))
        if sub is not module and own and all(holders[id(p)] == 1 for p in own):
            units.append(sub)

    visit(module)
    return units


def _broadcast_from_rank0(module: nn.Module, comm: torch.device, done: set[int]) -> set[int]:
    """Every rank starts from rank 0's parameters and buffers (as DistributedDataParallel does); those
    in ``done`` (ids), already sharded or on the meta device are left alone. Returns ``done`` plus
    the ids copied."""
    for t in [*module.parameters(), *module.buffers()]:
        if id(t) in done or t.device.type == "meta" or isinstance(t, DTensor):
            continue
        with torch.no_grad():
            work = t.detach().to(comm)
            dist.broadcast(work, src=0)
            t.detach().copy_(work)
        done.add(id(t))
    return done


def _shard_whole_entries(module: nn.Module, state: Mapping[str, Any]) -> Mapping[str, Any]:
    """Collective: ``state`` (an optimizer state read from a sharded folder) with each whole tensor of a
    sharded parameter's entry sharded as the parameter is. The folder's reader loads whole what the template
    it filled did not hold: the state of parameters a callback put back after the template was taken (the
    param groups a ``BaseFinetuning`` added), which must be shards like the rest."""
    params = dict(module.named_parameters())
    out = {}
    for name, entry in state.get("state", {}).items():
        p = params.get(name)
        if isinstance(p, DTensor) and isinstance(entry, Mapping):
            entry = {k: distribute_tensor(v.to(p.device), p.device_mesh, p.placements)
                     if type(v) is torch.Tensor and v.shape == p.shape and v.dim() else v for k, v in entry.items()}
        out[name] = entry
    return {**state, "state": out}


def _has_dtensor(tree: Any) -> bool:
    if isinstance(tree, DTensor):
        return True
    if isinstance(tree, Mapping):
        return any(_has_dtensor(v) for v in tree.values())
    return False


# ---------------------------------------------------------------- optimizer state layouts
def optimizer_state_to_plain(state: Mapping[str, Any]) -> dict[str, Any]:
    """A named optimizer state (``get_optimizer_state_dict``'s: ``state`` and ``param_groups[i]
    ["params"]`` by parameter name) in ``torch.optim.Optimizer.state_dict()``'s layout: parameters
    numbered 0, 1, ... in ``param_groups`` order. Values are kept as they are (full tensors for a
    plain optimizer: read the folder with the full reader)."""
    groups, named = _groups_of(state, str, "parameter names (a state from get_optimizer_state_dict)")
    index: dict[str, int] = {}
    plain_groups = []
    for g in groups:
        ids = []
        for name in g["params"]:
            index.setdefault(name, len(index))
            ids.append(index[name])
        plain_groups.append({**g, "params": ids})
    unknown = sorted(set(named) - set(index))
    if unknown:
        raise CheckpointMismatchError(f"the optimizer state has entries for {unknown}, which no param_group lists; "
                                      "expected a state as get_optimizer_state_dict returns it.")
    return {"state": {index[k]: v for k, v in named.items()}, "param_groups": plain_groups}


def optimizer_state_from_plain(state: Mapping[str, Any], module: nn.Module,
                               optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """A numbered optimizer state (``torch.optim.Optimizer.state_dict()``'s, from one process or DDP)
    keyed by parameter name for ``optimizer``, which optimizes ``module``'s parameters (sharded or
    not): the i-th saved parameter is the i-th of ``optimizer.param_groups``, as
    ``Optimizer.load_state_dict`` pairs them. Load it with ``FSDPStrategy.load_state``."""
    groups, numbered = _groups_of(state, int, "parameter numbers (a state from Optimizer.state_dict())")
    names = {id(p): n for n, p in module.named_parameters()}  # a tied parameter by its first name, as torch
    if len(groups) != len(optimizer.param_groups):
        raise CheckpointMismatchError(
            f"the saved optimizer state has {len(groups)} param_group(s) and the optimizer has "
            f"{len(optimizer.param_groups)}; build the optimizer with the param_groups it was saved with.")
    name_of: dict[int, str] = {}
    named_groups = []
    for i, (saved, live) in enumerate(zip(groups, optimizer.param_groups)):
        if len(saved["params"]) != len(live["params"]):
            raise CheckpointMismatchError(
                f"param_group {i} of the saved optimizer state has {len(saved['params'])} parameter(s) and the "
                f"optimizer's has {len(live['params'])}; build the optimizer over the same parameters.")
        for number, p in zip(saved["params"], live["params"]):
            if id(p) not in names:
                raise CheckpointMismatchError(f"the optimizer holds a parameter of shape {tuple(p.shape)} that is "
                                              "not in the module; pass the module the optimizer was built over.")
            name_of[number] = names[id(p)]
        named_groups.append({**saved, "params": [name_of[n] for n in saved["params"]]})
    unknown = sorted(set(numbered) - set(name_of))
    if unknown:
        raise CheckpointMismatchError(f"the optimizer state has entries for parameters {unknown}, which no "
                                      "param_group lists; expected a state as Optimizer.state_dict() returns it.")
    return {"state": {name_of[k]: v for k, v in numbered.items()}, "param_groups": named_groups}


def _groups_of(state: Any, key_type: type, expected: str) -> tuple[list[Mapping[str, Any]], Mapping[Any, Any]]:
    groups, entries = (state.get("param_groups"), state.get("state")) if isinstance(state, Mapping) else (None, None)
    ok = isinstance(groups, list) and isinstance(entries, Mapping) and all(
        isinstance(g, Mapping) and isinstance(g.get("params"), list) for g in groups)
    keys = [k for g in groups for k in g["params"]] + list(entries) if ok else []
    if not ok or not all(isinstance(k, key_type) and not isinstance(k, bool) for k in keys):
        found = type(state).__name__ if not ok else f"keys {sorted({type(k).__name__ for k in keys})}"
        raise CheckpointMismatchError(
            f"expected an optimizer state with 'state' and 'param_groups' keyed by {expected}; found {found}.")
    return groups, entries
