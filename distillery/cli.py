"""`distillery`: run the service (serve, api, worker, migrate) or use one (teachers, datasets,
jobs). Server errors print as one line, not a traceback."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from distillery.client import Client, DistilleryError

SERVER_COMMANDS = ("serve", "api", "worker", "migrate", "keys")
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)


class ClientSettings(BaseSettings):
    """Where the CLI points: DISTILLERY_URL and DISTILLERY_API_KEY."""

    model_config = SettingsConfigDict(env_prefix="DISTILLERY_", extra="ignore")

    url: str = "http://127.0.0.1:8000"
    api_key: str | None = None


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * float(value):.1f}%"


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _upload(client: Client, kind: str, path: Path, **fields: Any) -> dict[str, Any]:
    with Progress(
        TextColumn(f"uploading {path.name}"),
        BarColumn(),
        DownloadColumn(),
        console=errors,
        transient=True,
    ) as bar:
        task = bar.add_task("upload", total=path.stat().st_size)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        if kind == "teacher":
            return client.upload_teacher(path, progress=progress)
        return client.upload_dataset(path, progress=progress, **fields)


def cmd_teachers_upload(client: Client, args: argparse.Namespace) -> int:
    teacher = _upload(client, "teacher", Path(args.file))
    if args.json:
        _print_json(teacher)
    else:
        console.print(
            f"{teacher['id']}  {teacher['format']}  input {teacher['input_shape']}  "
            f"{teacher['num_classes']} classes  {teacher['parameters']:,} parameters  "
            f"(output {teacher['output_name']!r}: {teacher['output_kind']})"
        )
    return 0


def cmd_datasets_upload(client: Client, args: argparse.Namespace) -> int:
    dataset = _upload(
        client,
        "dataset",
        Path(args.file),
        label_column=args.label_column,
        image_size=args.image_size,
        image_mode=args.image_mode,
    )
    if args.json:
        _print_json(dataset)
    else:
        labels = f"{dataset['num_classes']} classes" if dataset["labeled"] else "unlabeled"
        console.print(
            f"{dataset['id']}  {dataset['format']}  {dataset['rows']:,} rows  "
            f"features {dataset['feature_shape']}  {labels}"
        )
    return 0


def job_body(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    """The job from its file (YAML or JSON, one per experiment), then flags on top."""
    body: dict[str, Any] = {}
    if args.file:
        import yaml

        path = Path(args.file)
        loaded = yaml.safe_load(path.read_text())
        if not isinstance(loaded, dict):
            raise DistilleryError(0, "bad_job_file", f"{path}: expected a mapping of job fields")
        body = loaded
        for field, target in (
            ("teacher_file", "teacher_id"),
            ("train_file", "train_dataset_id"),
            ("validation_file", "validation_dataset_id"),
            ("test_file", "test_dataset_id"),
        ):
            if field in body:
                file = (path.parent / str(body.pop(field))).resolve()
                kind = "teacher" if field == "teacher_file" else "dataset"
                body[target] = _upload(client, kind, file)["id"]
    for flag, key in (
        ("teacher", "teacher_id"),
        ("train", "train_dataset_id"),
        ("validation", "validation_dataset_id"),
        ("test", "test_dataset_id"),
    ):
        if getattr(args, flag):
            body[key] = getattr(args, flag)
    student = body.setdefault("student", {})
    if args.architecture:
        student["architecture"] = args.architecture
    if args.hidden:
        student["hidden_sizes"] = [int(h) for h in args.hidden.split(",")]
    method = body.setdefault("method", {})
    for flag in ("temperature", "alpha"):
        if getattr(args, flag) is not None:
            method[flag] = getattr(args, flag)
    training = body.setdefault("training", {})
    for flag, key in (
        ("epochs", "epochs"),
        ("batch_size", "batch_size"),
        ("lr", "learning_rate"),
        ("seed", "seed"),
    ):
        if getattr(args, flag) is not None:
            training[key] = getattr(args, flag)
    return body


def cmd_jobs_submit(client: Client, args: argparse.Namespace) -> int:
    job = client.create_job(job_body(client, args))
    if args.json and not args.watch:
        _print_json(job)
        return 0
    console.print(f"{job['id']}  {job['status']}")
    return watch(client, job["id"]) if args.watch else 0


def comparison(job: dict[str, Any]) -> Table:
    metrics = job.get("metrics") or {}
    table = Table(title=f"{job['id']}: teacher, scratch and student on the same test rows")
    for column in ("", "accuracy", "agrees with teacher", "parameters"):
        table.add_column(column, justify="left" if not column else "right")
    teacher_params = metrics.get("teacher_parameters")
    table.add_row(
        "teacher",
        _pct(metrics.get("teacher_accuracy")),
        "",
        f"{teacher_params:,}" if teacher_params else "–",
    )
    student_params = metrics.get("student_parameters")
    shown = f"{student_params:,}" if student_params else "–"
    if metrics.get("scratch_accuracy") is not None:
        table.add_row(
            "student from scratch",
            _pct(metrics["scratch_accuracy"]),
            _pct(metrics.get("scratch_agreement")),
            shown,
        )
    table.add_row(
        "distilled student",
        _pct(metrics.get("student_accuracy")),
        _pct(metrics.get("agreement")),
        shown,
    )
    return table


def watch(client: Client, job_id: str) -> int:
    """A live progress bar until the job ends, then the comparison table."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("epoch {task.completed}/{task.total}"),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task(job_id, total=None, detail="")

        def update(job: dict[str, Any]) -> None:
            latest = (job.get("metrics") or {}).get("latest") or {}
            detail = ""
            if latest:
                detail = (
                    f"loss {latest['loss']:.4f}  val acc {_pct(latest.get('validation_accuracy'))}"
                )
            bar.update(
                task,
                total=job["epochs"],
                completed=job["epoch"],
                description=f"{job['id']} {job['status']}: {job['stage']}",
                detail=detail,
            )

        job = client.wait(job_id, on_update=update)
    if job["status"] == "succeeded":
        console.print(comparison(job))
        return 0
    error = job.get("error") or {}
    errors.print(
        f"job {job_id} {job['status']}"
        + (f": {error.get('code')}: {error.get('message')}" if error else "")
    )
    return 1


