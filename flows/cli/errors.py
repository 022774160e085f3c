"""How the command line shows errors: one line, the traceback only under ``--debug``.

:class:`RoadcastGroup` is the ``roadcast`` command group: an exception that escapes a
command is printed as ``error: <message>`` (exit status :func:`exit_status`: 2 for a
usage error such as an invalid option value, for an invalid setting from an option, a
``ROADCAST_*`` variable or the settings file, and for an invalid data-set spec or
option; 1 for any other error) instead of a traceback, unless ``roadcast --debug`` (or
``ROADCAST_DEBUG=1``) asked for tracebacks; a command that catches an error itself ends
through :func:`fail`, which does the same. A usage error is one line with ``--debug``
too: its traceback would show the parser, not the cause. Output piped into a reader
that stops early (``| head``) ends the command quietly with status 1, as rich's console
does for the tables it prints.
:func:`quiet_prefect_tracebacks` does the same for the flows a command runs: Prefect
logs a failed task's traceback to the console, which repeats the one-line error in
60-odd lines; without ``--debug`` the console shows Prefect's one-line state messages
only (the Prefect server still receives the full log).
:class:`HelpGroup` lays out ``--help`` as click's plain text, which wraps the help and
never cuts an option's or a variable's name (Typer's rich table cut them at 80 columns).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

try:  # the click Typer vendors (0.23 and later) raises the usage errors of its parser
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:
    from click.exceptions import NoArgsIsHelpError, UsageError  # type: ignore[assignment]

DEBUG_ENV = "ROADCAST_DEBUG"
_state = {"debug": False}


def debug_enabled() -> bool:
    """True when ``--debug`` was given or ``ROADCAST_DEBUG`` is set to a true value."""
    env = os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")
    return _state["debug"] or env


def set_debug(value: bool) -> None:
    """Record the global ``--debug`` option (called by the app's callback)."""
    _state["debug"] = value


def describe(exc: BaseException) -> str:
    """One line (or the message's own lines) for an error that reached the command line."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):  # e.g. Prefect's settings, read from the environment
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        return (
            f"invalid {exc.title}{f' {where}' if where else ''}: {first['msg']} "
            f"({exc.error_count()} error(s)); check the PREFECT_* and ROADCAST_* environment "
            "variables"
        )
    if (lost := _lost_prefect_api(exc)) is not None:
        return lost
    ours = type(exc).__module__.split(".")[0] in ("pipeline", "models", "flows")
    if ours or isinstance(exc, ValueError | OSError):
        return str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {exc} (unexpected; `roadcast --debug ...` shows the traceback)"


def _lost_prefect_api(exc: BaseException) -> str | None:
    """One line for a Prefect API that stopped answering during a command (an ``httpx``
    transport error on a request to ``.../api/...``), None for any other error."""
    import httpx

    if not isinstance(exc, httpx.TransportError):
        return None
    try:
        url = exc.request.url
    except RuntimeError:  # an error raised without its request
        return None
    if "/api" not in url.path:
        return None
    configured = bool(os.environ.get("PREFECT_API_URL"))
    if not configured:
        import prefect.settings

        configured = bool(prefect.settings.get_current_settings().api.url)
    where = f"{url.scheme}://{url.host}:{url.port}"
    fix = (
        "check the server PREFECT_API_URL names"
        if configured
        else "the temporary Prefect server started for this command stopped (ended by "
        "another process, or its port taken); run the command again, or run `prefect "
        "server start` and set PREFECT_API_URL"
    )
    return f"the Prefect API at {where} stopped answering ({type(exc).__name__}: {exc}); {fix}"


def exit_status(exc: BaseException) -> int:
    """2 for a usage error, an invalid setting, or an invalid data-set spec or option (an
    argument's value, not a file's content); 1 for any other error."""
    from pipeline.settings import SettingsError

    if isinstance(exc, UsageError | SettingsError):
        return 2
    # Looked up, not imported (seconds): its errors exist only once it is loaded.
    datasets = sys.modules.get("pipeline.data.datasets")
    return 2 if datasets is not None and isinstance(exc, datasets.DatasetSpecError) else 1


def fail(exc: BaseException, status: int | None = None, *, message: str | None = None) -> NoReturn:
    """End the command on ``exc``, an error it caught: under ``--debug`` raised again, for
    its traceback; else one ``error:`` line (``message``, default :func:`describe`'s) and
    exit status ``status`` (default :func:`exit_status`'s)."""
    if debug_enabled():
        raise exc
    typer.echo(f"error: {message or describe(exc)}", err=True)
    raise typer.Exit(exit_status(exc) if status is None else status) from None


class HelpGroup(TyperGroup):
    """A command group whose ``--help`` lists each command with the first sentence of its
    help, whole and wrapped (click cut it at the terminal's width with "..."). Its Typer
    app sets ``rich_markup_mode=None``: click's plain layout."""

    def format_commands(self, ctx: Any, formatter: Any) -> None:  # click's Context, HelpFormatter
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=sys.maxsize)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class RoadcastGroup(HelpGroup):
    """The command group: errors that escape a command become one ``error:`` line (exit
    status :func:`exit_status`), a usage error such as an invalid option value with
    ``--debug`` too."""

    def make_context(self, info_name: str | None, args: list[str], *a: Any, **kw: Any) -> Any:
        """The group's own options parsed (``--debug``, ``ROADCAST_DEBUG``); a usage error
        in them is one line too."""
        try:
            return super().make_context(info_name, args, *a, **kw)
        except NoArgsIsHelpError:
            raise
        except UsageError as exc:
            _usage_exit(exc, info_name or "roadcast")

    def invoke(self, ctx: Any) -> Any:  # typer.Context, typed as its vendored click base
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            _usage_exit(exc, ctx.command_path)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except BrokenPipeError:
            # Nothing more can be shown; later flushes of stdout must not fail either.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(1) from None
        except Exception as exc:
            fail(exc)


def _usage_exit(exc: UsageError, where: str) -> NoReturn:
    """Show a usage error as one ``error:`` line pointing at the command's ``--help``
    (``where``, unless the error names its own command) and end with status 2."""
    if exc.ctx is not None:
        where = exc.ctx.command_path
    message = exc.format_message().rstrip(".")
    typer.echo(f"error: {message} (see `{where} --help`)", err=True)
    raise typer.Exit(2) from None


class NoTraceback(logging.Filter):
    """Drops the traceback of Prefect's (and its task queue's) records, keeps the line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.name.startswith(("prefect", "docket")):
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_prefect_tracebacks() -> None:
    """Unless debugging, keep tracebacks out of Prefect's console log (call after
    importing prefect, which configures its handlers on the root logger)."""
    if debug_enabled():
        return
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, NoTraceback) for f in handler.filters):
            handler.addFilter(NoTraceback())


def load_prefect() -> None:
    """Import Prefect, turning invalid ``PREFECT_*`` settings into one ``error:`` line.

    Prefect's import prints a pydantic dump of invalid settings and carries on; the dump is
    held back here, and the settings' own error is shown by :func:`describe` instead.
    """
    import contextlib
    import io
    import sys

    if "prefect" in sys.modules:
        return
    held = io.StringIO()
    with contextlib.redirect_stderr(held):
        import prefect.settings
    try:
        prefect.settings.get_current_settings()
    except Exception as exc:
        if debug_enabled():
            sys.stderr.write(held.getvalue())
        fail(exc, 1)
    sys.stderr.write(held.getvalue())


def shield_temporary_server() -> None:
    """Start Prefect's temporary server (no ``PREFECT_API_URL``) in a session of its own,
    as the demo starts its broker and service: a terminal's Ctrl-C then reaches this
    command alone, which records its run as crashed on a server still answering and stops
    it, instead of retrying for minutes against a server the same Ctrl-C killed. The
    server still dies with this process (Linux), and Prefect stops it at exit."""
    import subprocess
    import types

    from prefect.server.api import server

    from pipeline.kafka.broker import dies_with_this_thread

    if isinstance(server.subprocess, types.SimpleNamespace):
        return

    def popen(*args: Any, **kwargs: Any) -> subprocess.Popen[Any]:
        kwargs.update(start_new_session=True, preexec_fn=dies_with_this_thread())
        return subprocess.Popen(*args, **kwargs)

    shielded = types.SimpleNamespace(**{**vars(subprocess), "Popen": popen})
    server.subprocess = shielded  # type: ignore[assignment]  # only the server's own module


def check_prefect_home() -> None:
    """Refuse, in one line, a ``PREFECT_HOME`` where Prefect's temporary server could not
    keep its database (it would fail after about 30 s with screens of tracebacks)."""
    import tempfile

    from prefect.settings import get_current_settings

    home = get_current_settings().home
    try:
        home.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=home):
            pass
    except OSError as exc:
        fail(
            exc,
            message=f"Prefect's temporary server cannot keep its database in PREFECT_HOME="
            f"{home} ({exc.strerror or exc}); set PREFECT_HOME to a writable folder, or "
            "PREFECT_API_URL to a running Prefect server",
        )
