"""Evaluation plots (matplotlib, Agg backend) and the Markdown / self-contained HTML report."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

import numpy as np

from components.contracts.schemas import RISK_LEVELS
from components.evaluate import views
from components.evaluate.logic import FRAUD_PATTERNS, MODELS, Scored

LABELS = {"xgb": "XGBoost", "iforest": "Isolation forest", "blend": "Risk score (two channels)"}
PLOTS = (
    ("pr_curves.png", "Precision-recall curves (test)"),
    ("roc_curves.png", "ROC curves (test)"),
    ("score_distribution.png", "Risk score distribution per class (test)"),
    ("risk_levels.png", "Risk level vs true fraud type (test)"),
    ("recall_by_type.png", "Recall per fraud type at 1% FPR (test)"),
)


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def write_plots(test: Scored, metrics: dict[str, Any], folder: Path) -> list[Path]:
    """Write the evaluation PNGs into ``folder``; returns their paths."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    plt = _plt()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    thresholds = metrics["thresholds"]

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name in MODELS:
        p, r, _ = precision_recall_curve(test.labels, test.score(name))
        ax.plot(r, p, label=f"{LABELS[name]} (AP {metrics['models'][name]['pr_auc']:.3f})")
    ax.set(xlabel="recall", ylabel="precision", ylim=(0, 1.02), title=PLOTS[0][1])
    ax.legend(loc="lower left")
    paths.append(_save(fig, folder / PLOTS[0][0]))

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name in MODELS:
        fpr, tpr, _ = roc_curve(test.labels, test.score(name))
        ax.plot(fpr, tpr, label=f"{LABELS[name]} (AUC {metrics['models'][name]['roc_auc']:.3f})")
    ax.axvline(0.01, color="grey", ls=":", label="1% FPR")
    ax.set(
        xscale="log",
        xlim=(1e-4, 1),
        xlabel="false positive rate (log)",
        ylabel="true positive rate",
        title=PLOTS[1][1],
    )
    ax.legend(loc="lower right")
    paths.append(_save(fig, folder / PLOTS[1][0]))

    fig, ax = plt.subplots(figsize=(6, 4.5))
    bins = np.linspace(0, 100, 51)
    ax.hist(test.blend[~test.labels], bins=bins, alpha=0.6, density=True, label="legitimate")
    ax.hist(test.blend[test.labels], bins=bins, alpha=0.6, density=True, label="fraud")
    for key, style in (("medium", "--"), ("high", "-")):
        ax.axvline(thresholds[key], color="k", ls=style, label=f"{key} threshold")
    ax.set(yscale="log", xlabel="risk score (0-100)", ylabel="density (log)", title=PLOTS[2][1])
    ax.legend()
    paths.append(_save(fig, folder / PLOTS[2][0]))

    confusion = metrics["level_confusion"]
    rows = list(confusion)
    counts = np.array([[confusion[r][lv] for lv in RISK_LEVELS] for r in rows], dtype=float)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.5, 0.5 * len(rows) + 1.5))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(RISK_LEVELS)), RISK_LEVELS)
    ax.set_yticks(range(len(rows)), rows)
    for i in range(len(rows)):
        for j in range(len(RISK_LEVELS)):
            ax.text(
                j,
                i,
                f"{int(counts[i, j])}\n{share[i, j]:.0%}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if share[i, j] > 0.5 else "black",
            )
    ax.set_title(PLOTS[3][1])
    paths.append(_save(fig, folder / PLOTS[3][0]))

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    width = 0.27
    x = np.arange(len(FRAUD_PATTERNS))
    for k, name in enumerate(MODELS):
        rec = metrics["models"][name]["recall_by_type_at_1pct_fpr"]
        vals = [_value(rec.get(t)) for t in FRAUD_PATTERNS]
        ax.bar(x + (k - 1) * width, vals, width, label=LABELS[name])
    ax.set_xticks(x, FRAUD_PATTERNS, rotation=25, ha="right")
    ax.set(ylim=(0, 1.05), ylabel="recall at 1% FPR", title=PLOTS[4][1])
    ax.legend()
    paths.append(_save(fig, folder / PLOTS[4][0]))
    return paths


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    _plt().close(fig)
    return path


def _value(r: dict[str, Any] | None) -> float:
    """A rate's value for a bar (0 when absent)."""
    v = (r or {}).get("value")
    return 0.0 if v is None or v != v else float(v)


