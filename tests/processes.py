"""Child processes that behave like ones started from a terminal."""

from __future__ import annotations

import signal


def default_sigint() -> None:
    """``preexec_fn`` that gives the child the default SIGINT handler.

    A shell starts background jobs with SIGINT ignored, and the ignore is inherited: a test
    run from such a job would otherwise send Ctrl-C to a child that cannot receive it.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
