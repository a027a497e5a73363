"""Encode: a nested state <-> tensors + typed JSON, in a safetensors container with CRC-32C;
foreign torch files read weights-only."""