def cmd_jobs_watch(client: Client, args: argparse.Namespace) -> int:
    return watch(client, args.job_id)


def cmd_jobs_list(client: Client, args: argparse.Namespace) -> int:
    page = client.list_jobs(limit=args.limit, status=args.status)
    if args.json:
        _print_json(page)
        return 0
    table = Table()
    for column in ("id", "status", "stage", "epoch", "student acc", "created"):
        table.add_column(column)
    for job in page["data"]:
        metrics = job.get("metrics") or {}
        table.add_row(
            job["id"],
            job["status"],
            job["stage"],
            f"{job['epoch']}/{job['epochs']}",
            _pct(metrics.get("student_accuracy")),
            str(job["created_at"])[:19],
        )
    console.print(table)
    return 0


def cmd_jobs_cancel(client: Client, args: argparse.Namespace) -> int:
    job = client.cancel_job(args.job_id)
    console.print(
        f"{job['id']}  {job['status']}"
        + ("  (stopping within an epoch)" if job["status"] == "running" else "")
    )
    return 0


def cmd_jobs_download(client: Client, args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    artifacts = client.list_artifacts(args.job_id)
    chosen = [a for a in artifacts if args.name in (None, a["name"])]
    if not chosen:
        raise DistilleryError(404, "not_found", f"job {args.job_id} has no artifact {args.name!r}")
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        console=errors,
        transient=True,
    ) as bar:
        for artifact in chosen:
            task = bar.add_task(artifact["name"], total=artifact["bytes"])

            def progress(done: int, _total: int, task: Any = task) -> None:
                bar.update(task, completed=done)

            path = client.download_artifact(args.job_id, artifact["name"], folder, progress)
            console.print(f"{path}  {artifact['bytes']:,} bytes")
    return 0


