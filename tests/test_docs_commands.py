"""Every command the README and docs/*.md cite still parses, and the README's headline
numbers match the JSON they cite.

Commands are read from fenced and indented code blocks and from inline backticks
(continued lines joined). Each ``roadcast ...`` command is checked against the real Click
command tree (subcommands and ``--options``), each ``python -m benchmarks[.NAME] ...``
against the benchmark's own ``argparse`` parser (captured before it parses anything, so
nothing runs) and each ``make TARGET`` against the Makefile. Positional arguments are not
checked: the docs write them as placeholders (``DIR``, ``SPEC``, ``N``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.core import TyperGroup, TyperOption

from flows.cli import app

REPO = Path(__file__).resolve().parents[1]
DOCS = (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")))
RESULTS = REPO / "benchmarks" / "results"

_FENCE = re.compile(r"^ {0,3}```[^\n]*\n(.*?)^ {0,3}```[ \t]*$", re.M | re.S)
_INLINE = re.compile(r"(`+)(.+?)\1", re.S)
_ROADCAST = re.compile(r"^(?:\S*/)?roadcast$")
_BENCH = re.compile(r"^benchmarks(?:\.(\w+))?$")


@dataclass(frozen=True)
class Cited:
    """One command as a doc cites it: its words and where it is."""

    doc: str
    line: int
    words: tuple[str, ...]

    def where(self) -> str:
        return f"{self.doc}:{self.line}: {' '.join(self.words)}"


def _indented_blocks(text: str) -> Iterator[tuple[int, str]]:
    """Markdown's indented code blocks (4 spaces after a blank line), outside lists."""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        starts_block = (
            lines[i].startswith("    ")
            and lines[i].strip()
            and (i == 0 or not lines[i - 1].strip())
            and not lines[i].lstrip().startswith(("-", "*", "|"))
        )
        if not starts_block:
            i += 1
            continue
        start = i
        block = []
        while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
            block.append(lines[i][4:])
            i += 1
        yield start, "\n".join(block)


def _blank_out(text: str, start: int, end: int) -> str:
    """``text`` with ``[start, end)`` replaced by spaces, newlines kept (line numbers hold)."""
    return text[:start] + re.sub(r"[^\n]", " ", text[start:end]) + text[end:]


def _shell_lines(block: str) -> Iterator[tuple[int, str]]:
    """The block's command lines, continued lines joined, comments cut."""
    block = re.sub(r"\\\n", "", block)
    for offset, line in enumerate(block.split("\n")):
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if line:
            yield offset, line


def _words(snippet: str) -> list[str]:
    snippet = snippet.replace("\\|", "|")
    try:
        words = shlex.split(snippet)
    except ValueError:
        words = snippet.split()
    return words


def _snippets(path: Path) -> Iterator[tuple[int, str]]:
    """(line, text) of every code block line and every inline code span of a doc."""
    text = path.read_text()
    for match in _FENCE.finditer(text):
        first = text.count("\n", 0, match.start(1)) + 1
        for offset, line in _shell_lines(match.group(1)):
            yield first + offset, line
    for match in reversed(list(_FENCE.finditer(text))):
        text = _blank_out(text, match.start(), match.end())
    for start, block in _indented_blocks(text):
        if any(w in block for w in ("roadcast ", "python -m benchmarks", "make ")):
            for offset, line in _shell_lines(block):
                yield start + 1 + offset, line
    for match in _INLINE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        yield line, " ".join(match.group(2).split())


def _split_commands(words: list[str]) -> Iterator[list[str]]:
    """Cut a line at shell separators; ``a | b`` gives two commands."""
    current: list[str] = []
    for word in words:
        if word in ("|", "||", "&&", ";", "&"):
            if current:
                yield current
            current = []
        else:
            current.append(word)
    if current:
        yield current


