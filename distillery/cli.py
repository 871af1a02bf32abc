"""`distillery`: run the service (serve, api, worker, migrate, keys) or use one (teachers,
datasets, jobs). Server errors print as one line on stderr, never a traceback."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from distillery.client import Client, DistilleryError, job_metrics, job_progress
from distillery.types import Dataset, EpochMetrics, Job, JobMetrics, Teacher

SERVER_COMMANDS = ("serve", "api", "worker", "migrate", "keys")
DEFAULT_URL = "http://127.0.0.1:8000"
# Piped or captured output is not cut to 80 columns: tables there are read by people too.
_WIDTH = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160
console = Console(soft_wrap=True, width=_WIDTH)
errors = Console(stderr=True, soft_wrap=True)


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * float(value):.1f}%"


def _count(value: Any) -> str:
    return "–" if value is None else f"{int(value):,}"


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


@contextmanager
def _upload_bar(path: Path) -> Iterator[Callable[[int, int], None]]:
    """A byte progress bar on stderr, so that stdout stays the result alone."""
    with Progress(
        TextColumn(f"uploading {path.name}"),
        BarColumn(),
        DownloadColumn(),
        console=errors,
        transient=True,
        disable=not errors.is_terminal,
    ) as bar:
        task = bar.add_task("upload", total=path.stat().st_size)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def upload_teacher(client: Client, path: Path) -> Teacher:
    with _upload_bar(path) as progress:
        return client.upload_teacher(path, progress=progress)


def upload_dataset(client: Client, path: Path, **fields: Any) -> Dataset:
    with _upload_bar(path) as progress:
        return client.upload_dataset(path, progress=progress, **fields)


def cmd_teachers_upload(client: Client, args: argparse.Namespace) -> int:
    teacher = upload_teacher(client, Path(args.file))
    if args.json:
        _print_json(teacher)
        return 0
    console.print(
        f"{teacher['id']}  {teacher['format']}  input {teacher['input_shape']}  "
        f"{teacher['num_classes']} classes  {teacher['parameters']:,} parameters  "
        f"(output {teacher['output_name']!r}: {teacher['output_kind']})",
        markup=False,
    )
    return 0


def cmd_datasets_upload(client: Client, args: argparse.Namespace) -> int:
    dataset = upload_dataset(
        client,
        Path(args.file),
        label_column=args.label_column,
        image_size=args.image_size,
        image_mode=args.image_mode,
    )
    if args.json:
        _print_json(dataset)
        return 0
    labels = f"{dataset['num_classes']} classes" if dataset["labeled"] else "unlabeled"
    console.print(
        f"{dataset['id']}  {dataset['format']}  {dataset['rows']:,} rows  "
        f"features {dataset['feature_shape']}  {labels}",
        markup=False,
    )
    return 0


FILE_FIELDS = (
    ("teacher_file", "teacher_id"),
    ("train_file", "train_dataset_id"),
    ("validation_file", "validation_dataset_id"),
    ("test_file", "test_dataset_id"),
)
ID_FLAGS = (
    ("teacher", "teacher_id"),
    ("train", "train_dataset_id"),
    ("validation", "validation_dataset_id"),
    ("test", "test_dataset_id"),
)


def _section(body: dict[str, Any], name: str) -> dict[str, Any]:
    section = body.get(name)
    if section is None:
        section = body[name] = {}
    if not isinstance(section, dict):
        raise DistilleryError(0, "bad_job_file", f"{name}: expected a mapping, got {section!r}")
    return section


def job_body(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    """The job from its file (YAML or JSON, one per experiment), then flags on top. Files the
    job file names (teacher_file, train_file, ...; relative to it) are uploaded first."""
    body: dict[str, Any] = {}
    if args.file:
        import yaml

        path = Path(args.file)
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            problem = " ".join(str(exc).split())
            raise DistilleryError(0, "bad_job_file", f"{path}: {problem}") from exc
        if not isinstance(loaded, dict):
            raise DistilleryError(0, "bad_job_file", f"{path}: expected a mapping of job fields")
        body = loaded
        for field, target in FILE_FIELDS:
            if field not in body:
                continue
            file = path.parent / str(body.pop(field))
            flag = target.removesuffix("_dataset_id").removesuffix("_id")
            if getattr(args, flag):
                continue  # the flag overrides the file: nothing to upload
            if field == "teacher_file":
                body[target] = upload_teacher(client, file)["id"]
            else:
                body[target] = upload_dataset(client, file)["id"]
    for flag, key in ID_FLAGS:
        if getattr(args, flag):
            body[key] = getattr(args, flag)
    if args.architecture or args.hidden:
        student = _section(body, "student")
        if args.architecture:
            student["architecture"] = args.architecture
        if args.hidden:
            try:
                student["hidden_sizes"] = [int(h) for h in args.hidden.split(",") if h.strip()]
            except ValueError as exc:
                raise DistilleryError(
                    0, "bad_flag", f"--hidden: expected sizes like 128,64, got {args.hidden!r}"
                ) from exc
    for flag in ("temperature", "alpha"):
        if getattr(args, flag) is not None:
            _section(body, "method")[flag] = getattr(args, flag)
    for flag, key in (
        ("epochs", "epochs"),
        ("batch_size", "batch_size"),
        ("lr", "learning_rate"),
        ("seed", "seed"),
    ):
        if getattr(args, flag) is not None:
            _section(body, "training")[key] = getattr(args, flag)
    if args.gpu:
        _section(body, "resources")["gpu"] = True
    return body


def cmd_jobs_submit(client: Client, args: argparse.Namespace) -> int:
    job = client.create_job(job_body(client, args))
    if args.watch:
        console.print(f"{job['id']}  {job['status']}", markup=False)
        return watch(client, job["id"], as_json=args.json)
    if args.json:
        _print_json(job)
    else:
        console.print(f"{job['id']}  {job['status']}", markup=False)
    return 0


def comparison(metrics: JobMetrics, job_id: str, teacher_bytes: int | None) -> Table:
    """Teacher, scratch and distilled student on the same held-out test rows."""
    table = Table(title=f"{job_id}: teacher, scratch and student on the same test rows")
    table.add_column("")
    for column in ("accuracy", "agreement", "parameters", "file bytes"):
        table.add_column(column, justify="right")
    table.add_row(
        "teacher",
        _pct(metrics["teacher_accuracy"]),
        "",
        _count(metrics["teacher_parameters"]),
        _count(teacher_bytes),
    )
    student_params = _count(metrics["student_parameters"])
    if metrics["scratch_accuracy"] is not None:
        table.add_row(
            "scratch student",
            _pct(metrics["scratch_accuracy"]),
            _pct(metrics["scratch_agreement"]),
            student_params,
            "",
        )
    table.add_row(
        "distilled student",
        _pct(metrics["student_accuracy"]),
        _pct(metrics["agreement"]),
        student_params,
        _count(metrics["onnx_bytes"]),
    )
    return table


def _summary(metrics: JobMetrics) -> str:
    parts = []
    if metrics["gap_closed"] is not None:
        parts.append(f"gap closed {_pct(metrics['gap_closed'])}")
    speedup = metrics["latency_ms"]["batch_1"]["speedup"]
    if speedup:
        parts.append(f"{speedup:.1f}× faster than the teacher at batch 1")
    parts.append(f"trained in {metrics['train_seconds']:.1f} s")
    return ", ".join(parts)


def _advice(metrics: JobMetrics) -> list[str]:
    """Which ONNX to ship (distilled or scratch; int8 or fp32) and any warning."""
    lines = []
    advice = metrics.get("recommendation")
    if advice:
        shipped = "student.onnx" if advice["ship"] == "student" else "scratch.onnx"
        lines.append(f"ship {shipped}: {advice['reason']}")
    int8 = metrics.get("int8")
    if int8 and int8["status"] == "built":
        lines.append(f"int8 or fp32: ship {int8['ship']} ({int8['reason']})")
    lines += [f"warning: {w}" for w in metrics.get("warnings") or []]
    return lines


def _latest(job: Job) -> EpochMetrics | None:
    """While training: metrics.latest; once done, the last epoch of metrics.history."""
    progress, report = job_progress(job), job_metrics(job)
    if progress is not None:
        return progress["latest"]
    history = report["history"] if report is not None else []
    return history[-1] if history else None


def watch(client: Client, job_id: str, as_json: bool = False) -> int:
    """A live progress bar (on stderr with --json) until the job ends, then the comparison
    table; 0 if it succeeded, 1 if it failed or was cancelled."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("epoch {task.completed}/{task.total}"),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=errors if as_json else console,
    ) as bar:
        task = bar.add_task(job_id, total=None, detail="")

        def update(job: Job) -> None:
            latest, detail = _latest(job), ""
            if latest is not None:
                detail = f"loss {latest['loss']:.4f}"
                if latest["validation_accuracy"] is not None:
                    detail += f"  val acc {_pct(latest['validation_accuracy'])}"
            bar.update(
                task,
                total=job["epochs"],
                completed=job["epoch"],
                description=f"{job['id']} {job['status']}: {job['stage']}",
                detail=detail,
            )

        job = client.wait(job_id, on_update=update)
    if as_json:
        _print_json(job)
    elif (report := job_metrics(job)) is not None:
        try:
            teacher_bytes: int | None = client.get_teacher(job["teacher_id"])["bytes"]
        except DistilleryError:
            teacher_bytes = None
        console.print(comparison(report, job["id"], teacher_bytes))
        console.print(_summary(report), markup=False)
        for line in _advice(report):
            console.print(line, markup=False)
    if job["status"] == "succeeded":
        return 0
    error = job.get("error")
    because = f": {error['code']}: {error['message']}" if error else ""
    errors.print(f"job {job_id} {job['status']}{because}", markup=False, highlight=False)
    return 1