def _ci(r: dict[str, Any] | None) -> str:
    """``0.888 [0.851, 0.917]``: a rate with its 95% interval."""
    if not r or r.get("value") is None or r["value"] != r["value"]:
        return "-"
    return f"{r['value']:.3f} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def render_markdown(metrics: dict[str, Any], *, image_src: dict[str, str] | None = None) -> str:
    """The evaluation report as Markdown; ``image_src`` maps plot file -> src (default relative)."""
    models = metrics["models"]
    t = metrics["thresholds"]
    sel = metrics["threshold_selection"]
    lines = [
        "# Evaluation report",
        "",
        f"Test subset (time-held-out): {int(metrics['summary']['test_rows']):,} rows, "
        f"fraud rate {metrics['summary']['test_fraud_rate']:.2%}. Everything fitted or chosen "
        "(boosters, the two-channel score, every threshold) used train/valid only; test was "
        "only counted. "
        f"Brackets: {metrics['protocol']['intervals']}.",
        "",
        "## Models on the test subset",
        "",
        'Operating point "1% FPR": the threshold at which 1% of the VALID legitimate rows '
        "are flagged; the test false-alarm rate at it is shown.",
        "",
        "| model | ROC-AUC | PR-AUC | recall @ 1% FPR | precision @ 1% FPR | test FPR |",
        "|---|---|---|---|---|---|",
    ]
    for name in MODELS:
        m, p = models[name], models[name]["at_1pct_fpr"]
        lines.append(
            f"| {LABELS[name]} | {_fmt(m['roc_auc'])} | {_fmt(m['pr_auc'])} | "
            f"{_ci(p['recall'])} | {_ci(p['precision'])} | {_ci(p['false_alarm_rate'])} |"
        )
    b = models["blend"]
    ch = metrics.get("channels_at_1pct_fpr")
    if ch:
        lines += [
            "",
            f"Two channels (anomaly share of the valid false-alarm budget "
            f"{_fmt(metrics['summary'].get('anomaly_share'))}): at the 1% FPR point the test "
            f"frauds caught by the supervised channel only {_ci(ch['recall_supervised_only'])}, "
            f"by the anomaly channel only {_ci(ch['recall_anomaly_only'])}, by both "
            f"{_ci(ch['recall_both'])}; false alarms: supervised "
            f"{_ci(ch['false_alarm_rate_supervised'])}, anomaly "
            f"{_ci(ch['false_alarm_rate_anomaly'])}.",
        ]
    lines += [
        "",
        "## Cohorts (blend at the valid-fixed 1% FPR threshold)",
        "",
        f"{metrics['protocol']['cohorts']}.",
        "",
        "| cohort | rows | frauds | recall | precision | false-alarm rate |",
        "|---|---|---|---|---|---|",
    ]
    for name, c in metrics["cohorts"].items():
        lines.append(
            f"| {name} | {c['rows']:,} | {c['frauds']:,} | {_ci(c['recall'])} | "
            f"{_ci(c['precision'])} | {_ci(c['false_alarm_rate'])} |"
        )
    s = metrics["summary"]
    if "new_hire_false_alarm_ratio" in s:
        key = "new_hire_false_alarm_ratio"
        ratio = {
            "value": s[key],
            "ci_low": s.get(f"{key}_ci_low"),
            "ci_high": s.get(f"{key}_ci_high"),
        }
        lines += ["", f"New hires' false-alarm rate over established cashiers': {_ci(ratio)} "
                  "(target <= 1.5)."]  # fmt: skip
    loto = metrics["leave_one_type_out"]
    if loto:
        lines += [
            "",
            "## Leave one fraud type out",
            "",
            "Per type: a booster trained without its rows, the two-channel score (calibration, "
            "budget share, thresholds) refit on valid without its rows; share of its test "
            "rows caught.",
            "",
            "| held-out type | test rows | blend | booster alone | forest alone |",
            "|---|---|---|---|---|",
        ]
        for name, f in loto.items():
            lines.append(
                f"| {name} | {f['test_rows']:,} | {_ci(f['blend'])} | {_ci(f['xgb'])} | "
                f"{_ci(f['iforest'])} |"
            )
        s = metrics["summary"]
        lines += [
            "",
            f"Mean {_fmt(s.get('loto_recall_mean'))}, min {_fmt(s.get('loto_recall_min'))}.",
        ]
    lines += [
        "",
        "## Risk levels",
        "",
        f"Thresholds on the 0-100 score, chosen on the valid subset: **High >= {t['high']:.2f}** "
        f"({sel['high_rule']}), **Medium >= {t['medium']:.2f}** ({sel['medium_rule']}).",
        "",
        "| band | precision (test) | recall (test) | share of transactions |",
        "|---|---|---|---|",
        f"| High | {_ci(b['high_precision'])} | {_ci(b['high_recall'])} | "
        f"{b['level_share']['High Risk']:.2%} |",
        f"| Medium or High | {_ci(b['medium_precision'])} | {_ci(b['medium_recall'])} | "
        f"{b['level_share']['High Risk'] + b['level_share']['Medium Risk']:.2%} |",
        "",
        "## Recall per fraud type (production models, every type seen in training)",
        "",
        "| fraud type | XGBoost @ 1% FPR | Isolation forest @ 1% FPR | Blend @ 1% FPR | "
        "Blend @ Medium | Blend @ High |",
        "|---|---|---|---|---|---|",
    ]
    for pattern in FRAUD_PATTERNS:
        cells = [_ci(models[n]["recall_by_type_at_1pct_fpr"].get(pattern)) for n in MODELS]
        cells += [
            _fmt(b["recall_by_type_at_medium"].get(pattern)),
            _fmt(b["recall_by_type_at_high"].get(pattern)),
        ]
        lines.append(f"| {pattern} | " + " | ".join(cells) + " |")
    lines += views.markdown_lines(metrics.get(views.VIEW), models)
    lines += ["", "## Plots", ""]
    for file, title in PLOTS:
        src = (image_src or {}).get(file, f"plots/{file}")
        lines += [f"![{title}]({src})", ""]
    return "\n".join(lines) + "\n"


