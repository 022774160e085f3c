"""A stop signal that a library turns into an error of its own still ends a command as
an interruption (exit 130 or 143, the interrupted message), not as that error."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.cli.signals import sigterm_as_interrupt


def _signal_turned_into_an_error(signum: int) -> None:
    """What Prefect does when the interrupt lands while it sets a task run up."""
    try:
        os.kill(os.getpid(), signum)
        time.sleep(5)
    except KeyboardInterrupt:
        raise ValueError("Task run is not set") from None


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_the_signal_is_recorded_whatever_the_block_raised(signum: int) -> None:
    with sigterm_as_interrupt() as interruption, pytest.raises(ValueError):
        _signal_turned_into_an_error(signum)
    assert interruption.signum == signum and interruption.exit_code == 128 + signum


def test_train_interrupted_while_prefect_sets_a_task_up_says_interrupted(
    tmp_path, monkeypatch
) -> None:
    import flows.train_flow

    def train_flow(**_: Any) -> None:
        _signal_turned_into_an_error(signal.SIGTERM)

    monkeypatch.setattr(flows.train_flow, "train_flow", train_flow)
    monkeypatch.setenv("PREFECT_API_URL", "")
    args = [
        "train",
        "simulated:sensors=4,days=2",
        "--models",
        "persistence",
        "--out",
        str(tmp_path),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 143, result.output
    assert "interrupted before the run finished" in result.output
    assert "Task run is not set" not in result.output


def test_an_ignored_sigint_stays_ignored() -> None:
    """A script's background job inherits SIGINT ignored: a Ctrl-C meant for the script
    must not stop it."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with sigterm_as_interrupt():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
