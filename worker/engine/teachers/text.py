"""Text classifier teachers, uploaded as a zip of the folder that `save_pretrained` writes:
config.json + model.safetensors + the tokenizer files (transformers format), or the layout
optimum exports, model.onnx + the tokenizer files (+ config.json for the label names).

Nothing in the upload runs: `auto_map` and `trust_remote_code` are refused, and so are `.py`
files, `pytorch_model.bin` and every other pickle; the architecture must be a
sequence-classification class the installed transformers defines, built from the config, its
weights read from safetensors. Rows are (N, 2, L) float32: token ids, then the attention
mask (worker/engine/text/tokens.py)."""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from worker.engine.teacher_runtime import Placement, torch_device, transformer_row_bytes
from worker.engine.teachers.base import OutputKind, TeacherRejected
from worker.engine.text.tokens import TextEncoder, TokenizerRejected, ids_and_mask, read_config

SAVE_ADVICE = (
    "save the model with model.save_pretrained(folder, safe_serialization=True) and "
    "tokenizer.save_pretrained(folder), and zip the folder"
)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "sentencepiece.bpe.model",
    "spm.model",
)
MODEL_FILES = ("config.json", "model.safetensors", "model.onnx", "generation_config.json")
PICKLED = (".bin", ".pkl", ".pickle", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".joblib", ".npy")
MAX_UNPACKED_BYTES = 8 * 1024**3
MAX_MEMBERS = 64
TEXT_LENGTH = 128  # the longest rows a job makes by default (at most the teacher's limit)
TEXT_BATCH_ROWS = 64  # rows per batch in-process when the caller names none
# Models whose position embeddings hold two extra rows (padding index + 1).
OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "longformer")


def text_layout(names: list[str]) -> str | None:
    """'transformers' or 'onnx' when the zip holds a model folder, else None."""
    base = {PurePosixPath(n).name for n in names if not n.endswith("/")}
    if "tokenizer.json" not in base and "config.json" not in base:
        return None
    if "model.onnx" in base:
        return "onnx"
    return "transformers"