def render_html(metrics: dict[str, Any], plots_dir: Path) -> str:
    """A self-contained HTML page (plots embedded as base64) with the report's numbers."""
    md = render_markdown(metrics)
    body: list[str] = []
    in_table = False
    for raw in md.splitlines():
        line = raw.strip()
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if all(set(c) <= {"-"} for c in cells):
                continue
            tag = "th" if not in_table else "td"
            if not in_table:
                body.append("<table>")
                in_table = True
            body.append("<tr>" + "".join(f"<{tag}>{_inline(c)}</{tag}>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("!["):
            title, _, src = line[2:].partition("](")
            file = Path(src.rstrip(")")).name
            data = base64.b64encode((plots_dir / file).read_bytes()).decode()
            body.append(
                f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(title)}</figcaption></figure>"
            )
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line:
            body.append(f"<p>{_inline(line)}</p>")
    if in_table:
        body.append("</table>")
    style = (
        "body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
        "text-align:right}td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}"
        "figure{display:inline-block;margin:0.5em}img{max-width:460px}"
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Evaluation report</title>"
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _inline(text: str) -> str:
    out = html.escape(text)
    # **bold** and `code`, the only inline Markdown the report uses.
    parts = out.split("**")
    out = "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))
    parts = out.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


# ---------------------------------------------------------------- KFP UI


def roc_points(scores: np.ndarray, labels: np.ndarray, max_points: int = 200):
    """(threshold, tpr, fpr) points for KFP's ClassificationMetrics, thinned to ``max_points``."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(np.asarray(labels, dtype=bool), scores)
    thr = np.clip(thr, 0.0, 100.0)  # sklearn's first threshold is +inf
    idx = np.unique(np.linspace(0, fpr.size - 1, min(max_points, fpr.size)).round().astype(int))
    return [(float(thr[i]), float(tpr[i]), float(fpr[i])) for i in idx]


def flagged_confusion(scores: np.ndarray, labels: np.ndarray, threshold: float) -> list[list[int]]:
    """2x2 confusion matrix [[TN, FP], [FN, TP]] of ``score >= threshold`` vs truth."""
    flagged = np.asarray(scores) >= threshold
    y = np.asarray(labels, dtype=bool)
    return [
        [int(np.sum(~y & ~flagged)), int(np.sum(~y & flagged))],
        [int(np.sum(y & ~flagged)), int(np.sum(y & flagged))],
    ]
