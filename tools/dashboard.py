#!/usr/bin/env python
"""Render the Grafana dashboard's panels from a live Prometheus to one PNG (no Grafana needed).

Reads ``monitoring/grafana/dashboards/pos-risk.json``, runs every panel's queries against the
Prometheus HTTP API (``query_range`` for time series and heatmaps, ``query`` for stats and
the pie) with Grafana's ``$__rate_interval`` / ``$__range`` / ``$__interval`` substituted, and
draws each panel at its grid position: lines with the panel's threshold lines, the risk-level
pie, the score heatmap (cumulative buckets turned into per-bucket counts, as Grafana does),
and stat tiles. It is a preview of what an operator would see, not a Grafana replacement.

    python -m tools.dashboard --prometheus-url http://127.0.0.1:9090 --minutes 30 \\
        --out var/dashboard.png
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tools import REPO

DEFAULT_DASHBOARD = REPO / "monitoring" / "grafana" / "dashboards" / "pos-risk.json"
GRID_COLUMNS = 24
RISK_COLORS = {"Low Risk": "#56a64b", "Medium Risk": "#ff9830", "High Risk": "#e02f44"}
GRAFANA_COLORS = {
    "red": "#e02f44",
    "green": "#56a64b",
    "orange": "#ff9830",
    "blue": "#3274d9",
    "transparent": None,
}


class RenderError(RuntimeError):
    """Prometheus could not be queried, or the dashboard file is unusable."""


# ---------------------------------------------------------------- pure helpers


def duration(seconds: float) -> str:
    """A PromQL duration literal for a whole number of seconds (at least 1s)."""
    return f"{max(1, math.ceil(seconds))}s"


def substitute_variables(expr: str, *, range_s: float, step_s: float, scrape_s: float) -> str:
    """Replace Grafana's built-in interval variables the way Grafana does.

    ``$__rate_interval`` = max(``$__interval`` + scrape interval, 4 x scrape interval).
    """
    rate_interval = max(step_s + scrape_s, 4 * scrape_s)
    for name, value in (
        ("__rate_interval", duration(rate_interval)),
        ("__range", duration(range_s)),
        ("__interval", duration(step_s)),
    ):
        expr = re.sub(r"\$\{" + name + r"\}|\$" + name + r"\b", value, expr)
    return expr


def legend(fmt: str, labels: Mapping[str, str]) -> str:
    """Apply a Grafana legend format (``{{label}}`` placeholders)."""
    if not fmt:
        return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: str(labels.get(m.group(1), "")), fmt)


def decumulate(upper_bounds: Sequence[float], cumulative: Sequence[float]) -> list[float]:
    """Per-bucket counts from Prometheus' cumulative ``le`` buckets (sorted by bound)."""
    counts, previous = [], 0.0
    for _, value in sorted(zip(upper_bounds, cumulative, strict=True)):
        counts.append(max(0.0, value - previous))
        previous = value
    return counts


def unit_scale(unit: str | None) -> tuple[float, str]:
    """Multiplier and axis label for a Grafana unit."""
    return {
        "s": (1000.0, "ms"),
        "percentunit": (100.0, "%"),
        "reqps": (1.0, "req/s"),
    }.get(unit or "", (1.0, ""))


def format_value(value: float, unit: str | None, decimals: int | None) -> str:
    scale, suffix = unit_scale(unit)
    digits = 2 if decimals is None else decimals
    return f"{value * scale:.{digits}f}{(' ' + suffix) if suffix else ''}"


# ---------------------------------------------------------------- Prometheus


