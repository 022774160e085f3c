"""A stop signal while ``roadcast serve`` waits for its last alert deliveries (the
service already stopped) exits at once with one line, not a ``KeyboardInterrupt``
traceback."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

from tests.processes import default_sigint
from tests.waiting import WAIT_S

CHILD = textwrap.dedent(
    """
    import logging, threading
    from pipeline.service.runtime import exit_at_signal

    logging.basicConfig(format="%(message)s %(fields)s")
    never = threading.Event()
    worker = threading.Thread(target=never.wait, daemon=True)  # a delivery that hangs
    worker.start()
    with exit_at_signal("deliveries in flight are abandoned"):
        print("waiting", flush=True)
        worker.join(timeout=600)
    print("returned", flush=True)
    """
)


def test_a_stop_signal_during_the_final_wait_exits_at_once_with_one_line():
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=default_sigint,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "waiting"
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=WAIT_S)
        assert proc.returncode == 128 + sig, out
        assert "Traceback" not in out and "returned" not in out, out
        assert "stopping_now" in out and "deliveries in flight are abandoned" in out, out
