"""The train flow's fan-out on a real Dask LocalCluster (flows.fanout, prefect-dask): the
fits run on Dask workers and give what the sequential flow gives, the GPU slot holds
across workers, and a scheduler that does not answer is a clear error or the fallback."""

from __future__ import annotations

import json
import logging
import socket
import threading

import pytest
from prefect import flow, task

from flows.fanout import FanoutError, dask_runner, fan_out, local_cluster_kwargs, started
from pipeline.settings import Settings, SettingsError, load_settings
from tests.test_fanout_check import listening
from tests.waiting import WAIT_S

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DATA = "simulated:sensors=4,days=2,seed=5,incidents=0,faults=0"
TWO_WORKERS = Settings(dask_address="local")


def _runner():
    """A LocalCluster of two single-threaded workers (threads of this process)."""
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(cluster_kwargs={**local_cluster_kwargs(), "n_workers": 2})


@task
def where(label: str) -> tuple[str, str]:
    from distributed import get_worker

    return label, get_worker().address


def test_fan_out_runs_every_call_on_a_dask_worker(prefect_harness):
    @flow
    def spread() -> dict[str, tuple[str, str]]:
        with started(_runner()) as runner:
            return fan_out(runner, where, {k: {"label": k} for k in "abcd"})

    result = spread()
    assert [label for label, _ in result.values()] == list("abcd")
    assert all(address.startswith("inproc://") for _, address in result.values())

    @flow
    def here() -> dict[str, str]:
        return fan_out(None, lambda label: label.upper(), {"x": {"label": "x"}})  # type: ignore[arg-type]

    assert here() == {"x": "X"}


@task
def in_slot(device: str) -> None:
    """Hold the GPU slot (for ``cuda``; none for ``cpu``) until the other task is inside
    too, or a short while passes; record how many were inside at once."""
    from flows.gpu import training_slot
    from tests.fanout_support import LOCK as _LOCK
    from tests.fanout_support import SLOT as _SLOT

    with training_slot(device):
        with _LOCK:
            _SLOT["inside"] += 1
            _SLOT["peak"] = max(_SLOT["peak"], _SLOT["inside"])
        patience = 2.0 if device == "cuda" else WAIT_S  # cpu: the other one comes
        waited = 0.0
        while waited < patience:
            with _LOCK:
                if _SLOT["peak"] >= 2:
                    break
            threading.Event().wait(0.05)
            waited += 0.05
        with _LOCK:
            _SLOT["inside"] -= 1


@pytest.mark.parametrize(("device", "together"), [("cpu", 2), ("cuda", 1)])
def test_the_gpu_slot_holds_across_dask_workers(no_gpu_limit, device, together):
    from tests.fanout_support import SLOT

    SLOT.update(inside=0, peak=0)

    @flow
    def fits() -> None:
        with started(_runner()) as runner:
            fan_out(runner, in_slot, {k: {"device": device} for k in "ab"})

    fits()
    assert SLOT["peak"] == together  # CPU fits overlap; CUDA fits never hold the GPU at once


def _metrics(out) -> dict:
    document = json.loads((out / "metrics.json").read_text())
    return {name: (m["valid_rmse"], m["pooled"]) for name, m in document["models"].items()}


def test_the_train_flow_fans_out_on_a_local_cluster_with_the_same_results(
    prefect_harness, tmp_path, monkeypatch, caplog
):
    from flows.train_flow import train_flow

    args = {"data": DATA, "models": ["persistence", "ar"], "window": 6, "horizon": 3, "seeds": 1}
    train_flow(**args, device="cpu", out=str(tmp_path / "here"))
    monkeypatch.setenv("ROADCAST_DASK_ADDRESS", "local")
    with caplog.at_level(logging.INFO):
        train_flow(**args, device="cpu", out=str(tmp_path / "dask"))
    assert "Creating a new Dask cluster" in caplog.text
    assert _metrics(tmp_path / "dask") == _metrics(tmp_path / "here")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_scheduler_that_does_not_answer_is_an_error_or_the_local_fallback(caplog):
    address = f"tcp://127.0.0.1:{_closed_port()}"
    settings = Settings(dask_address=address, dask_timeout_s=1)
    with pytest.raises(FanoutError, match=r"did not answer within 1 s.*FALLBACK_LOCAL=true"):
        dask_runner(settings)
    fallback = settings.model_copy(update={"dask_fallback_local": True})
    with caplog.at_level(logging.WARNING, logger="roadcast.flows"):
        runner = dask_runner(fallback)
    assert runner is not None and runner.address is None  # a local cluster, not the address
    assert "falling back to a local cluster" in caplog.text and address in caplog.text
    assert dask_runner(Settings()) is None
    with pytest.raises(SettingsError, match=r"dask_address \(as given\): .*Dask scheduler"):
        load_settings(dask_address="http://example.org/dask")


@pytest.mark.parametrize("mode", ["closed", "silent"])
def test_the_train_flow_stops_before_any_work_when_the_scheduler_is_down(
    prefect_harness, tmp_path, monkeypatch, mode
):
    from flows.train_flow import train_flow

    with listening(mode) as port:  # silent: accepts and never answers (it used to hang)
        monkeypatch.setenv("ROADCAST_DASK_ADDRESS", f"127.0.0.1:{port}")
        monkeypatch.setenv("ROADCAST_DASK_TIMEOUT_S", "1")
        with pytest.raises(FanoutError, match="did not answer within 1 s"):
            train_flow(data=DATA, models="ar", device="cpu", out=str(tmp_path))
    assert not (tmp_path / "metrics.json").exists()


def test_two_workers_is_the_local_default_here():
    assert local_cluster_kwargs()["processes"] is False
    assert 1 <= local_cluster_kwargs()["n_workers"] <= 4
    assert dask_runner(TWO_WORKERS) is not None