def _json_flag(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: a flag given before the command is not reset by the subcommand's default.
    parser.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print raw JSON"
    )


def build_parser() -> argparse.ArgumentParser:
    settings = ClientSettings()
    parser = argparse.ArgumentParser(
        prog="distillery",
        description="Knowledge distillation as a service. Server: serve, api, worker, migrate "
        "(see `distillery serve --help`). Client: teachers, datasets, jobs.",
    )
    parser.add_argument("--url", default=settings.url, help="server (DISTILLERY_URL)")
    parser.add_argument("--api-key", default=settings.api_key, help="(DISTILLERY_API_KEY)")
    parser.add_argument("--json", action="store_true", help="print raw JSON")
    groups = parser.add_subparsers(dest="group", required=True)
    for name in SERVER_COMMANDS:
        groups.add_parser(
            name, help=f"server: {name} (see `distillery {name} --help`)", add_help=False
        )

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
    upload.add_argument("--label-column")
    upload.add_argument("--image-size", help="image zips: WIDTHxHEIGHT")
    upload.add_argument("--image-mode", help="image zips: L or RGB")
    upload.set_defaults(handler=cmd_datasets_upload)

    jobs = groups.add_parser("jobs", help="submit, watch, list, cancel, download").add_subparsers(
        dest="command", required=True
    )
    submit = jobs.add_parser("submit", help="submit a job from flags or a YAML/JSON file")
    _json_flag(submit)
    submit.add_argument("--file", help="job file; may name teacher_file/train_file/test_file")
    for flag in ("teacher", "train", "validation", "test"):
        submit.add_argument(f"--{flag}", help=f"{flag} id")
    submit.add_argument("--architecture", choices=["mlp", "cnn"])
    submit.add_argument("--hidden", help="hidden sizes, e.g. 128,64")
    submit.add_argument("--temperature", type=float)
    submit.add_argument("--alpha", type=float, help="weight of the hard-label term")
    submit.add_argument("--epochs", type=int)
    submit.add_argument("--batch-size", type=int)
    submit.add_argument("--lr", type=float)
    submit.add_argument("--seed", type=int)
    submit.add_argument("--watch", action="store_true", help="watch it until it ends")
    submit.set_defaults(handler=cmd_jobs_submit)
    for name, handler, text in (
        ("watch", cmd_jobs_watch, "a live progress bar until it ends"),
        ("cancel", cmd_jobs_cancel, "cancel a queued or running job"),
    ):
        command = jobs.add_parser(name, help=text)
        command.add_argument("job_id")
        command.set_defaults(handler=handler)
    listing = jobs.add_parser("list", help="jobs, newest first")
    _json_flag(listing)
    listing.add_argument("--status")
    listing.add_argument("--limit", type=int, default=20)
    listing.set_defaults(handler=cmd_jobs_list)
    download = jobs.add_parser("download", help="download artifacts")
    download.add_argument("job_id")
    download.add_argument("--dir", default=".")
    download.add_argument("--name", help="one artifact, e.g. student.onnx")
    download.set_defaults(handler=cmd_jobs_download)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in SERVER_COMMANDS:
        from app.cli import main as server_main

        return server_main(args_list)
    args = build_parser().parse_args(args_list)
    try:
        with Client(args.url, api_key=args.api_key) as client:
            return int(args.handler(client, args))
    except DistilleryError as exc:
        errors.print(f"error: {exc}", markup=False, highlight=False)
        return 1
    except (OSError, ValueError) as exc:
        errors.print(f"error: {exc}", markup=False, highlight=False)
        return 1


if __name__ == "__main__":
    sys.exit(main())
