"""report.html: one self-contained page for someone deciding whether to ship the student."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on a worker
import matplotlib.pyplot as plt  # noqa: E402

STYLE = """
body{font:15px/1.5 system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;
text-align:right}th:first-child,td:first-child{text-align:left}.verdict{font-size:1.15em;
background:#f4f7fb;border-left:4px solid #3b6ea5;padding:.6em 1em}img{max-width:100%}
"""


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def learning_curves(metrics: dict[str, Any]) -> str:
    figure, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, key, style in (
        ("student (KD)", "history", "-"),
        ("scratch", "history_scratch", "--"),
    ):
        history = metrics.get(key) or []
        if not history:
            continue
        epochs = [h["epoch"] for h in history]
        loss_ax.plot(epochs, [h["loss"] for h in history], style, label=name)
        acc_ax.plot(epochs, [h["validation_accuracy"] for h in history], style, label=name)
    teacher = metrics.get("teacher_accuracy")
    if teacher is not None:
        acc_ax.axhline(teacher, color="grey", linestyle=":", label="teacher (test)")
    loss_ax.set(title="training loss", xlabel="epoch")
    acc_ax.set(title="validation accuracy", xlabel="epoch")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    return _png(figure)


def confusion(matrix: list[list[int]]) -> str:
    size = len(matrix)
    figure, ax = plt.subplots(figsize=(1.2 + 0.45 * size, 1 + 0.45 * size))
    ax.imshow(matrix, cmap="Blues")
    for i in range(size):
        for j in range(size):
            if matrix[i][j]:
                ax.text(j, i, str(matrix[i][j]), ha="center", va="center", fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title="student confusion matrix (test)")
    ax.set_xticks(range(size))
    ax.set_yticks(range(size))
    return _png(figure)


def _comparison(metrics: dict[str, Any]) -> str:
    evaluation = metrics.get("evaluation") or {}
    latency = metrics.get("latency_ms") or {}
    rows = []
    for who, label in (
        ("teacher", "teacher"),
        ("scratch", "student from scratch"),
        ("student", "distilled student"),
    ):
        report = evaluation.get(who)
        if report is None:
            continue
        if who == "teacher":
            params, size = metrics.get("teacher_parameters"), "–"
            b1 = latency.get("batch_1", {}).get("teacher")
            b64 = latency.get("batch_64", {}).get("teacher")
        else:
            params, size = metrics.get("student_parameters"), f"{metrics.get('onnx_bytes', 0):,}"
            b1 = latency.get("batch_1", {}).get("student_onnx")
            b64 = latency.get("batch_64", {}).get("student_onnx")
        agree = {"student": metrics.get("agreement"), "scratch": metrics.get("scratch_agreement")}
        rows.append(
            f"<tr><td>{label}</td><td>{_pct(report['accuracy'])}</td><td>{_num(report['nll'])}"
            f"</td><td>{_num(report['ece'])}</td><td>{_pct(agree.get(who))}</td>"
            f"<td>{params:,}</td><td>{size}</td><td>{_num(b1, 2)}</td><td>{_num(b64, 2)}</td></tr>"
        )
    return (
        "<table><tr><th></th><th>accuracy</th><th>NLL</th><th>ECE</th><th>agrees with teacher"
        "</th><th>parameters</th><th>ONNX bytes</th><th>ms, batch 1</th><th>ms, batch 64</th>"
        "</tr>" + "".join(rows) + "</table>"
    )


def _verdict(metrics: dict[str, Any]) -> str:
    student, teacher = metrics.get("student_accuracy"), metrics.get("teacher_accuracy")
    parts = [f"The distilled student scores {_pct(student)} against the teacher's {_pct(teacher)}"]
    if metrics.get("student_parameters") and metrics.get("teacher_parameters"):
        ratio = metrics["teacher_parameters"] / metrics["student_parameters"]
        parts.append(f"with {ratio:.1f}× fewer parameters")
    speedup = (metrics.get("latency_ms") or {}).get("batch_1", {}).get("speedup")
    if speedup:
        parts.append(f"and runs {speedup:.1f}× faster at batch 1 on this worker")
    text = " ".join(parts) + "."
    scratch = metrics.get("scratch_accuracy")
    if scratch is not None:
        gap = metrics.get("gap_closed")
        text += f" The same student trained from scratch scores {_pct(scratch)}"
        if student is not None and student < scratch:
            text += (
                "; here distillation did not pay: ship the scratch student, or give the "
                "student more to learn from (transfer rows, more epochs)."
            )
        elif gap is not None:
            text += f"; distillation closed {_pct(gap)} of the gap to the teacher."
        else:
            text += "."
    return html.escape(text)


def _table(title: str, header: list[str], rows: list[list[Any]]) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<h2>{html.escape(title)}</h2><table><tr>{head}</tr>{body}</table>"


def render_report(job_id: str, metrics: dict[str, Any]) -> str:
    evaluation = metrics.get("evaluation") or {}
    student_eval, teacher_eval = evaluation.get("student"), evaluation.get("teacher")
    per_class = []
    if student_eval and teacher_eval:
        for c, acc in student_eval["per_class_accuracy"].items():
            per_class.append([c, _pct(teacher_eval["per_class_accuracy"].get(c)), _pct(acc)])
    split = metrics.get("split") or {}
    split_rows = [
        [part, split[part]["rows"], split[part]["source"]]
        for part in ("train", "validation", "test")
        if part in split
    ]
    transfer = metrics.get("transfer") or {}
    transfer_rows = [[source, rows] for source, rows in (transfer.get("sources") or {}).items()]
    assistants = [
        [s["step"], s["parameters"], _pct(s["accuracy"])] for s in metrics.get("assistants") or []
    ]
    members = [
        [m["id"], m["parameters"], _pct(m["accuracy"])]
        for m in (metrics.get("teacher") or {}).get("ensemble") or []
    ]
    confusion_png = confusion(student_eval["confusion_matrix"]) if student_eval else None
    cross = metrics.get("cross_domain") or {}
    cross_rows = [
        [key, value if not isinstance(value, float) else _num(value)]
        for key, value in cross.items()
        if not isinstance(value, (dict, list)) or key in ("input_shape", "output_shape")
    ]
    sections = [
        f"<h1>Distillation report: {html.escape(job_id)}</h1>",
        f"<p class=verdict>{_verdict(metrics)}</p>",
        "<h2>Teacher, scratch and distilled student on the same test rows</h2>",
        _comparison(metrics),
        f"<h2>Learning curves</h2><img alt='learning curves' src='{learning_curves(metrics)}'>",
        (
            f"<h2>Where the student errs</h2><img alt='confusion matrix' src='{confusion_png}'>"
            if confusion_png
            else ""
        ),
        _table("Per-class accuracy", ["class", "teacher", "student"], per_class),
        _table("Data", ["part", "rows", "source"], split_rows),
        _table("Transfer rows", ["source", "rows"], transfer_rows),
        _table("Cross-domain mapping phi (target input -> teacher input)", ["", ""], cross_rows),
        _table("Teacher assistants", ["step", "parameters", "accuracy"], assistants),
        _table("Ensemble members", ["teacher", "parameters", "accuracy"], members),
    ]
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>Distillery report "
        f"{html.escape(job_id)}</title><style>{STYLE}</style></head><body>"
        + "".join(sections)
        + "</body></html>"
    )