def cmd_jobs_watch(client: Client, args: argparse.Namespace) -> int:
    return watch(client, args.job_id, as_json=args.json)


def cmd_jobs_list(client: Client, args: argparse.Namespace) -> int:
    page = client.list_jobs(limit=args.limit, after=args.after, status=args.status)
    if args.json:
        _print_json(page)
        return 0
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("id", no_wrap=True, min_width=28)  # ids are never cut
    table.add_column("status", no_wrap=True)
    for column in ("epoch", "teacher", "student", "created"):
        table.add_column(column, no_wrap=True, justify="right")
    for job in page["data"]:
        report = job_metrics(job)
        running = job["status"] == "running"
        table.add_row(
            job["id"],
            f"running: {job['stage']}" if running else job["status"],
            f"{job['epoch']}/{job['epochs']}",
            _pct(report["teacher_accuracy"] if report else None),
            _pct(report["student_accuracy"] if report else None),
            str(job["created_at"])[5:16].replace("T", " "),
        )
    console.print(table)
    if page["has_more"]:
        console.print(f"more: distillery jobs list --after {page['next_after']}", markup=False)
    return 0


def cmd_jobs_cancel(client: Client, args: argparse.Namespace) -> int:
    job = client.cancel_job(args.job_id)
    if args.json:
        _print_json(job)
        return 0
    note = {"running": "  (stopping within an epoch)", "succeeded": "  (had already ended)"}
    console.print(f"{job['id']}  {job['status']}{note.get(job['status'], '')}", markup=False)
    return 0


