"""The teacher labels at the speed of its runtime (issue 15): a transfer set labelled through
the job's confined teacher process against the same model run directly in this process.

    .venv/bin/python bench/teacher.py [--rows 50000] [--passes 6] [--teachers cnn,mlp,bert]
                                      [--devices cpu] [--threads 0] [--baseline-heap default]

For each teacher, in one run: the job's path (worker/sandbox.py SandboxedTeacher: a confined
child process, worker/teacher_process.py and worker/confinement.py, with the memory limit
DISTILLERY_TEACHER_MEMORY_BYTES and the threads a production job gets), labelling `--rows`
rows as a job labels its transfer set; and the same model in this process, in batches of the
size the confined teacher chose: the ONNX file in an onnxruntime session with its default
options, the BERT in plain PyTorch (inference mode). The two take turns pass by pass after a
warm-up pass (which goes first alternates, so an even number of passes weighs both orders
alike; each pass is followed by a pause in which the runtime's spinning threads go to sleep,
else they slow whichever path runs next); prints the rows/s of each (median over passes)
and the ratio (the median of the passes' ratios, so that drift in a shared machine's speed
cancels) against the target 0.9x, and the fastest pass of each against the other's (other
work only ever slows a pass down).

Teachers, none downloaded: `cnn`, a digits CNN of 281,674 parameters (ONNX); `mlp`, a digits
MLP 64-512-512-10 of 300,554 parameters (ONNX, little compute a row: the pipes weigh most);
`bert`, a BERT for sequence classification built from a config (2 layers, hidden 64, 32
tokens a row) with a WordPiece tokenizer trained here, zipped as `save_pretrained` writes it.
`--devices cpu,cuda` also runs each on the GPU (bench/gpu_check.sh). Asserts nothing.

The confined process keeps its batches' memory between batches (worker/heap.py); this process
runs with glibc's defaults, as a user's own script would. `--baseline-heap kept` gives this
process the same allocator settings: the like-for-like figure, what confinement itself costs."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# Nothing is downloaded: every model and tokenizer is made here.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from app.settings import Settings  # noqa: E402
from tests.support.data import digits  # noqa: E402
from tests.support.teachers import save_onnx  # noqa: E402
from tests.support.text import text_task, train_tokenizer, zip_folder  # noqa: E402
from worker.engine.teacher_runtime import Device  # noqa: E402
from worker.heap import keep_batch_memory  # noqa: E402
from worker.sandbox import SandboxedTeacher, SandboxLimits  # noqa: E402

TARGET = 0.9
PAUSE_SECONDS = 0.5
TEXT_LENGTH = 32
Label = Callable[[np.ndarray, int], np.ndarray]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class BenchTeacher:
    name: str
    path: Path  # the upload: an .onnx file, or a zipped save_pretrained folder
    rows: np.ndarray  # what the job sends: the transfer set's rows
    in_process: Callable[[Device, int], Label]  # the model in this process, on a device


def _digit_rows(count: int) -> np.ndarray:
    """`count` mixup rows of the digits (pairs of training images blended): a transfer set."""
    x = digits().x_train
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(x), (2, count))
    weight = rng.beta(1.0, 1.0, (count, 1, 1, 1)).astype(np.float32)
    return (weight * x[a] + (1 - weight) * x[b]).astype(np.float32)


def _onnx_in_process(path: Path) -> Callable[[Device, int], Label]:
    """The ONNX file in an onnxruntime session with default options (its own threads)."""

    def make(device: Device, _threads: int) -> Label:
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            providers.insert(0, "CUDAExecutionProvider")
        session = ort.InferenceSession(str(path), providers=providers)
        name = session.get_inputs()[0].name

        def label(x: np.ndarray, batch: int) -> np.ndarray:
            starts = range(0, len(x), batch)
            return np.concatenate([session.run(None, {name: x[i : i + batch]})[0] for i in starts])

        return label

    return make


def image_teacher(name: str, folder: Path, rows: int) -> BenchTeacher:
    torch.manual_seed(0)
    if name == "cnn":
        model = torch.nn.Sequential(
            torch.nn.Conv2d(1, 32, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(32, 64, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Flatten(),
            torch.nn.Linear(64 * 8 * 8, 64),
            torch.nn.ReLU(),
            torch.nn.Linear(64, 10),
        )
    else:
        model = torch.nn.Sequential(
            torch.nn.Flatten(),
            torch.nn.Linear(64, 512),
            torch.nn.ReLU(),
            torch.nn.Linear(512, 512),
            torch.nn.ReLU(),
            torch.nn.Linear(512, 10),
        )
    path = save_onnx(model.eval(), torch.zeros(2, 1, 8, 8), folder / f"{name}.onnx")
    return BenchTeacher(name, path, _digit_rows(rows), _onnx_in_process(path))


def _bert_folder(folder: Path) -> Path:
    """A BERT classifier built from a config (seeded, untrained: speed is the question) and
    a tokenizer trained here, saved as save_pretrained saves them."""
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    task = text_task(2000, seed=0)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=train_tokenizer(task.texts),
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=64,
        num_labels=4,
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def _text_rows(folder: Path, count: int) -> np.ndarray:
    """(count, 2, TEXT_LENGTH) rows as a text job sends them: token ids, then the mask."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(folder))
    texts = text_task(count, seed=1).texts
    encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=TEXT_LENGTH)
    ids = np.asarray(encoded["input_ids"], np.float32)
    mask = np.asarray(encoded["attention_mask"], np.float32)
    return np.stack([ids, mask], axis=1)


