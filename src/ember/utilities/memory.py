"""``lightning.pytorch.utilities.memory``: out-of-memory errors, freeing CUDA memory, detaching outputs."""

from __future__ import annotations

import gc
from typing import Any

import torch


def recursive_detach(in_dict: Any, to_cpu: bool = False) -> Any:
    """Detach every tensor in a nested structure of dicts, lists and tuples.

    Args:
        in_dict: the structure.
        to_cpu: also move the tensors to the CPU.
    """
    if isinstance(in_dict, torch.Tensor):
        out = in_dict.detach()
        return out.cpu() if to_cpu else out
    if isinstance(in_dict, dict):
        return type(in_dict)((k, recursive_detach(v, to_cpu)) for k, v in in_dict.items())
    if isinstance(in_dict, (list, tuple)) and not hasattr(in_dict, "_fields"):
        return type(in_dict)(recursive_detach(v, to_cpu) for v in in_dict)
    return in_dict


def is_cuda_out_of_memory(exception: BaseException) -> bool:
    """Whether the error is CUDA running out of memory.

    Args:
        exception: the error caught.
    """
    return isinstance(exception, torch.cuda.OutOfMemoryError) or (
        isinstance(exception, RuntimeError) and "CUDA" in str(exception) and "out of memory" in str(exception))


def is_cudnn_snafu(exception: BaseException) -> bool:
    """Whether the error is cuDNN failing to run (often memory in disguise).

    Args:
        exception: the error caught.
    """
    return isinstance(exception, RuntimeError) and "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED" in str(exception)


def is_out_of_cpu_memory(exception: BaseException) -> bool:
    """Whether the error is the CPU allocator running out of memory.

    Args:
        exception: the error caught.
    """
    return isinstance(exception, RuntimeError) and "DefaultCPUAllocator: can't allocate memory" in str(exception)


def is_oom_error(exception: BaseException) -> bool:
    """Whether the error is any kind of out-of-memory (CUDA, cuDNN, CPU).

    Args:
        exception: the error caught.
    """
    return is_cuda_out_of_memory(exception) or is_cudnn_snafu(exception) or is_out_of_cpu_memory(exception)


def garbage_collection_cuda() -> None:
    """Collect garbage, then hand cached CUDA memory back to the driver."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


__all__ = ["garbage_collection_cuda", "is_cuda_out_of_memory", "is_cudnn_snafu", "is_oom_error",
           "is_out_of_cpu_memory", "recursive_detach"]
