"""Numeric precision: autocast and, for float16, a GradScaler. Stateful (the scaler's state)."""

from __future__ import annotations

import contextlib

import torch


class Precision:
    """Owns autocast and the GradScaler; the loop calls backward/step through it. Stateful (the scaler).

    ``mode`` is one of FitSettings' precisions: ``"32"``, ``"16-mixed"``, ``"bf16-mixed"``."""

    def __init__(self, mode: str, device: torch.device) -> None:
        self.mode = mode
        self.device = device
        self.scaler = torch.amp.GradScaler(device.type) if self.mode == "16-mixed" else None

    def autocast(self):
        if self.mode == "32":
            return contextlib.nullcontext()
        dtype = torch.float16 if self.mode == "16-mixed" else torch.bfloat16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.step(optimizer)
        else:
            optimizer.step()

    def update(self) -> None:
        if self.scaler is not None:
            self.scaler.update()

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