@dataclass
class Prometheus:
    """A tiny Prometheus HTTP API client (stdlib only)."""

    url: str
    timeout_s: float = 10.0

    def _get(self, path: str, params: Mapping[str, str]) -> list[dict]:
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(
                f"{self.url.rstrip('/')}{path}?{query}", timeout=self.timeout_s
            ) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise RenderError(f"{self.url}{path}: HTTP {exc.code}: {detail}") from exc
        except OSError as exc:
            raise RenderError(f"{self.url}: cannot reach Prometheus ({exc})") from exc
        if body.get("status") != "success":
            raise RenderError(f"{self.url}{path}: {body.get('error', body)}")
        return body["data"]["result"]

    def query(self, expr: str, at: float) -> list[dict]:
        return self._get("/api/v1/query", {"query": expr, "time": f"{at:.3f}"})

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        return self._get(
            "/api/v1/query_range",
            {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"},
        )


# ---------------------------------------------------------------- rendering


@dataclass
class PanelResult:
    """What one rendered panel showed: its title, type and series count (for checks)."""

    title: str
    type: str
    series: int
    points: int = 0
    notes: list[str] = field(default_factory=list)


def _threshold_lines(panel: dict) -> list[tuple[float, str]]:
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    style = defaults.get("custom", {}).get("thresholdsStyle", {}).get("mode", "off")
    if style == "off":
        return []
    steps = defaults.get("thresholds", {}).get("steps", [])
    return [
        (s["value"], GRAFANA_COLORS.get(s["color"], s["color"]))
        for s in steps
        if s.get("value") is not None and GRAFANA_COLORS.get(s["color"], s["color"])
    ]


def _draw_timeseries(ax, panel, prom, window, variables) -> PanelResult:
    import datetime as dt

    start, end, step = window
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
    scale, suffix = unit_scale(unit)
    res = PanelResult(panel["title"], panel["type"], 0)
    for target in panel["targets"]:
        expr = substitute_variables(target["expr"], **variables)
        for series in prom.query_range(expr, start, end, step):
            xs = [dt.datetime.fromtimestamp(float(t)) for t, _ in series["values"]]
            ys = [float(v) * scale for _, v in series["values"]]
            name = legend(target.get("legendFormat", ""), series["metric"])
            ax.plot(xs, ys, label=name, color=RISK_COLORS.get(name), linewidth=1.6)
            res.series += 1
            res.points += len(ys)
    for value, color in _threshold_lines(panel):
        ax.axhline(
            value * scale,
            color=color,
            linestyle="--",
            linewidth=1.2,
            label=f"target {format_value(value, unit, None)}",
        )
    ax.set_ylabel(suffix)
    ax.set_ylim(bottom=0)
    import matplotlib.dates as mdates

    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    ax.tick_params(axis="x", labelsize=7)
    if res.series:
        ax.legend(fontsize=7, loc="upper left")
    else:
        ax.text(0.5, 0.5, "No data", ha="center", va="center", transform=ax.transAxes)
    return res


def _draw_pie(ax, panel, prom, window, variables) -> PanelResult:
    _, end, _ = window
    target = panel["targets"][0]
    expr = substitute_variables(target["expr"], **variables)
    rows = []
    for series in prom.query(expr, end):
        value = float(series["value"][1])
        if value > 0 and math.isfinite(value):
            rows.append((legend(target.get("legendFormat", ""), series["metric"]), value))
    rows.sort(key=lambda r: list(RISK_COLORS).index(r[0]) if r[0] in RISK_COLORS else 99)
    if rows:
        names, values = zip(*rows, strict=True)
        ax.pie(
            values,
            labels=[f"{n}\n{v:.0f}" for n, v in rows],
            colors=[RISK_COLORS.get(n, "#8ab8ff") for n in names],
            autopct="%1.1f%%",
            textprops={"fontsize": 7},
        )
    else:
        ax.text(0.5, 0.5, "No data", ha="center", va="center", transform=ax.transAxes)
    return PanelResult(panel["title"], panel["type"], len(rows), len(rows))


def _draw_heatmap(ax, panel, prom, window, variables) -> PanelResult:
    import numpy as np

    start, end, step = window
    target = panel["targets"][0]
    expr = substitute_variables(target["expr"], **variables)
    result = prom.query_range(expr, start, end, step)
    bounds, by_bound = [], {}
    for series in result:
        le = float(series["metric"].get("le", "nan"))
        bounds.append(le)
        by_bound[le] = {float(t): float(v) for t, v in series["values"]}
    if not bounds:
        ax.text(0.5, 0.5, "No data", ha="center", va="center", transform=ax.transAxes)
        return PanelResult(panel["title"], panel["type"], 0)
    bounds.sort()
    times = sorted({t for values in by_bound.values() for t in values})
    grid = np.zeros((len(bounds), len(times)))
    for j, t in enumerate(times):
        grid[:, j] = decumulate(bounds, [by_bound[b].get(t, 0.0) for b in bounds])
    labels = ["+Inf" if math.isinf(b) else f"{b:g}" for b in bounds]
    mesh = ax.imshow(grid, aspect="auto", origin="lower", cmap="Oranges", interpolation="nearest")
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=6)
    ax.set_ylabel("risk score bucket (le)")
    ticks = np.linspace(0, len(times) - 1, min(6, len(times))).astype(int)
    ax.set_xticks(ticks)
    ax.set_xticklabels(
        [time.strftime("%H:%M:%S", time.localtime(times[i])) for i in ticks], fontsize=7
    )
    ax.figure.colorbar(mesh, ax=ax, fraction=0.03, pad=0.01).set_label("predictions", fontsize=7)
    return PanelResult(panel["title"], panel["type"], len(bounds), int(grid.size))


