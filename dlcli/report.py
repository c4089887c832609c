"""The report of many runs (a comparison, a sweep): one document written twice, as
report.md and as report.html, from the same blocks.

A `Report` is a title and a list of blocks: paragraphs, tables and figures (PNG files
in the report's folder). The Markdown links each figure's file; the HTML page is
self-contained: every figure inline as a base64 `data:image/png` URI, the CSS inline,
no script and nothing fetched, so the page opens offline, alone, mailed or archived.
It follows the reader's light or dark colour scheme. Every string a user supplied
(arm and experiment names, config values, error messages) is HTML-escaped, here and
only here: callers pass plain text. The ground floor: html and base64, no JAX.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import struct
from pathlib import Path

from dlcli.files import write_atomically

MARKDOWN, HTML = "report.md", "report.html"


@dataclasses.dataclass
class Paragraph:
    text: str


@dataclasses.dataclass
class Heading:
    text: str


@dataclasses.dataclass
class Table:
    """Rows of plain-text cells under `columns`; the columns named in `numeric` align right."""

    columns: list[str]
    rows: list[list[str]]
    numeric: frozenset[str] = frozenset()
    caption: str = ""


@dataclasses.dataclass
class Figure:
    """A PNG file of the report's folder, named by `file` relative to it."""

    file: str
    caption: str


class Report:
    """Blocks in reading order, written as Markdown and as one HTML page."""

    def __init__(self, title: str):
        self.title = title
        self.blocks: list[Paragraph | Heading | Table | Figure] = []

    def heading(self, text: str) -> None:
        self.blocks.append(Heading(text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(Paragraph(text))

    def table(self, columns: list[str], rows: list[list[str]], *, numeric=(), caption: str = "") -> None:
        self.blocks.append(Table(list(columns), [list(r) for r in rows], frozenset(numeric), caption))

    def figure(self, file: str, caption: str) -> None:
        self.blocks.append(Figure(file, caption))

    def write(self, folder: Path) -> None:
        """report.md and report.html in `folder`, which holds the figures' files."""
        write_atomically(folder / MARKDOWN, self.markdown())
        write_atomically(folder / HTML, self.html(folder))

    def markdown(self) -> str:
        lines = [f"# {self.title}", ""]
        for block in self.blocks:
            if isinstance(block, Heading):
                lines += [f"## {block.text}", ""]
            elif isinstance(block, Paragraph):
                lines += [block.text, ""]
            elif isinstance(block, Table):
                if block.caption:
                    lines += [block.caption, ""]
                lines.append("| " + " | ".join(_md_cell(c) for c in block.columns) + " |")
                lines.append("| " + " | ".join("---:" if c in block.numeric else "---" for c in block.columns) + " |")
                lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
                lines.append("")
            else:
                lines += [f"![{block.file}]({block.file})", "", f"*{_md_cell(block.caption)}*", ""]
        return "\n".join(lines)

    def html(self, folder: Path) -> str:
        """The page, its figures read from `folder` and inlined."""
        body = [f"<h1>{_e(self.title)}</h1>"]
        for block in self.blocks:
            if isinstance(block, Heading):
                body.append(f"<h2>{_e(block.text)}</h2>")
            elif isinstance(block, Paragraph):
                body.append(f"<p>{_e(block.text)}</p>")
            elif isinstance(block, Table):
                body.append(_html_table(block))
            else:
                body.append(_html_figure(folder / block.file, block.caption))
        return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
                f'<meta name="color-scheme" content="light dark">\n<title>{_e(self.title)}</title>\n'
                f"<style>{STYLE}</style>\n</head>\n<body>\n<main>\n" + "\n".join(body) + "\n</main>\n</body>\n</html>\n")


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


def _md_cell(text: str) -> str:
    """A table cell or alt text on one Markdown line: pipes escaped, line breaks as spaces."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _html_table(table: Table) -> str:
    def cell(tag: str, column: str, text: str) -> str:
        return f'<{tag} class="num">{_e(text)}</{tag}>' if column in table.numeric else f"<{tag}>{_e(text)}</{tag}>"

    head = "".join(cell("th", c, c) for c in table.columns)
    rows = "\n".join("<tr>" + "".join(cell("td", c, v) for c, v in zip(table.columns, row)) + "</tr>"
                     for row in table.rows)
    caption = f"<caption>{_e(table.caption)}</caption>" if table.caption else ""
    return f'<div class="scroll"><table>{caption}<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody></table></div>'


FRAME_PX = 9  # a figure's padding and border on each side (STYLE)


def _html_figure(path: Path, caption: str) -> str:
    """The PNG at `path` inline as a data: URI, with its pixel size (so the page lays out
    before it decodes) and its caption as alt text."""
    data = path.read_bytes()
    size = frame = ""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        size = f' width="{width}" height="{height}"'
        frame = f' style="width: {width + 2 * FRAME_PX}px"'  # the caption wraps at the plot's width
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return (f'<figure{frame}><img src="{uri}" alt="{_e(caption)}"{size}>'
            f"<figcaption>{_e(caption)} ({_e(path.name)})</figcaption></figure>")


# Light by default, dark when the reader's system asks for it; plots keep their white
# background, framed as cards, in both.
STYLE = """
:root { color-scheme: light dark; --fg: #1d2026; --bg: #ffffff; --muted: #5b6270; --line: #d8dce3;
        --stripe: #f4f6f9; --head: #eaedf2; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e4e7ec; --bg: #15181d; --muted: #a1a8b5; --line: #3a404b; --stripe: #1d2128; --head: #262b34; }
}
html { background: var(--bg); color: var(--fg); }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 20px 48px; }
h1 { font-size: 1.6em; margin: 0 0 0.6em; }
h2 { font-size: 1.2em; margin: 1.6em 0 0.5em; border-bottom: 1px solid var(--line); padding-bottom: 0.2em; }
p { max-width: 80ch; }
.scroll { overflow-x: auto; margin: 0.8em 0; }
table { border-collapse: collapse; font-size: 0.92em; }
caption { text-align: left; color: var(--muted); padding-bottom: 0.3em; }
th, td { border: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: var(--head); }
tbody tr:nth-child(even) { background: var(--stripe); }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
figure { display: inline-block; vertical-align: top; margin: 12px 12px 12px 0; padding: 8px; background: #ffffff;
         border: 1px solid var(--line); border-radius: 6px; max-width: 100%; box-sizing: border-box; }
figure img { display: block; max-width: 100%; height: auto; }
figcaption { color: #4a505c; font-size: 0.88em; padding-top: 4px; }
"""
