"""report.html: one self-contained page for someone deciding whether to ship the student."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import matplotlib

from app.jobs.metrics import ClassificationReport, JobMetrics, SearchReport

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


def learning_curves(metrics: JobMetrics) -> str:
    figure, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, history, style in (
        ("student (KD)", metrics.history, "-"),
        ("scratch", metrics.history_scratch, "--"),
    ):
        if not history:
            continue
        epochs = [h.epoch for h in history]
        loss_ax.plot(epochs, [h.loss for h in history], style, label=name)
        acc_ax.plot(epochs, [h.validation_accuracy for h in history], style, label=name)
    if metrics.teacher_accuracy is not None:
        acc_ax.axhline(
            metrics.teacher_accuracy, color="grey", linestyle=":", label="teacher (test)"
        )
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


def _comparison_row(
    label: str,
    report: ClassificationReport,
    agree: float | None,
    params: int,
    size: str,
    ms: tuple[float, float],
) -> str:
    return (
        f"<tr><td>{label}</td><td>{_pct(report.accuracy)}</td><td>{_num(report.nll)}"
        f"</td><td>{_num(report.ece)}</td><td>{_pct(agree)}</td>"
        f"<td>{params:,}</td><td>{size}</td><td>{_num(ms[0], 2)}</td><td>{_num(ms[1], 2)}</td></tr>"
    )


def _comparison(metrics: JobMetrics) -> str:
    evaluation, latency = metrics.evaluation, metrics.latency_ms
    teacher_ms = (latency.batch_1.teacher, latency.batch_64.teacher)
    student_ms = (latency.batch_1.student_onnx, latency.batch_64.student_onnx)
    size = f"{metrics.onnx_bytes:,}"
    rows = []
    if evaluation.teacher is not None:
        rows.append(
            _comparison_row(
                "teacher", evaluation.teacher, None, metrics.teacher_parameters, "–", teacher_ms
            )
        )
    if evaluation.scratch is not None:
        rows.append(
            _comparison_row(
                "student from scratch",
                evaluation.scratch,
                metrics.scratch_agreement,
                metrics.student_parameters,
                size,
                student_ms,
            )
        )
    if evaluation.student is not None:
        rows.append(
            _comparison_row(
                "distilled student",
                evaluation.student,
                metrics.agreement,
                metrics.student_parameters,
                size,
                student_ms,
            )
        )
    return (
        "<table><tr><th></th><th>accuracy</th><th>NLL</th><th>ECE</th><th>agrees with teacher"
        "</th><th>parameters</th><th>ONNX bytes</th><th>ms, batch 1</th><th>ms, batch 64</th>"
        "</tr>" + "".join(rows) + "</table>"
    )


def _verdict(metrics: JobMetrics) -> str:
    student, teacher = metrics.student_accuracy, metrics.teacher_accuracy
    parts = [f"The distilled student scores {_pct(student)} against the teacher's {_pct(teacher)}"]
    if metrics.student_parameters and metrics.teacher_parameters:
        ratio = metrics.teacher_parameters / metrics.student_parameters
        parts.append(f"with {ratio:.1f}× fewer parameters")
    speedup = metrics.latency_ms.batch_1.speedup
    if speedup:
        parts.append(f"and runs {speedup:.1f}× faster at batch 1 on this worker")
    text = " ".join(parts) + "."
    scratch, gap = metrics.scratch_accuracy, metrics.gap_closed
    if scratch is not None:
        text += f" The same student trained from scratch scores {_pct(scratch)} on the test rows"
        text += f"; distillation closed {_pct(gap)} of the gap." if gap is not None else "."
    advice = metrics.recommendation
    if advice is not None:
        shipped = "student.onnx" if advice.ship == "student" else "scratch.onnx"
        text += f" Ship {shipped}: {advice.reason}."
    for warning in metrics.warnings:
        text += f" Warning: {warning}"
    return html.escape(text)


def _table(title: str, header: list[str], rows: list[list[Any]]) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<h2>{html.escape(title)}</h2><table><tr>{head}</tr>{body}</table>"


def _int8_table(metrics: JobMetrics) -> str:
    int8 = metrics.int8
    if int8 is None or int8.status == "off":
        return ""
    if int8.status == "failed":
        return _table("int8 student", ["status", "error"], [["failed", int8.error or ""]])
    b1, b64 = int8.latency_ms.get("batch_1"), int8.latency_ms.get("batch_64")
    rows: list[list[Any]] = [
        [
            "fp32 (student.onnx)",
            _pct(int8.fp32_accuracy),
            _pct(int8.fp32_validation_accuracy),
            int8.fp32_bytes,
            _num(b1.fp32) if b1 else "",
            _num(b64.fp32) if b64 else "",
        ],
        [
            f"int8, {int8.mode} (student.int8.onnx)",
            _pct(int8.accuracy),
            _pct(int8.validation_accuracy),
            int8.bytes,
            _num(b1.int8) if b1 else "",
            _num(b64.int8) if b64 else "",
        ],
        [f"ship {int8.ship}", int8.reason, "", "", "", ""],
    ]
    header = ["", "test accuracy", "validation accuracy", "bytes", "ms, batch 1", "ms, batch 64"]
    return _table("int8 student", header, rows)


def _detail_tables(metrics: JobMetrics) -> list[str]:
    student, teacher = metrics.evaluation.student, metrics.evaluation.teacher
    per_class = (
        [
            [c, _pct(teacher.per_class_accuracy.get(c)), _pct(acc)]
            for c, acc in student.per_class_accuracy.items()
        ]
        if student and teacher
        else []
    )
    split = metrics.split
    parts = [("train", split.train), ("validation", split.validation), ("test", split.test)]
    cross = metrics.cross_domain.model_dump() if metrics.cross_domain else {}
    how = metrics.transfer_spec.choice
    choice = [[how.chosen, how.data_kind or "", how.rows, how.reason]] if how else []
    cross_rows = [
        [key, value if not isinstance(value, float) else _num(value)]
        for key, value in cross.items()
        if not isinstance(value, (dict, list)) or key in ("input_shape", "output_shape")
    ]
    return [
        _table("Per-class accuracy", ["class", "teacher", "student"], per_class),
        _table("Data", ["part", "rows", "source"], [[n, p.rows, p.source] for n, p in parts]),
        _int8_table(metrics),
        _table("Transfer set", ["chosen", "data kind", "synthesized rows", "why"], choice),
        _table(
            "Transfer rows", ["source", "rows"], [list(i) for i in metrics.transfer.sources.items()]
        ),
        _table("Cross-domain mapping phi (target input -> teacher input)", ["", ""], cross_rows),
        _table(
            "Teacher assistants",
            ["step", "parameters", "accuracy"],
            [[s.step, s.parameters, _pct(s.accuracy)] for s in metrics.assistants or []],
        ),
        _table(
            "Ensemble members",
            ["teacher", "parameters", "validation accuracy", "test accuracy"],
            [
                [m.id, m.parameters, _pct(m.validation_accuracy), _pct(m.accuracy)]
                for m in metrics.teacher.ensemble or []
            ],
        ),
    ]


def search_plot(search: SearchReport) -> str:
    """Validation accuracy against parameters, students and scratch, the chosen ones ringed."""
    figure, ax = plt.subplots(figsize=(5.5, 3.6))
    for kind, color in (("student", "tab:blue"), ("scratch", "tab:gray")):
        shown = [
            (c.parameters, c.validation_accuracy, c.chosen)
            for c in search.candidates
            if c.kind == kind and c.validation_accuracy is not None
        ]
        ax.scatter([p for p, _, _ in shown], [a for _, a, _ in shown], color=color, label=kind)
        ax.scatter(
            [p for p, _, chosen in shown if chosen],
            [a for _, a, chosen in shown if chosen],
            s=160,
            facecolors="none",
            edgecolors="black",
        )
    ax.set_xlabel("parameters")
    ax.set_ylabel("validation accuracy")
    ax.legend()
    figure.tight_layout()
    return _png(figure)


def _search_section(metrics: JobMetrics) -> str:
    search = metrics.search
    if search is None:
        return ""
    rows = [
        [
            f"{c.kind} {c.number}" + (" (chosen)" if c.chosen else ""),
            _num(c.temperature) if c.temperature is not None else "",
            _num(c.alpha) if c.alpha is not None else "",
            ", ".join(c.transfer),
            "-".join(map(str, c.hidden_sizes if c.hidden_sizes else c.channels)),
            _num(c.learning_rate, 4),
            _pct(c.validation_accuracy),
            _pct(c.agreement),
            c.parameters,
            _num(c.seconds, 1),
            c.error or "",
        ]
        for c in search.candidates
    ]
    header = [
        "candidate",
        "T",
        "alpha",
        "transfer",
        "layers",
        "lr",
        "validation accuracy",
        "agreement",
        "parameters",
        "seconds",
        "error",
    ]
    return (
        _table(f"Search on the validation rows (budget {search.budget})", header, rows)
        + f"<img alt='validation accuracy against parameters' src='{search_plot(search)}'>"
    )


def render_report(job_id: str, metrics: JobMetrics) -> str:
    student = metrics.evaluation.student
    confusion_png = confusion(student.confusion_matrix) if student else None
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
        _search_section(metrics),
        *_detail_tables(metrics),
    ]
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>Distillery report "
        f"{html.escape(job_id)}</title><style>{STYLE}</style></head><body>"
        + "".join(sections)
        + "</body></html>"
    )
