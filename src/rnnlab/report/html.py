"""Self-contained HTML pages: every plot is embedded as a PNG data URI, no scripts, no network.

Used by every command that writes a ``report.html`` (training runs, ``rnnlab demo``). This module
renders plain data (sections of HTML, rows, matplotlib figures) and imports nothing else of rnnlab.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; line-height: 1.45; padding: 0 1em; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { margin-top: 2em; border-bottom: 1px solid #eee; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; }
.note { color: #555; font-size: .9em; }
.reading { background: #f7f9fc; border-left: 4px solid #4a78c2; padding: .6em 1em; }
code, pre { background: #f6f6f6; padding: 0 .2em; }
"""


@dataclass
class ReportSection:
    """One titled part of a report page."""

    title: str
    html: str                               # an HTML fragment; images embedded as data: URIs


def escape(text: object) -> str:
    return html.escape(str(text))


def figure_to_img(fig, alt: str = "plot", dpi: int = 110) -> str:
    """Render a matplotlib figure to an ``<img>`` tag holding a base64 PNG, then close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def score_cell(v: float) -> str:
    """A score as plain-text tables print it, in at most 10 characters: 4 decimals below 10,000,
    4 significant digits from there (2.202e+04); "-" when undefined (NaN), as :func:`table` shows it."""
    if math.isnan(v):
        return "-"
    return f"{v:.4f}" if abs(v) < 1e4 else f"{v:.4g}"


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """An HTML table; floats are shown with 4 significant digits, "-" where undefined (NaN)."""

    def cell(v: object) -> str:
        if isinstance(v, float):
            return "-" if math.isnan(v) else escape(f"{v:.4g}")
        return escape(v)

    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_page(title: str, sections: Sequence[ReportSection], subtitle: str = "") -> str:
    """A whole HTML document from sections (each an already-built HTML fragment)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
    ]
    if subtitle:
        parts.append(f'<p class="note">{escape(subtitle)}</p>')
    for s in sections:
        parts.append(f"<h2>{escape(s.title)}</h2>\n{s.html}")
    parts.append("</body></html>")
    return "\n".join(parts)


def matplotlib_agg() -> None:
    """Select the non-interactive backend (no display on servers and in CI)."""
    import matplotlib   # lazy: only pages with figures pay for matplotlib

    matplotlib.use("Agg", force=True)


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive backend."""
    matplotlib_agg()
    import matplotlib.pyplot as plt   # lazy: pyplot is slow to import, and only figures need it

    return plt
