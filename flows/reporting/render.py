"""The report rendered: one self-contained HTML page (PNG figures embedded as base64), its
Markdown twin with the figures as files next to it, the Markdown of a Prefect artifact
(figures named by path: the artifact store is no place for images), and the comparison
table as artifact records."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from pathlib import Path

from flows.reporting.build import Report
from flows.reporting.tables import Table
from flows.reporting.text import markdown_table, markdown_text


def _table_md(table: Table) -> list[str]:
    parts = [f"## {markdown_text(table.title)}", "", markdown_table(table.columns, table.rows), ""]
    if table.note:
        parts += [markdown_text(table.note), ""]
    return parts


def render_markdown(report: Report, figure_files: Mapping[str, str] | None = None) -> str:
    """The report as Markdown; ``figure_files`` maps figure names to (relative) PNG paths.

    Without ``figure_files`` the figures are listed by title only (artifact form). Every
    text is escaped (:func:`markdown_text`): ids and file names render as written.
    """
    parts = [f"# {markdown_text(report.title)}", ""]
    parts += [f"- **{markdown_text(k)}**: {markdown_text(v)}" for k, v in report.facts]
    parts += ["", markdown_text(report.intro), ""]
    parts += _table_md(report.comparison)
    if report.reference is not None:
        parts += _table_md(report.reference)
    for figure in report.figures:
        parts += [f"## {markdown_text(figure.title)}", ""]
        if figure_files is not None and figure.name in figure_files:
            parts += [f"![{figure.name}]({figure_files[figure.name]})", ""]
        parts += [markdown_text(figure.caption), ""]
    for table in report.tables:
        parts += _table_md(table)
    for note in report.notes:
        parts += [f"_{markdown_text(note)}_", ""]
    parts += ["## What produced this report", ""]
    parts += [markdown_table(["what", "value"], [[k, v] for k, v in report.provenance]), ""]
    return "\n".join(parts)


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;background:#f6f7f9;
color:#1d2330}
main{max-width:1180px;margin:0 auto;padding:24px 32px 48px;background:#fff}
h1{font-size:24px;margin:8px 0 12px}h2{font-size:18px;margin:28px 0 8px;
border-bottom:1px solid #e3e6eb;padding-bottom:4px}
ul.facts{list-style:none;padding:0;display:grid;grid-template-columns:repeat(auto-fill,
minmax(330px,1fr));gap:4px 24px;font-size:14px}
ul.facts b{color:#55607a;font-weight:600}
p{font-size:14px;line-height:1.45}p.note{color:#55607a;font-size:12.5px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0}
td,th{border:1px solid #d5d9e0;padding:3px 7px;text-align:right;white-space:nowrap}
span.sd{color:#6b7487;font-size:11px}
th{background:#eef1f5}td:first-child,th:first-child{text-align:left}
th.group{text-align:center}table.left td,table.left th{text-align:left;white-space:normal}
tr.champion td{background:#eaf5ea;font-weight:600}
img{max-width:100%;height:auto;border:1px solid #eceef2}
figure{margin:8px 0 0}figcaption{font-size:13px;color:#55607a;margin-top:4px}
"""


def _header_html(table: Table) -> str:
    if not table.groups:
        return "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in table.columns) + "</tr>"
    top, bottom, at = [], [], 0
    for label, span in table.groups:
        names = table.columns[at : at + span]
        at += span
        if not label:
            top += [f"<th rowspan='2'>{html.escape(n)}</th>" for n in names]
            continue
        top.append(f"<th colspan='{span}' class='group'>{html.escape(label)}</th>")
        bottom += [f"<th>{html.escape(n.removeprefix(label).strip())}</th>" for n in names]
    return f"<tr>{''.join(top)}</tr><tr>{''.join(bottom)}</tr>"


def _cell_html(text: str) -> str:
    """``"5.339 ± 0.012"`` -> the mean with the std below it in small type (narrow columns)."""
    mean, sep, std = text.partition(" ± ")
    if not sep:
        return html.escape(text)
    return f"{html.escape(mean)}<br><span class='sd'>± {html.escape(std)}</span>"


def _table_html(table: Table, *, highlight: str | None = None) -> str:
    body = []
    for row in table.rows:
        cls = " class='champion'" if highlight is not None and row and row[0] == highlight else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{_cell_html(v)}</td>" for v in row) + "</tr>")
    style = " class='left'" if table.align_left else ""
    parts = [
        f"<h2>{html.escape(table.title)}</h2>",
        f"<div class='scroll'><table{style}><thead>{_header_html(table)}</thead>"
        f"<tbody>{''.join(body)}</tbody></table></div>",
    ]
    if table.note:
        parts.append(f"<p class='note'>{html.escape(table.note)}</p>")
    return "\n".join(parts)


def render_html(report: Report) -> str:
    """The report as one self-contained HTML page (figures embedded as base64 PNG)."""
    champion = dict(report.facts).get("champion")
    facts = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in report.facts)
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{html.escape(report.title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{html.escape(report.title)}</h1><ul class='facts'>{facts}</ul>",
        f"<p>{html.escape(report.intro)}</p>",
        _table_html(report.comparison, highlight=champion),
    ]
    if report.reference is not None:
        parts.append(_table_html(report.reference))
    for figure in report.figures:
        encoded = base64.b64encode(figure.png).decode("ascii")
        parts += [
            f"<h2>{html.escape(figure.title)}</h2>",
            f"<figure><img alt='{html.escape(figure.name)}' src='data:image/png;base64,{encoded}'>",
            f"<figcaption>{html.escape(figure.caption)}</figcaption></figure>",
        ]
    parts += [_table_html(t) for t in report.tables]
    parts += [f"<p class='note'>{html.escape(n)}</p>" for n in report.notes]
    provenance = Table(
        "What produced this report",
        ["what", "value"],
        [[k, v] for k, v in report.provenance],
        align_left=True,
    )
    parts += [_table_html(provenance), "</main></body></html>"]
    return "\n".join(parts)


def write_report(out: str | Path, report: Report) -> tuple[Path, Path]:
    """Write ``out/report.html``, ``out/report.md`` and ``out/figures/<name>.png``."""
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    files = {}
    for figure in report.figures:
        (out / "figures" / f"{figure.name}.png").write_bytes(figure.png)
        files[figure.name] = f"figures/{figure.name}.png"
    md = out / "report.md"
    md.write_text(render_markdown(report, files))
    page = out / "report.html"
    page.write_text(render_html(report))
    return md, page


def artifact_markdown(report: Report, html_path: str | Path | None) -> str:
    """The Markdown twin for a Prefect artifact: every table and caption; the figures are
    in the HTML page named here."""
    text = render_markdown(report)
    if html_path is not None:
        text += f"\nFigures: open {markdown_text(html_path)} (self-contained HTML).\n"
    return text


def comparison_records(report: Report) -> list[dict[str, str]]:
    """The comparison table (and the published reference rows) as artifact records."""
    columns = report.comparison.columns
    records = [dict(zip(columns, row, strict=True)) for row in report.comparison.rows]
    if report.reference is not None:
        for row in report.reference.rows:
            given = dict(zip(report.reference.columns, row, strict=True))
            records.append({c: given.get(c, "") for c in columns})
    return records
