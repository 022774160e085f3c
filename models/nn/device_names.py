"""Device names as a user writes them (``auto``, ``cpu``, ``cuda``, ``cuda:N``), checked
without importing torch (settings and deployments check them where torch is not needed)."""

from __future__ import annotations

import re

_SPEC = re.compile(r"auto|cpu|cuda(?::(\d{1,4}))?")


def device_spec(spec: str) -> re.Match[str]:
    """``spec`` as spelled right (``auto``, ``cpu``, ``cuda``, ``cuda:N``; case and
    surrounding spaces ignored), whatever this machine has.

    Raises
    ------
    ValueError
        For any other spelling.
    """
    text = spec.strip().lower()
    match = _SPEC.fullmatch(text)
    if match is None:
        raise ValueError(f"unknown device {text!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return match
