"""The one place that touches CUDA: device choice, dtype, thread count, OOM detection."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DeviceChoice:
    device: torch.device
    dtype: torch.dtype

    @property
    def label(self) -> str:
        return f"{self.device}/{str(self.dtype).removeprefix('torch.')}"


def gpu_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def choose_device(setting: str = "auto", index: int = 0) -> DeviceChoice:
    """``auto``: CUDA device ``index`` when present (bf16 where supported, else fp16),
    otherwise CPU in fp32."""
    if setting == "auto":
        setting = f"cuda:{index}" if gpu_count() > index else "cpu"
    device = torch.device(setting)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            from model.exceptions import ModelError

            raise ModelError(f"device {setting!r} asked for, but CUDA is not available")
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return DeviceChoice(device, dtype)
    return DeviceChoice(device, torch.float32)


def set_cpu_threads(threads: int | None) -> int:
    n = threads or max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    torch.set_num_threads(n)
    return n


def release_cached_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()
