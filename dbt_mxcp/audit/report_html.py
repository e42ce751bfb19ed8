"""`dbt-mxcp log --html`: the usage stats as one self-contained HTML file (inline CSS and SVG, no script).

Callers, endpoint names and error messages come from clients, so every value is escaped.
"""

from __future__ import annotations

from html import escape

from .stats import USAGE_HEADERS, Reason, Stats, Usage, usage_row

COLOURS = {"ok": "#3b82f6", "denied": "#f59e0b", "errors": "#dc2626"}
CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#1f2937;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em}
table{border-collapse:collapse;width:100%}th,td{padding:.3em .6em;border-bottom:1px solid #e5e7eb;text-align:right}
th:first-child,td:first-child{text-align:left;word-break:break-all}th{background:#f9fafb}
.cards{display:flex;gap:1em;flex-wrap:wrap}.card{border:1px solid #e5e7eb;border-radius:6px;padding:.6em 1em}
.card b{display:block;font-size:1.4em}.legend span{margin-right:1em}.muted{color:#6b7280}
svg text{font:11px system-ui,sans-serif;fill:#374151}
"""
_SEGMENTS = ("ok", "denied", "errors")


def _legend() -> str:
    return '<p class="legend">' + "".join(
        f'<span><svg width="10" height="10"><rect width="10" height="10" fill="{c}"/></svg> {k}</span>'
        for k, c in COLOURS.items()) + "</p>"


def _timeline_svg(stats: Stats) -> str:
    """Vertical stacked bars, one per hour or day."""
    if not stats.timeline:  # no record had a readable time
        return '<p class="muted">No call times to chart.</p>'
    width, height, pad = 1000, 200, 30
    peak = max((b.calls for b in stats.timeline), default=0) or 1
    slot = (width - 2 * pad) / max(len(stats.timeline), 1)
    parts = []
    for i, b in enumerate(stats.timeline):
        y = float(height - pad)
        for kind, count in (("ok", b.calls - b.denied - b.errors), ("denied", b.denied), ("errors", b.errors)):
            h = count / peak * (height - 2 * pad)
            y -= h
            if count:
                parts.append(f'<rect x="{pad + i * slot:.1f}" y="{y:.1f}" width="{max(slot - 1, 1):.1f}" '
                             f'height="{h:.1f}" fill="{COLOURS[kind]}"><title>{escape(b.start)}: {count} '
                             f'{kind}</title></rect>')
    first, last = escape(stats.timeline[0].start), escape(stats.timeline[-1].start)
    parts.append(f'<text x="{pad}" y="{height - 10}">{first}</text>'
                 f'<text x="{width - pad}" y="{height - 10}" text-anchor="end">{last}</text>'
                 f'<text x="{pad - 4}" y="{pad}" text-anchor="end">{peak}</text>'
                 f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#9ca3af"/>')
    return (f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="calls per '
            f'{escape(stats.bucket)}">{"".join(parts)}</svg>')


def _bars_svg(usages: list[Usage]) -> str:
    """Horizontal stacked bars, one per endpoint: ok, denied, errors."""
    width, row, label = 1000, 22, 320
    peak = max((u.calls for u in usages), default=0) or 1
    parts = []
    for i, u in enumerate(usages):
        y = i * row
        parts.append(f'<text x="{label - 6}" y="{y + 15}" text-anchor="end">{escape(u.name[:48])}</text>')
        x = float(label)
        for kind, count in zip(_SEGMENTS, (u.ok, u.denied, u.errors), strict=True):
            w = count / peak * (width - label - 60)
            if count:
                parts.append(f'<rect x="{x:.1f}" y="{y + 4}" width="{w:.1f}" height="{row - 8}" '
                             f'fill="{COLOURS[kind]}"><title>{escape(u.name)}: {count} {kind}</title></rect>')
            x += w
        parts.append(f'<text x="{x + 6:.1f}" y="{y + 15}">{u.calls}</text>')
    return (f'<svg viewBox="0 0 {width} {len(usages) * row}" width="100%" role="img" '
            f'aria-label="calls per endpoint">{"".join(parts)}</svg>')


def _table(title: str, usages: list[Usage]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in [title, *USAGE_HEADERS])
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in [u.name, *usage_row(u)]) + "</tr>"
                   for u in usages)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _reasons(title: str, reasons: list[Reason]) -> str:
    if not reasons:
        return f"<h2>{escape(title)}</h2><p class=\"muted\">None.</p>"
    rows = "".join(f"<tr><td>{escape(r.reason)}</td><td>{r.count}</td></tr>" for r in reasons)
    return f"<h2>{escape(title)}</h2><table><thead><tr><th>reason</th><th>calls</th></tr></thead>{rows}</table>"


def render(stats: Stats, title: str) -> str:
    """The report as one HTML document."""
    t = stats.totals
    head = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{CSS}</style></head><body><h1>{escape(title)}</h1>")
    if not t.calls:
        return head + '<p class="muted">No calls recorded for this period and these filters.</p></body></html>'
    cards = "".join(f'<div class="card"><b>{escape(v)}</b>{escape(k)}</div>'
                    for k, v in zip(USAGE_HEADERS[:-1], usage_row(t)[:-1], strict=True))
    return "".join([
        head,
        f'<p class="muted">{escape(stats.first or "")} to {escape(stats.last or "")} (UTC)</p>',
        f'<div class="cards">{cards}</div>',
        f"<h2>Calls per {escape(stats.bucket)}</h2>", _legend(), _timeline_svg(stats),
        "<h2>Endpoints</h2>", _bars_svg(stats.endpoints), _table("endpoint", stats.endpoints),
        "<h2>Callers</h2>", _table("caller", stats.callers),
        _reasons("Denials", stats.denials), _reasons("Errors", stats.errors),
        "</body></html>\n",
    ])
