"""CPU threads for training: :func:`limit_threads` caps torch's and BLAS's threads in a block."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def limit_threads(threads: int | None) -> Iterator[None]:
    """Use ``threads`` CPU threads for torch and for numpy's BLAS (statsmodels' fits)
    inside the block; both are restored afterwards. ``None`` keeps the defaults.

    Small models gain little from threads, and on busy shared cores idle threads
    spin-wait (see docs/decisions.md, "Flows: CPU threads and task order"). The BLAS
    limit needs ``threadpoolctl``; without it only torch is limited.
    """
    if not threads:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            yield
        else:
            with threadpool_limits(limits=threads):
                yield
    finally:
        torch.set_num_threads(before)