def _torch_in_process(folder: Path) -> Callable[[Device, int], Label]:
    """The BERT in plain PyTorch, inference mode, this process's threads (torch's default)."""

    def make(device: Device, _threads: int) -> Label:
        from transformers import BertForSequenceClassification

        model = BertForSequenceClassification.from_pretrained(str(folder)).eval().to(device)

        def label(x: np.ndarray, batch: int) -> np.ndarray:
            ids = torch.from_numpy(x[:, 0].round().astype(np.int64))
            mask = torch.from_numpy((x[:, 1] > 0.5).astype(np.int64))
            parts = []
            with torch.inference_mode():
                for i in range(0, len(x), batch):
                    out = model(
                        input_ids=ids[i : i + batch].to(device),
                        attention_mask=mask[i : i + batch].to(device),
                    )
                    parts.append(out.logits.float().cpu().numpy())
            return np.concatenate(parts)

        return label

    return make


def text_teacher(folder: Path, rows: int) -> BenchTeacher:
    saved = _bert_folder(folder / "bert")
    path = zip_folder(saved, folder / "bert.zip")
    return BenchTeacher("bert", path, _text_rows(saved, rows), _torch_in_process(saved))


@dataclass(frozen=True)
class Figures:
    teacher: str
    device: str
    runtime: str
    batch: int
    confined: float  # rows/s, median over passes
    in_process: float
    ratio: float  # median of the passes' ratios
    best: float  # the fastest pass of one against the fastest of the other
    passes: list[float]


def _timed(label: Callable[[], np.ndarray]) -> float:
    started = time.perf_counter()
    label()
    elapsed = time.perf_counter() - started
    # A runtime's worker threads spin a while after their last batch before they sleep;
    # without a pause they take cores from whichever path runs next (an order effect).
    time.sleep(PAUSE_SECONDS)
    return elapsed


def measure(teacher: BenchTeacher, limits: SandboxLimits, passes: int) -> Figures:
    """Both paths in turns (which goes first alternates), after a warm-up pass each."""
    x = teacher.rows
    with SandboxedTeacher(teacher.path, limits) as confined:
        runtime = confined.runtime
        batch = runtime.batch_rows
        local = teacher.in_process(limits.device, limits.threads)
        same = np.abs(confined.logits(x[:4096]) - local(x[:4096], batch)).max()
        log(f"  {teacher.name}: {runtime.sentence()}; largest difference {same:.2e}")
        times: dict[str, list[float]] = {"confined": [], "in process": []}
        for number in range(passes):
            turns = [
                ("confined", lambda: confined.logits(x)),
                ("in process", lambda: local(x, batch)),
            ]
            for name, run in turns if number % 2 else reversed(turns):
                times[name].append(_timed(run))
            log(
                f"  pass {number + 1}: confined {len(x) / times['confined'][-1]:,.0f} rows/s, "
                f"in process {len(x) / times['in process'][-1]:,.0f} rows/s"
            )
    ratios = [a / b for a, b in zip(times["in process"], times["confined"], strict=True)]
    return Figures(
        teacher.name,
        runtime.device,
        f"{runtime.threads} threads" if runtime.threads else "default threads",
        batch,
        len(x) / statistics.median(times["confined"]),
        len(x) / statistics.median(times["in process"]),
        statistics.median(ratios),
        min(times["in process"]) / min(times["confined"]),
        ratios,
    )


def show(rows: int, figures: list[Figures], baseline_heap: str = "default") -> None:
    heap = "glibc's default heap" if baseline_heap == "default" else "its heap kept as the job's"
    print(
        f"\nLabelling {rows:,} rows: the job's confined teacher against its runtime in-process "
        f"({heap})"
    )
    print(
        "| teacher | device | threads | batch | confined rows/s | in-process rows/s "
        "| ratio (median of passes) | best against best |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for f in figures:
        verdict = "met" if f.ratio >= TARGET else "missed"
        print(
            f"| {f.teacher} | {f.device} | {f.runtime} | {f.batch} | {f.confined:,.0f} | "
            f"{f.in_process:,.0f} | {f.ratio:.2f}x (target {TARGET}x: {verdict}) | {f.best:.2f}x |"
        )
    for f in figures:
        each = ", ".join(f"{r:.2f}" for r in f.passes)
        print(f"{f.teacher} on {f.device}, each pass's ratio: {each}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--passes", type=int, default=6)
    parser.add_argument("--teachers", default="cnn,mlp,bert")
    parser.add_argument("--devices", default="cpu")
    parser.add_argument(
        "--threads", type=int, default=0, help="the teacher's threads (0: a production job's)"
    )
    parser.add_argument(
        "--baseline-heap",
        choices=["default", "kept"],
        default="default",
        help="kept: the in-process run keeps its batches' memory as the confined one does",
    )
    args = parser.parse_args(argv)
    # As a production worker runs one job at a time (worker_concurrency 1): the job's threads.
    settings = Settings(broker_url="redis://bench")
    if args.baseline_heap == "kept":
        keep_batch_memory(settings.teacher_memory_bytes)
    threads = args.threads or settings.resolved_job_threads
    figures = []
    with tempfile.TemporaryDirectory(prefix="bench-teacher-") as folder:
        for name in args.teachers.split(","):
            log(f"{name}: making the teacher and {args.rows:,} rows")
            teacher = (
                text_teacher(Path(folder), args.rows)
                if name == "bert"
                else image_teacher(name, Path(folder), args.rows)
            )
            for device in args.devices.split(","):
                limits = SandboxLimits(
                    settings.teacher_memory_bytes,
                    settings.teacher_cpu_seconds,
                    threads=threads,
                    device="cuda" if device == "cuda" else "cpu",
                )
                figures.append(measure(teacher, limits, args.passes))
    show(args.rows, figures, args.baseline_heap)
    return 0


if __name__ == "__main__":
    sys.exit(main())