def cited_commands(program: str) -> list[Cited]:
    """Every ``roadcast``, ``benchmarks`` (``python -m``) or ``make`` command the docs cite."""
    found: dict[tuple[str, tuple[str, ...]], Cited] = {}
    for path in DOCS:
        doc = str(path.relative_to(REPO))
        for line, snippet in _snippets(path):
            for words in _split_commands(_words(snippet)):
                for i, word in enumerate(words):
                    nxt = words[i + 1 :]
                    if program == "roadcast" and _ROADCAST.match(word):
                        if (nxt and _ROADCAST.match(nxt[0])) or words[i - 1 : i] == ["--rm"]:
                            continue  # `docker compose run --rm roadcast CMD`: a service name
                        cmd = (word, *nxt)
                    elif program == "benchmarks" and i >= 1 and words[i - 1] == "-m":
                        if not _BENCH.match(word) or words[i - 2 : i - 1] == ["-m"]:
                            continue
                        cmd = (word, *nxt)
                    elif program == "make" and word == "make" and i == 0 and nxt:
                        cmd = (word, *nxt)
                    else:
                        continue
                    found.setdefault((doc, cmd), Cited(doc, line, cmd))
    return list(found.values())


def _option_names(command: Any) -> set[str]:
    names = {"--help"}
    for param in command.params:
        if isinstance(param, TyperOption):
            names.update(param.opts)
            names.update(param.secondary_opts)
    return names


def _options_in(word: str) -> list[str]:
    """The ``--options`` a usage word names: ``[--a``, ``--b=V``, ``X|--c]``."""
    out = []
    for part in word.split("|"):
        part = part.strip("[]()").split("=", 1)[0]
        if re.fullmatch(r"--[a-z0-9][a-z0-9-]*", part):
            out.append(part)
    return out


def _is_placeholder(word: str) -> bool:
    return word.startswith(("[", "<", "$")) or word in ("...", "/") or word != word.lower()


def check_roadcast(cited: Cited, root: TyperGroup) -> list[str]:
    """What in one ``roadcast ...`` command the real CLI would refuse."""
    problems = []
    chain: list[Any] = [root]
    alternatives = False
    for word in cited.words[1:]:
        command = chain[-1]
        if word == "/":
            alternatives = True
            continue
        options = _options_in(word)
        if options:
            known = _option_names(command) | _option_names(root)
            problems += [
                f"{cited.where()}\n  `{' '.join(c.name or 'roadcast' for c in chain)}` "
                f"has no option {o}"
                for o in options
                if o not in known
            ]
            continue
        word = word.rstrip(":,.")
        if _is_placeholder(word) or not re.fullmatch(r"[a-z][a-z-]*", word):
            continue
        groups = [c for c in chain if isinstance(c, TyperGroup)]
        if alternatives and len(groups) > 1:
            parent = groups[-2] if groups[-1] is command else groups[-1]
            if word in parent.commands:
                chain = [*chain[: chain.index(parent) + 1], parent.commands[word]]
                alternatives = False
                continue
        alternatives = False
        if isinstance(command, TyperGroup):
            if word in command.commands:
                chain.append(command.commands[word])
            elif len(chain) == 1 or not command.invoke_without_command:
                names = ", ".join(sorted(command.commands))
                problems.append(f"{cited.where()}\n  no subcommand {word!r} (have: {names})")
                break
    return problems