def _check_members(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """The model folder's files by name; a file that could run code is refused, naming it."""
    infos = [i for i in archive.infolist() if not i.is_dir()]
    if len(infos) > MAX_MEMBERS:
        raise TeacherRejected(f"the zip holds {len(infos)} files; a model folder has a few")
    found: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name = PurePosixPath(info.filename)
        if name.suffix == ".py":
            raise TeacherRejected(
                f"the zip carries code ({info.filename}); Distillery never runs code from an "
                f"upload: use an architecture transformers defines; {SAVE_ADVICE}"
            )
        if name.suffix in PICKLED or name.name.startswith("pytorch_model"):
            raise TeacherRejected(
                f"the zip carries {info.filename}, a pickle, which Distillery never loads: "
                f"{SAVE_ADVICE}"
            )
        if name.name in found:
            raise TeacherRejected(f"the zip holds two files named {name.name}")
        if name.name in TOKENIZER_FILES + MODEL_FILES:
            found[name.name] = info
    if sum(i.file_size for i in found.values()) > MAX_UNPACKED_BYTES:
        raise TeacherRejected("the model folder unpacks to more than 8 GiB")
    if "tokenizer.json" not in found:
        raise TeacherRejected(
            "the zip has no tokenizer.json: save the tokenizer beside the model with "
            "tokenizer.save_pretrained(folder) (a fast tokenizer)"
        )
    return found


def _config(folder: Path, required: bool) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.exists():
        if required:
            raise TeacherRejected(f"the zip has no config.json; {SAVE_ADVICE}")
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise TeacherRejected("config.json is not valid JSON") from exc
    if not isinstance(config, dict):
        raise TeacherRejected("config.json is not a JSON object")
    for key in ("auto_map", "trust_remote_code"):
        if key in config:
            raise TeacherRejected(
                f"config.json asks to run code shipped with the model ({key}); Distillery "
                "never runs code from an upload: use an architecture transformers defines"
            )
    return config


def class_names(config: dict[str, Any], num_classes: int) -> list[str]:
    labels = config.get("id2label") or {}
    try:
        by_id = {int(k): str(v) for k, v in labels.items()}
    except (AttributeError, ValueError):
        by_id = {}
    return [by_id.get(i, f"LABEL_{i}") for i in range(num_classes)]


class _TextTeacher:
    """What both text layouts share: the unpacked folder, the tokenizer, the details."""

    output_name = "logits"
    output_kind: OutputKind = "logits"
    fixed_batch: int | None = None
    fingerprint: str | None = None
    format: str
    num_classes: int
    parameters: int
    max_length: int
    input_names: list[str]

    def __init__(self, path: Path, layout: str, placement: Placement | None = None) -> None:
        self.placement = placement or Placement()
        self._workdir = Path(tempfile.mkdtemp(prefix="text-teacher-"))
        try:
            with zipfile.ZipFile(path) as archive:
                for name, info in _check_members(archive).items():
                    with archive.open(info) as source, (self._workdir / name).open("wb") as out:
                        shutil.copyfileobj(source, out, 1024 * 1024)
        except zipfile.BadZipFile as exc:
            raise TeacherRejected("the file is a damaged zip archive") from exc
        self.folder = self._workdir
        self.config = _config(self.folder, required=layout == "transformers")
        try:
            self.encoder = TextEncoder(
                self.folder / "tokenizer.json", read_config(self.folder / "tokenizer_config.json")
            )
        except TokenizerRejected as exc:
            raise TeacherRejected(f"{exc}; {SAVE_ADVICE}") from exc

    def __del__(self) -> None:
        shutil.rmtree(getattr(self, "_workdir", ""), ignore_errors=True)

    input_shape: tuple[int, ...] = (2, TEXT_LENGTH)

    def logits(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        raise NotImplementedError

    @property
    def row_activation_bytes(self) -> int:
        """A row of input_shape[1] tokens through the encoder its config describes."""
        config = self.config
        hidden = int(config.get("hidden_size") or config.get("dim") or 768)
        return transformer_row_bytes(
            self.input_shape[1],
            hidden,
            int(config.get("intermediate_size") or config.get("hidden_dim") or 4 * hidden),
            int(config.get("num_attention_heads") or config.get("n_heads") or 12),
            4 * int(np.prod(self.input_shape)),
        )

    @property
    def details(self) -> dict[str, Any]:
        return {
            "modality": "text",
            "class_names": class_names(self.config, self.num_classes),
            "input_names": self.input_names,
            "vocab_size": self.encoder.vocab_size,
            "max_length": self.max_length,
            "hint_candidates": [],
        }

    def _check_vocabulary(self, model_vocab: int | None) -> None:
        if model_vocab is not None and self.encoder.vocab_size > model_vocab:
            raise TeacherRejected(
                f"the tokenizer has {self.encoder.vocab_size} tokens but the model's embedding "
                f"table {model_vocab}: tokenizer.json does not belong to this model"
            )

    def _rows(self, x: np.ndarray, vocab: int) -> tuple[np.ndarray, np.ndarray]:
        ids, mask = ids_and_mask(np.asarray(x, dtype=np.float32))
        return np.clip(ids, 0, vocab - 1), mask


class TransformersTeacher(_TextTeacher):
    format = "transformers"

    def __init__(self, path: Path, placement: Placement | None = None) -> None:
        super().__init__(path, "transformers", placement)
        if not (self.folder / "model.safetensors").exists():
            raise TeacherRejected(f"the zip has no model.safetensors; {SAVE_ADVICE}")
        self.device = torch_device(self.placement)
        self.model = self._build().to(self.device)
        config = self.model.config
        self.num_classes = int(config.num_labels)
        self.parameters = int(sum(p.numel() for p in self.model.parameters()))
        positions = int(getattr(config, "max_position_embeddings", 512) or 512)
        offset = 2 if config.model_type in OFFSET_POSITIONS else 0
        self.max_length = max(8, positions - offset)
        self.vocab = int(config.vocab_size)
        self._check_vocabulary(self.vocab)
        self.input_names = ["input_ids", "attention_mask"]
        if getattr(config, "type_vocab_size", 0):
            self.input_names.append("token_type_ids")
        self.input_shape = (2, min(TEXT_LENGTH, self.max_length))

    def _build(self) -> Any:
        import transformers

        architectures = self.config.get("architectures") or []
        name = str(architectures[0]) if architectures else ""
        if not name.endswith("ForSequenceClassification"):
            raise TeacherRejected(
                f"config.json's architecture is {name or 'not given'}: a teacher is a "
                "sequence-classification model (e.g. BertForSequenceClassification), with its "
                "classification head"
            )
        found = getattr(transformers, name, None)
        if not isinstance(found, type):
            raise TeacherRejected(f"transformers {transformers.__version__} defines no {name}")
        model_class: Any = found
        try:
            model = model_class.from_pretrained(
                str(self.folder),
                use_safetensors=True,
                trust_remote_code=False,
                local_files_only=True,
            )
        except Exception as exc:
            raise TeacherRejected(
                f"the model cannot be built from its config and weights: {str(exc)[:300]}"
            ) from exc
        return model.eval()

    def logits(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        import torch

        if len(x) == 0:
            return np.zeros((0, self.num_classes), np.float32)
        ids, mask = self._rows(x, self.vocab)
        rows, outputs = batch_size or TEXT_BATCH_ROWS, []
        with torch.inference_mode():
            for start in range(0, len(ids), rows):
                part = slice(start, start + rows)
                out = self.model(
                    input_ids=torch.from_numpy(ids[part]).to(self.device),
                    attention_mask=torch.from_numpy(mask[part]).to(self.device),
                ).logits
                outputs.append(out.float().cpu().numpy())
        return np.concatenate(outputs).astype(np.float32, copy=False)


class OnnxTextTeacher(_TextTeacher):
    """optimum's layout: model.onnx taking input_ids, attention_mask (and token_type_ids)."""

    format = "onnx-text"
    INPUTS = ("input_ids", "attention_mask", "token_type_ids")

    def __init__(self, path: Path, placement: Placement | None = None) -> None:
        import onnxruntime as ort

        from worker.engine.teachers.onnx import providers, ran_on, session_options

        super().__init__(path, "onnx", placement)
        try:
            self.session = ort.InferenceSession(
                str(self.folder / "model.onnx"),
                session_options(self.placement),
                providers=providers(self.placement),
            )
        except Exception as exc:
            raise TeacherRejected(f"onnxruntime cannot run model.onnx: {str(exc)[:300]}") from exc
        self.device = ran_on(self.session)
        inputs = self.session.get_inputs()
        names = [i.name for i in inputs]
        if not names or any(n not in self.INPUTS for n in names) or "input_ids" not in names:
            raise TeacherRejected(
                f"model.onnx takes {names}; a text teacher takes input_ids and optionally "
                "attention_mask and token_type_ids"
            )
        self.input_names = names
        self._int32 = {i.name: i.type == "tensor(int32)" for i in inputs}
        self.vocab = self.encoder.vocab_size
        self.max_length = int(self.config.get("max_position_embeddings", 512) or 512)
        if str(self.config.get("model_type", "")) in OFFSET_POSITIONS:
            self.max_length -= 2
        probe = self.logits(np.zeros((2, 2, 8), np.float32))
        if probe.ndim != 2 or probe.shape[1] < 2:
            raise TeacherRejected(
                f"model.onnx answers {list(probe.shape)}; a classifier answers [batch, classes]"
            )
        self.num_classes = int(probe.shape[1])
        self.parameters = _onnx_parameters(self.folder / "model.onnx")
        self.input_shape = (2, min(TEXT_LENGTH, self.max_length))

    def logits(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        if len(x) == 0:
            return np.zeros((0, getattr(self, "num_classes", 2)), np.float32)
        ids, mask = self._rows(x, self.vocab)
        rows, outputs = batch_size or TEXT_BATCH_ROWS, []
        for start in range(0, len(ids), rows):
            part = slice(start, start + rows)
            feed = {
                "input_ids": ids[part],
                "attention_mask": mask[part],
                "token_type_ids": np.zeros_like(ids[part]),
            }
            chosen = {
                n: feed[n].astype(np.int32 if self._int32[n] else np.int64)
                for n in self.input_names
            }
            outputs.append(np.asarray(self.session.run(None, chosen)[0], dtype=np.float32))
        return np.concatenate(outputs)


def _onnx_parameters(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return int(
        sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type in (1, 10, 11, 16))
    )


def load_text_teacher(path: Path, layout: str, placement: Placement | None = None) -> _TextTeacher:
    if layout == "onnx":
        return OnnxTextTeacher(path, placement)
    return TransformersTeacher(path, placement)
