"""Which device a network runs on, and seeded construction of its initial weights."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from models.nn.device_names import device_spec


def resolve_device(spec: str) -> torch.device:
    """``"auto"`` (CUDA when present, else CPU), ``"cpu"`` or ``"cuda"`` / ``"cuda:N"``.

    Raises
    ------
    ValueError
        For an unknown spec, or ``cuda`` on a machine without a usable CUDA device.
    """
    match = device_spec(spec)
    spec = match.group(0)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {spec!r} requested but CUDA is not available (torch "
                f"{torch.__version__}); use --device cpu or --device auto, or install a CUDA "
                "build of torch"
            )
        count = torch.cuda.device_count()
        if match.group(1) is not None and int(match.group(1)) >= count:
            raise ValueError(
                f"device {spec!r}: this machine has {count} CUDA device(s), 0-{count - 1}"
            )
    return torch.device(spec)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with torch's global RNGs seeded by ``seed``, then restore them.

    Build a module inside it so that its initial weights depend only on ``seed``.
    """
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
