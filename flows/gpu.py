"""One neural fit at a time per GPU: a Prefect global concurrency limit named ``gpu``.

Neural fits on CUDA hold a slot of the Prefect **global concurrency limit** ``gpu``, so
that the fits of *every* flow run and worker sharing the Prefect server queue for the
GPU instead of running out of its memory together (within one train flow run the
model tasks already run one after the other, see :mod:`flows.train_flow`).

* The limit is created with :data:`DEFAULT_GPU_SLOTS` slot when it does not exist and
  never changed when it does: an operator with two GPUs per worker raises it
  (``prefect gcl update gpu --limit 2``).
* It is only taken when the fit runs on CUDA: CPU training never needs it to exist and
  never waits for a GPU run. Deterministic models (AR, baselines) take no slot.
* Slots are held with a lease the client renews while the fit runs; a crashed run's
  slot comes back when its lease expires. ``timeout_s`` bounds the wait when wanted
  (default: wait as long as it takes, a queue for the GPU). This works the same on
  Prefect's embedded temporary server: the limit is created there for the run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

GPU_LIMIT = "gpu"
DEFAULT_GPU_SLOTS = 1


def ensure_gpu_limit(slots: int = DEFAULT_GPU_SLOTS) -> bool:
    """Create the ``gpu`` global concurrency limit if it is missing; True if created."""
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(GPU_LIMIT)
            return False
        except ObjectNotFound:
            pass
        try:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=GPU_LIMIT, limit=slots)
            )
        except ObjectAlreadyExists:  # another run created it first: the same outcome
            return False
        return True


@contextmanager
def training_slot(device: str, *, timeout_s: float | None = None) -> Iterator[None]:
    """Hold a slot of the ``gpu`` limit while the block runs, when ``device`` is CUDA
    (``"cuda"``, ``"cuda:N"``); a no-op for ``"cpu"``.

    Raises
    ------
    TimeoutError
        When ``timeout_s`` passes before a GPU slot is free.
    """
    if not device.startswith("cuda"):
        yield
        return
    from prefect.concurrency.sync import concurrency

    ensure_gpu_limit()
    with concurrency(GPU_LIMIT, occupy=1, timeout_seconds=timeout_s, strict=True):
        yield
