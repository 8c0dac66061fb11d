"""Pictures of an evaluation (matplotlib, Agg) and one self-contained report.html: the PNGs
inlined as base64, no scripts, nothing fetched from the network."""

import base64
import html
import os
from collections.abc import Callable

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxcls import metrics  # noqa: E402

MAX_TICK_CLASSES = 40  # beyond this many classes, axes carry no class names


def save_figure(fig, path: str) -> str:
    """Writes a matplotlib figure as PNG and closes it; returns `path`."""
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def confusion_figure(cm: np.ndarray, class_names: list[str], normalized: bool, path: str) -> str:
    """Heat map, rows = true class; `normalized`: each row divided by its support (recall)."""
    c = len(class_names)
    values = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalized else cm
    size = min(max(4.0, 0.45 * c + 2), 14.0)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalized else None)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if c <= MAX_TICK_CLASSES:
        ax.set_xticks(range(c), class_names, rotation=90)
        ax.set_yticks(range(c), class_names)
    if c <= 15:
        for i in range(c):
            for j in range(c):
                text = f"{values[i, j]:.2f}" if normalized else str(values[i, j])
                ax.text(j, i, text, ha="center", va="center", fontsize=7,
                        color="white" if values[i, j] > 0.6 * values.max() else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix, " + ("normalised by true class" if normalized else "counts"))
    return save_figure(fig, path)


def reliability_figure(labels: np.ndarray, probs: np.ndarray, calibrated: np.ndarray,
                       temperature: float, path: str) -> str:
    """Accuracy against confidence in 15 equal-width bins, before and after scaling."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), sharey=True)
    for ax, p, title in ((axes[0], probs, "model"),
                         (axes[1], calibrated, f"temperature {temperature:.3f}")):
        bins = [b for b in metrics.calibration_bins(labels, p, 15) if b["count"]]
        centers = [(b["lo"] + b["hi"]) / 2 for b in bins]
        acc = np.array([b["accuracy"] for b in bins])
        conf = np.array([b["confidence"] for b in bins])
        ax.bar(centers, acc, width=1 / 15, edgecolor="black", color="#4c72b0", label="accuracy",
               zorder=2)
        # The gap from accuracy to the bin's mean confidence: red hatching on no fill, above the
        # accuracy bars, so it keeps the legend's look where it lies inside one (under-confident
        # bins) rather than tinting it.
        ax.bar(centers, conf - acc, bottom=acc, width=1 / 15, facecolor="none",
               edgecolor="#c44e52", hatch="///", linewidth=1.0, zorder=3,
               label="gap to mean confidence")
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        ece = metrics.expected_calibration_error(labels, p)
        ax.set_title(f"{title}: ECE {ece:.4f}")
        ax.set_xlabel("confidence (top-1 probability)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(loc="upper left")
    return save_figure(fig, path)


def f1_figure(report: dict, class_names: list[str], path: str) -> str:
    """Per-class F1, sorted; with many classes only the lowest MAX_TICK_CLASSES."""
    f1 = np.array([report[n]["f1"] for n in class_names])
    order = np.argsort(f1, kind="stable")[:MAX_TICK_CLASSES]
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(order) + 1.2))
    ax.barh(range(len(order)), f1[order], color="#55a868")
    ax.set_yticks(range(len(order)), [class_names[i] for i in order])
    for y, v in enumerate(f1[order]):
        ax.text(v + 0.01, y, f"{v:.3f}", va="center", fontsize=8)
    ax.set_xlim(0, 1.08)
    ax.set_xlabel("F1")
    shown = "" if len(order) == len(f1) else f" (lowest {len(order)} of {len(f1)})"
    ax.set_title(f"per-class F1{shown}; macro {report['macro avg']['f1']:.3f}")
    return save_figure(fig, path)


def _image_grid(cells: list[tuple[np.ndarray, str]], columns: int, path: str,
                title: str) -> str:
    rows = max(-(-len(cells) // columns), 1)
    fig, axes = plt.subplots(rows, columns, figsize=(1.7 * columns, 1.95 * rows + 0.4),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (image, caption) in zip(axes.flat, cells, strict=False):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(caption, fontsize=7)
    fig.suptitle(title)
    return save_figure(fig, path)


def confused_pairs_figure(pairs: list[dict], labels: np.ndarray, probs: np.ndarray,
                          image: Callable[[int], np.ndarray], path: str, examples: int = 6,
                          max_pairs: int = 5) -> str:
    """One row per most-confused (true, predicted) pair: its most confident mistakes."""
    preds = probs.argmax(axis=1)
    cells = []
    for pair in pairs[:max_pairs]:
        idx = np.flatnonzero((labels == pair["true_index"]) & (preds == pair["predicted_index"]))
        idx = idx[np.argsort(-probs[idx].max(axis=1), kind="stable")][:examples]
        row = [(image(i), f"{pair['true']}\u2192{pair['predicted']}\n"
                          f"p={probs[i].max():.2f}") for i in idx]
        row += [(np.ones((2, 2, 3)), "")] * (examples - len(row))
        cells += row
    return _image_grid(cells, examples, path, "most confused pairs (true\u2192predicted), "
                                              "most confident first")


def confident_wrong_figure(labels: np.ndarray, probs: np.ndarray, class_names: list[str],
                           image: Callable[[int], np.ndarray], path: str, n: int = 24) -> str:
    preds = probs.argmax(axis=1)
    wrong = np.flatnonzero(preds != labels)
    wrong = wrong[np.argsort(-probs[wrong].max(axis=1), kind="stable")][:n]
    cells = [(image(i), f"true {class_names[labels[i]]}\npred {class_names[preds[i]]} "
                        f"{probs[i].max():.2f}") for i in wrong]
    return _image_grid(cells, 8, path, "most confidently wrong")


def _img_tag(path: str, alt: str) -> str:
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'


def html_section(title: str, png: str) -> str:
    """A titled section with the PNG embedded (base64), for the reports' HTML pages."""
    return f"<section><h2>{html.escape(title)}</h2>{_img_tag(png, title)}</section>"


def html_table(header: list[str], rows: list[list], cls: str = "") -> str:
    """An escaped HTML table; floats to 4 decimals, None as n/a."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
                   for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return "n/a" if v is None else str(v)


CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#eee}img{max-width:100%}figure{margin:1em 0}
.warn{background:#fff3cd;border:1px solid #e0c060;padding:.6em}
.row{display:grid;grid-template-columns:1fr 1fr;gap:1.5em;align-items:start}"""


def write(out_dir: str, result: dict, labels: np.ndarray, probs: np.ndarray,
          calibrated: np.ndarray, class_names: list[str],
          image: Callable[[int], np.ndarray]) -> str:
    """Writes the PNGs and report.html for one evaluation to `out_dir`; returns the HTML path.
    `image(i)` is example i's uint8 picture."""
    cm = np.array(result["confusion_matrix"])
    cal = result["calibration"]
    join = lambda name: os.path.join(out_dir, name)  # noqa: E731
    figures = [
        ("confusion matrix (normalised)", confusion_figure(cm, class_names, True,
                                                           join("confusion_normalized.png"))),
        ("confusion matrix (counts)", confusion_figure(cm, class_names, False,
                                                       join("confusion_counts.png"))),
        ("reliability diagram", reliability_figure(labels, probs, calibrated,
                                                   cal["temperature"], join("reliability.png"))),
        ("per-class F1", f1_figure(result["classification_report"], class_names,
                                   join("per_class_f1.png"))),
    ]
    if result["most_confused"]:
        figures.append(("most confused pairs", confused_pairs_figure(
            result["most_confused"], labels, probs, image, join("confused_pairs.png"))))
        figures.append(("most confidently wrong", confident_wrong_figure(
            labels, probs, class_names, image, join("confident_wrong.png"))))

    keys = [k for k in ("accuracy", "top5", "balanced_accuracy", "roc_auc_macro_ovr",
                        "log_loss", "brier", "ece_15", "ece_adaptive_15") if k in result]
    summary = html_table(["metric", "value"], [[k, result[k]] for k in keys], "summary")
    calib = html_table(["", "before", "after"], [[k, cal[f"{k}_before"], cal[f"{k}_after"]]
                                             for k in ("ece_15", "ece_adaptive_15", "log_loss")])
    warn = (f'<p class="warn">Calibration leakage: {html.escape(cal["leakage"])}</p>'
            if cal["leakage"] else "")
    rep = result["classification_report"]
    per_class = html_table(["class", "precision", "recall", "F1", "support", "ROC AUC"],
                       [[n, rep[n]["precision"], rep[n]["recall"], rep[n]["f1"],
                         rep[n]["support"], result["roc_auc_per_class"].get(n)]
                        for n in class_names]
                       + [[a, rep[a]["precision"], rep[a]["recall"], rep[a]["f1"],
                           rep[a]["support"], None] for a in ("macro avg", "weighted avg")],
                       "per-class")
    confused = html_table(["true", "predicted", "count"],
                      [[p["true"], p["predicted"], p["count"]] for p in result["most_confused"]])
    mc = result.get("mc_dropout_summary")
    mc_html = "" if not mc else (
        f"<h2>MC dropout ({mc['samples']} samples)</h2>" + html_table(
            ["", "MC dropout", "dropout off"],
            [[k, result[k], mc["deterministic"][k]] for k in ("accuracy", "ece_15", "log_loss")]
            + [["mean predictive entropy", mc["mean_predictive_entropy"], None],
               ["mean mutual information", mc["mean_mutual_information"], None],
               ["errors ranked by entropy (ROC AUC)", mc["error_auroc_predictive_entropy"],
                None],
               ["errors ranked by mutual information (ROC AUC)",
                mc["error_auroc_mutual_information"], None]]))
    runs = ", ".join(result["checkpoints"])
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>jaxcls evaluation: {html.escape(runs)}</title>
<style>{CSS}</style></head><body>
<h1>Evaluation of {html.escape(runs)}</h1>
<p>split <b>{html.escape(result["split"])}</b>, {result["examples"]} examples
({result["skipped"]} unreadable skipped), {len(class_names)} classes,
test-time augmentation: {html.escape(result["tta"] or "none")}.</p>
<h2>Metrics</h2>{summary}{mc_html}
<h2>Calibration</h2>
<p>Temperature {cal["temperature"]:.4f}, fitted on {html.escape(cal["fitted_on"])}
({cal["fit_examples"]} examples).</p>{warn}{calib}
<div class="row">{"".join(html_section(t, p) for t, p in figures[:2])}</div>
{"".join(html_section(t, p) for t, p in figures[2:])}
<h2>Most confused pairs</h2>{confused}
<h2>Classification report</h2>{per_class}
</body></html>
"""
    path = join("report.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path
