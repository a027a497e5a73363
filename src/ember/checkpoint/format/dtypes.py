"""Element types: safetensors dtype codes, torch dtypes by name, and the integer carriers that hold
tensors whose dtype has no safetensors code. Specified in docs/FORMAT.md, section 3."""

from __future__ import annotations

import math

import torch

__all__ = ["DTYPES", "CODES", "STORABLE_DTYPES", "TORCH_DTYPES", "carrier_for"]

# safetensors dtype code -> torch dtype name (only those this torch has are used)
_CODE_NAMES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8",
    "BOOL": "bool", "C64": "complex64",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
    "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz", "F8_E8M0": "float8_e8m0fnu",
}  # fmt: skip
DTYPES: dict[str, torch.dtype] = {
    c: getattr(torch, n) for c, n in _CODE_NAMES.items() if isinstance(getattr(torch, n, None), torch.dtype)
}
CODES: dict[torch.dtype, str] = {d: c for c, d in DTYPES.items()}
STORABLE_DTYPES = frozenset(CODES)

# Every torch dtype by its short name ("float32"); the only way a dtype name from a file is resolved.
TORCH_DTYPES: dict[str, torch.dtype] = {
    str(v).removeprefix("torch."): v for v in vars(torch).values() if isinstance(v, torch.dtype)
}

# Integer "carrier" dtypes used to store tensors whose dtype safetensors has no code for
# (complex128, complex32, float4...): the bytes are stored flat as this dtype.
_CARRIERS = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.uint8}


def carrier_for(dtype: torch.dtype) -> torch.dtype:
    """The integer dtype whose elements tile ``dtype``'s bytes: the largest power of two dividing its size."""
    return _CARRIERS[math.gcd(dtype.itemsize, 8)]