def _draw_stat(ax, panel, prom, window, variables) -> PanelResult:
    from matplotlib.patches import FancyBboxPatch

    _, end, _ = window
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    target = panel["targets"][0]
    expr = substitute_variables(target["expr"], **variables)
    result = prom.query(expr, end)
    ax.set_axis_off()
    text, color = "No data", "#888888"
    if result:
        series = result[0]
        value = float(series["value"][1])
        text_mode = panel.get("options", {}).get("textMode", "auto")
        if text_mode == "name":
            text = legend(target.get("legendFormat", ""), series["metric"])
        else:
            text = format_value(value, defaults.get("unit"), defaults.get("decimals"))
            for mapping in defaults.get("mappings", []):
                hit = mapping.get("options", {}).get(f"{value:g}")
                if hit:
                    text = hit.get("text", text)
        color = "#3274d9"
        steps = defaults.get("thresholds", {}).get("steps", [])
        for step in steps:
            if step.get("value") is None or value >= step["value"]:
                color = GRAFANA_COLORS.get(step["color"], step["color"]) or color
    ax.add_patch(
        FancyBboxPatch(
            (0.02, 0.05),
            0.96,
            0.9,
            boxstyle="round,pad=0.01",
            transform=ax.transAxes,
            facecolor=color,
            alpha=0.85,
        )
    )
    ax.text(
        0.5,
        0.45,
        text,
        ha="center",
        va="center",
        fontsize=12 if len(text) < 18 else 8,
        color="white",
        weight="bold",
        transform=ax.transAxes,
    )
    return PanelResult(panel["title"], panel["type"], len(result), len(result))


DRAWERS = {
    "timeseries": _draw_timeseries,
    "piechart": _draw_pie,
    "heatmap": _draw_heatmap,
    "stat": _draw_stat,
}


def render(
    dashboard: dict,
    prom: Prometheus,
    out: Path,
    *,
    minutes: float,
    step_s: float | None = None,
    scrape_s: float = 15.0,
    end: float | None = None,
) -> list[PanelResult]:
    """Draw every supported panel of ``dashboard`` at its grid position into ``out`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    end = end if end is not None else time.time()
    range_s = minutes * 60.0
    start = end - range_s
    step = step_s or max(1.0, range_s / 240.0)
    variables = {"range_s": range_s, "step_s": step, "scrape_s": scrape_s}
    panels = [p for p in dashboard["panels"] if p["type"] in DRAWERS]
    if not panels:
        raise RenderError("dashboard has no panel of a supported type")
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    plt.style.use("dark_background")
    fig = plt.figure(figsize=(20, rows * 0.42 + 1.0), dpi=90)
    fig.suptitle(
        f"{dashboard.get('title', 'dashboard')} - last {minutes:g} min "
        f"(rendered from {prom.url} at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(end))})",
        fontsize=13,
    )
    spec = fig.add_gridspec(
        rows, GRID_COLUMNS, hspace=2.5, wspace=1.2, top=1 - 0.9 / (rows * 0.42 + 1)
    )
    results = []
    for panel in panels:
        g = panel["gridPos"]
        ax = fig.add_subplot(spec[g["y"] : g["y"] + g["h"], g["x"] : g["x"] + g["w"]])
        ax.set_title(panel["title"], fontsize=9, loc="left")
        results.append(DRAWERS[panel["type"]](ax, panel, prom, (start, end, step), variables))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, facecolor=fig.get_facecolor())
    plt.close(fig)
    tmp.replace(out)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prometheus-url", default="http://127.0.0.1:9090", help="Prometheus base URL")
    p.add_argument("--dashboard", type=Path, default=DEFAULT_DASHBOARD, help="dashboard JSON")
    p.add_argument("--minutes", type=float, default=30.0, help="time range ending now (default 30)")
    p.add_argument(
        "--step", type=float, default=None, help="query_range step in s (default range/240)"
    )
    p.add_argument(
        "--scrape-interval",
        type=float,
        default=5.0,
        help="Prometheus scrape interval in s, for $__rate_interval (default 5)",
    )
    p.add_argument("--out", type=Path, default=Path("var/dashboard.png"), help="PNG to write")
    p.add_argument(
        "--summary", type=Path, default=None, help="also write per-panel series counts as JSON here"
    )
    args = p.parse_args(argv)
    if args.minutes <= 0:
        print(
            f"render_dashboard: error: --minutes must be > 0, got {args.minutes}", file=sys.stderr
        )
        return 2
    try:
        dashboard = json.loads(args.dashboard.read_text())
        results = render(
            dashboard,
            Prometheus(args.prometheus_url),
            args.out,
            minutes=args.minutes,
            step_s=args.step,
            scrape_s=args.scrape_interval,
        )
    except (OSError, ValueError, RenderError) as exc:
        print(f"render_dashboard: error: {exc}", file=sys.stderr)
        return 1
    for r in results:
        print(f"{r.type:<11} {r.series:>3} series  {r.title}")
    if args.summary:
        args.summary.write_text(json.dumps([asdict(r) for r in results], indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
