"""``lightning.pytorch.accelerators``: CPU and CUDA. ``Trainer(accelerator=CPUAccelerator())`` equals
``Trainer(accelerator="cpu")``. TPU (XLA) and Apple MPS are not supported (``ember.not_supported``)."""

from ember.accelerators.accelerator import Accelerator
from ember.accelerators.cpu import CPUAccelerator
from ember.accelerators.cuda import CUDAAccelerator, find_usable_cuda_devices
from ember import not_supported as _not_supported

globals().update(_not_supported.install("accelerators"))

__all__ = ["Accelerator", "CPUAccelerator", "CUDAAccelerator", "MPSAccelerator", "XLAAccelerator",
           "find_usable_cuda_devices"]