def cmd_jobs_download(client: Client, args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    artifacts = client.list_artifacts(args.job_id)
    chosen = [a for a in artifacts if args.name in (None, a["name"])]
    if not chosen:
        names = ", ".join(a["name"] for a in artifacts) or "none yet"
        raise DistilleryError(
            404, "not_found", f"job {args.job_id} has no artifact {args.name!r} (it has: {names})"
        )
    folder.mkdir(parents=True, exist_ok=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        console=errors,
        transient=True,
        disable=not errors.is_terminal,
    ) as bar:
        for artifact in chosen:
            task = bar.add_task(artifact["name"], total=artifact["bytes"])

            def progress(done: int, _total: int, task: Any = task) -> None:
                bar.update(task, completed=done)

            path = client.download_artifact(args.job_id, artifact["name"], folder, progress)
            console.print(f"{path}  {artifact['bytes']:,} bytes", markup=False)
    return 0


def _json_flag(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: a --json given before the command is not reset by the subcommand's default.
    parser.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print raw JSON"
    )


def cmd_score(client: Client, args: argparse.Namespace) -> int:
    from distillery.textscore import ScoringUnavailable, class_names, score_texts

    texts = list(args.text)
    if args.file:
        texts += [
            line.rstrip("\n")
            for line in Path(args.file).read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
    if not texts:
        errors.print("give texts to score, or --file", markup=False)
        return 2
    try:
        names = class_names(Path(args.metrics)) if args.metrics else None
        scored = score_texts(Path(args.model), Path(args.tokenizer), texts, args.max_length, names)
    except ScoringUnavailable as exc:
        errors.print(str(exc), markup=False, highlight=False)
        return 2
    if getattr(args, "json", False):
        _print_json([s.__dict__ for s in scored])
        return 0
    for s in scored:
        shown = s.name if s.name is not None else str(s.label)
        console.print(
            f"{shown}\t{max(s.probabilities):.3f}\t{s.text}", markup=False, highlight=False
        )
    return 0


def _upload_commands(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    teachers = groups.add_parser("teachers", help="upload teachers").add_subparsers(
        dest="command", required=True
    )
    upload = teachers.add_parser("upload", help="upload an ONNX or .pt2 teacher")
    _json_flag(upload)
    upload.add_argument("file")
    upload.set_defaults(handler=cmd_teachers_upload)

    datasets = groups.add_parser("datasets", help="upload datasets").add_subparsers(
        dest="command", required=True
    )
    upload = datasets.add_parser("upload", help="upload NPZ, CSV, Parquet or an image zip")
    _json_flag(upload)
    upload.add_argument("file")
    upload.add_argument("--label-column", help="CSV/Parquet: the column of integer labels")
    upload.add_argument("--image-size", help="image zips: WIDTHxHEIGHT, e.g. 28x28")
    upload.add_argument("--image-mode", help="image zips: L or RGB")
    upload.set_defaults(handler=cmd_datasets_upload)


def _job_commands(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    jobs = groups.add_parser("jobs", help="submit, watch, list, cancel, download").add_subparsers(
        dest="command", required=True
    )
    submit = jobs.add_parser("submit", help="submit a job from flags and/or a YAML/JSON file")
    _json_flag(submit)
    submit.add_argument(
        "--file",
        help="job file (YAML or JSON); may name teacher_file, train_file, "
        "validation_file, test_file to upload first; flags override it",
    )
    for flag, text in (
        ("teacher", "teacher id (tch_…)"),
        ("train", "training dataset id (ds_…)"),
        ("validation", "validation dataset id (default: 15%% of the training rows)"),
        ("test", "test dataset id (default: 15%% of the training rows)"),
    ):
        submit.add_argument(f"--{flag}", metavar="ID", help=text)
    submit.add_argument("--architecture", choices=["mlp", "cnn"])
    submit.add_argument("--hidden", metavar="SIZES", help="hidden sizes, e.g. 128,64")
    submit.add_argument("--temperature", type=float)
    submit.add_argument("--alpha", type=float, help="weight of the hard-label term")
    submit.add_argument("--epochs", type=int)
    submit.add_argument("--batch-size", type=int)
    submit.add_argument("--lr", type=float, help="learning rate")
    submit.add_argument("--seed", type=int)
    submit.add_argument(
        "--gpu", action="store_true", help='run on a GPU worker ("resources": {"gpu": true})'
    )
    submit.add_argument("--watch", action="store_true", help="watch it until it ends")
    submit.set_defaults(handler=cmd_jobs_submit)
    for name, handler, text in (
        ("watch", cmd_jobs_watch, "a live progress bar until it ends, then the comparison"),
        ("cancel", cmd_jobs_cancel, "cancel a queued or running job"),
    ):
        command = jobs.add_parser(name, help=text)
        _json_flag(command)
        command.add_argument("job_id")
        command.set_defaults(handler=handler)
    listing = jobs.add_parser("list", help="jobs, newest first")
    _json_flag(listing)
    listing.add_argument(
        "--status", choices=["queued", "running", "succeeded", "failed", "cancelled"]
    )
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--after", metavar="ID", help="the page after this job")
    listing.set_defaults(handler=cmd_jobs_list)
    download = jobs.add_parser("download", help="download artifacts (all by default)")
    download.add_argument("job_id")
    download.add_argument("--dir", default=".", help="folder to write to (default .)")
    download.add_argument("--name", help="one artifact, e.g. student.onnx")
    download.set_defaults(handler=cmd_jobs_download)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distillery",
        description="Knowledge distillation as a service. Server: serve, api, worker, migrate, "
        "keys (see `distillery serve --help`). Client: teachers, datasets, jobs.",
    )
    # The client package reads its two environment variables here, and only here.
    parser.add_argument(
        "--url",
        default=os.environ.get("DISTILLERY_URL") or DEFAULT_URL,
        help=f"the server (env DISTILLERY_URL, default {DEFAULT_URL})",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("DISTILLERY_API_KEY") or None,
        help="sent as Authorization: Bearer <key> (env DISTILLERY_API_KEY)",
    )
    parser.add_argument("--json", action="store_true", help="print raw JSON")
    groups = parser.add_subparsers(dest="group", required=True, metavar="command")
    for name in SERVER_COMMANDS:
        groups.add_parser(name, help=f"server: {name}", add_help=False)

    _upload_commands(groups)
    _job_commands(groups)
    score = groups.add_parser("score", help="score texts with a downloaded text student")
    _json_flag(score)
    score.add_argument("model", help="the job's student.onnx")
    score.add_argument("tokenizer", help="the job's tokenizer.json")
    score.add_argument("text", nargs="*", help="texts to score")
    score.add_argument("--file", help="a file of texts, one a line")
    score.add_argument("--metrics", help="the job's metrics.json, to print class names")
    score.add_argument("--max-length", type=int, default=128, help="tokens kept a text")
    score.set_defaults(handler=cmd_score)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in SERVER_COMMANDS:
        try:  # lazily: the client needs no server code
            from app.cli import main as server_main
        except ImportError as exc:
            errors.print(
                f"distillery {args_list[0]} runs the service, which this install lacks "
                f"({exc.name} is missing): pip install 'distillery[server]' for the API, "
                "'distillery[server,worker]' for a worker",
                markup=False,
                highlight=False,
            )
            return 2
        return server_main(args_list)
    parser = build_parser()
    args, unknown = parser.parse_known_args(args_list)
    if args.group in SERVER_COMMANDS:
        parser.error(f"server commands come first, without client options: distillery {args.group}")
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        with Client(args.url, api_key=args.api_key) as client:
            return int(args.handler(client, args))
    except BrokenPipeError:
        # The reader went away (`distillery jobs list --json | head`): stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (DistilleryError, OSError) as exc:
        text = str(exc) if isinstance(exc, DistilleryError) else " ".join(str(exc).split())
        errors.print(f"error: {text}", markup=False, highlight=False)
        return 1
    except KeyboardInterrupt:
        errors.print("interrupted", markup=False, highlight=False)
        return 130


if __name__ == "__main__":
    sys.exit(main())