def _benchmark_parser(module_name: str, monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    """The parser a benchmark's ``main`` builds, taken at its first ``parse_args``."""

    class Built(Exception):
        def __init__(self, parser: argparse.ArgumentParser) -> None:
            self.parser = parser

    def capture(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        raise Built(self)

    module = importlib.import_module(module_name)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
    try:
        module.main([])
    except Built as built:
        return built.parser
    finally:
        monkeypatch.undo()
    raise AssertionError(f"{module_name}.main() never parsed its arguments")


def check_benchmark(cited: Cited, parser: argparse.ArgumentParser) -> list[str]:
    known = set(parser._option_string_actions)
    return [
        f"{cited.where()}\n  `python -m {cited.words[0]}` has no option {option}"
        for word in cited.words[1:]
        for option in _options_in(word)
        if option not in known
    ]


def makefile_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", text, re.M))


# -- tests -------------------------------------------------------------------------


def test_docs_cite_commands() -> None:
    """The extraction itself finds the commands (a broken regex would pass everything)."""
    roadcast = {c.words[1] for c in cited_commands("roadcast") if len(c.words) > 1}
    assert {"demo", "train", "serve", "models", "deploy", "data"} <= roadcast
    assert len({c.words[0] for c in cited_commands("benchmarks")}) >= 10
    assert {c.words[1] for c in cited_commands("make")} >= {"demo", "test"}


def test_roadcast_commands_in_docs_parse() -> None:
    root = typer.main.get_command(app)
    assert isinstance(root, TyperGroup)
    problems = [p for cited in cited_commands("roadcast") for p in check_roadcast(cited, root)]
    assert not problems, "\n".join(problems)


def test_benchmark_commands_in_docs_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    problems = []
    parsers: dict[str, argparse.ArgumentParser] = {}
    for cited in cited_commands("benchmarks"):
        name = cited.words[0]
        if name not in parsers:
            if importlib.util.find_spec(name) is None:
                problems.append(f"{cited.where()}\n  no module {name}")
                continue
            parsers[name] = _benchmark_parser(name, monkeypatch)
        problems += check_benchmark(cited, parsers[name])
    assert not problems, "\n".join(problems)


def test_make_targets_in_docs_exist() -> None:
    targets = makefile_targets()
    problems = [
        f"{c.where()}\n  no Makefile target {c.words[1]!r}"
        for c in cited_commands("make")
        if "=" not in c.words[1] and c.words[1] not in targets
    ]
    assert not problems, "\n".join(problems)


def test_readme_starts_with_make_demo_and_make_test() -> None:
    head = (REPO / "README.md").read_text().split("\n")[:8]
    assert any(line.startswith("make demo") for line in head), head
    assert any(line.startswith("make test") for line in head), head


def test_serve_option_table_names_real_options() -> None:
    """The README's table of ``roadcast serve``'s tick options names real options."""
    root = typer.main.get_command(app)
    assert isinstance(root, TyperGroup)
    serve = _option_names(root.commands["serve"])
    text = (REPO / "README.md").read_text()
    table = text.split("When `roadcast serve` closes a tick", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(--[a-z-]+)` \|", table, re.M)
    assert rows, "the table of serve's options is gone"
    assert set(rows) <= serve, sorted(set(rows) - serve)


# Options the docs name for other programs (docker build, pytest).
_FOREIGN_OPTIONS = {"--build-arg", "--noconftest"}


def test_loose_options_in_docs_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    """A code span that is only options (```--epochs 40 --candidates none```) names options
    of some ``roadcast`` command or benchmark."""
    root = typer.main.get_command(app)
    known = set(_FOREIGN_OPTIONS)
    stack: list[Any] = [root]
    while stack:
        command = stack.pop()
        known |= _option_names(command)
        stack += list(getattr(command, "commands", {}).values())
    from benchmarks.__main__ import BENCHMARKS

    extra = {c.words[0].removeprefix("benchmarks.") for c in cited_commands("benchmarks")}
    for name in sorted((set(BENCHMARKS) | extra) - {"benchmarks"}):
        known |= set(_benchmark_parser(f"benchmarks.{name}", monkeypatch)._option_string_actions)
    problems = [
        f"{path.relative_to(REPO)}:{line}: {snippet}\n  no command has option {option}"
        for path in DOCS
        for line, snippet in _snippets(path)
        if snippet.startswith("--")
        for word in _words(snippet)
        for option in _options_in(word)
        if option not in known
    ]
    assert not problems, "\n".join(problems)


def _result(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((RESULTS / name).read_text())
    return data


_WORDS = {3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}


def _r(value: float, places: int) -> str:
    """``value`` to ``places`` decimals, halves rounded up (as the docs round)."""
    exponent = Decimal(1).scaleb(-places)
    return str(Decimal(str(value)).quantize(exponent, rounding=ROUND_HALF_UP))


def _readme_headlines() -> list[tuple[str, str]]:
    """(JSON, the text the README must hold) for each headline number, from the JSON."""
    out: list[tuple[str, str]] = []
    fa = _result("forecast_accuracy.json")["metrics"]
    names = {"persistence": "persistence", "ar": "AR(p)", "lstm": "LSTM", "tgclstm": "TGC-LSTM"}
    for model, label in names.items():
        pooled = fa["models"][model]["pooled"]
        out.append(
            (
                "forecast_accuracy.json",
                f"{label} {pooled['3']['rmse']:.2f} / {pooled['12']['rmse']:.2f}",
            )
        )
    regret = fa["regret"]
    out.append(
        (
            "forecast_accuracy.json",
            f"regret {regret['3']['regret']:.3f} / {regret['12']['regret']:.3f}",
        )
    )
    for model in ("lstm", "tgclstm"):
        out.append(("forecast_accuracy.json", f"{fa['models'][model]['fit_seconds']:.0f} s"))

    loco = _result("anomaly.json")["nab"]["loco"]["ensemble"]["plain"]
    for category, score in loco["per_category"].items():
        out.append(("anomaly.json", f"{category} {_r(score, 1)}"))
    out.append(("anomaly.json", f"mean {_r(loco['mean_of_categories'], 1)}"))

    alerts = _result("simulated_alerts.json")
    found = sum(seed["incidents_found"] for seed in alerts["seeds"])
    pooled = alerts["pooled"]
    out.append(("simulated_alerts.json", f"found {found} of {pooled['incidents']} incidents"))
    out.append(("simulated_alerts.json", f"(recall {pooled['incident_recall']:.3f})"))
    out.append(("simulated_alerts.json", f"precision {pooled['precision_single']:.3f}"))
    out.append(("simulated_alerts.json", f"on {_WORDS.get(len(alerts['seeds']), '?')} test seeds"))

    rate = next(r for r in _result("alert_rate.json")["results"] if r["service_default"])
    out.append(
        ("alert_rate.json", f"ratio {rate['ratio_to_alpha']:.2f} at p {rate['alert_pvalue']}")
    )

    startup = _result("startup.json")
    out.append(
        (
            "startup.json",
            f"took {startup['first_forecast_median_s']:.1f} s (median of {startup['repeats']})",
        )
    )

    runs = {run["sensors"]: run["service"] for run in _result("scale.json")["runs"]}
    rates = [f"{round(runs[n]['catch_up_readings_per_s'], -2):,.0f}" for n in (2000, 8600, 20000)]
    out.append(
        (
            "scale.json",
            f"{rates[0]} readings/s at 2,000 sensors, {rates[1]}/s at 8,600 "
            f"and {rates[2]}/s at 20,000",
        )
    )
    out.append(
        ("scale.json", f"a tick of 20,000 sensors in {runs[20000]['catch_up_s_per_tick']:.1f} s")
    )
    latency = [
        f"{runs[n]['latency_ms']['p50'] / 1000:.2f} / {runs[n]['latency_ms']['p99'] / 1000:.2f} s"
        for n in (2000, 8600, 20000)
    ]
    out += [("scale.json", text) for text in latency]
    ticks = sorted(runs[n]["latency_ticks"] for n in (2000, 8600, 20000))
    span = str(ticks[0]) if ticks[0] == ticks[-1] else f"{ticks[0]}-{ticks[-1]}"
    out.append(("scale.json", f"{span} paced ticks"))
    memory = ", ".join(f"{runs[n]['service_peak_rss_mb'] / 1000:.1f}" for n in (2000, 8600))
    out.append(("scale.json", f"{memory} and {runs[20000]['service_peak_rss_mb'] / 1000:.1f} GB"))

    v1, v2 = (_result("wire.json")["runs"]["207"]["encoder"][w] for w in ("v1", "v2"))
    out.append(
        (
            "wire.json",
            f"{v2['bytes'] / 1000:.0f} KB a tick instead of {v1['records'] * 6:,} "
            f"of {v1['bytes'] / v1['records']:.0f} bytes",
        )
    )
    return out


@pytest.mark.parametrize(("source", "expected"), _readme_headlines())
def test_readme_headline_numbers_match_their_json(source: str, expected: str) -> None:
    """A rerun that changes a JSON fails here until the README says the new number."""
    readme = " ".join((REPO / "README.md").read_text().split())
    assert expected in readme, f"README.md should say {expected!r} (benchmarks/results/{source})"
