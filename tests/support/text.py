"""Text teachers and data the tests and benches make on the spot: a generated 4-class task
that needs word order (negation, contrast), a WordPiece tokenizer trained here with
`tokenizers`, and a tiny BERT built from a config and trained on the task, saved as
`save_pretrained` saves it and zipped as a user uploads it. Nothing is downloaded."""

from __future__ import annotations

import csv
import random
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CLASS_NAMES = ["film good", "film bad", "food good", "food bad"]
TOPICS = {
    "film": ["movie", "film", "plot", "actor", "scene"],
    "food": ["soup", "pasta", "salad", "bread", "dish"],
}
GOOD = ["good", "great", "fine", "lovely", "superb"]
BAD = ["bad", "awful", "dull", "poor", "bland"]
FILLER = ["really", "quite", "truly", "very", "rather"]


@dataclass(frozen=True)
class TextTask:
    texts: list[str]
    labels: list[int]

    def names(self) -> list[str]:
        return [CLASS_NAMES[label] for label in self.labels]


def _sentence(rng: random.Random) -> tuple[str, int]:
    """'the soup was not bad but the pasta was awful': the clause after 'but' decides, and
    'not' flips a clause's sentiment."""
    topic = rng.choice(list(TOPICS))

    def clause() -> tuple[str, bool]:
        good = rng.random() < 0.5
        negated = rng.random() < 0.4
        word = rng.choice(GOOD if good else BAD)
        filler = rng.choice(FILLER) + " " if rng.random() < 0.5 else ""
        text = f"the {rng.choice(TOPICS[topic])} was {'not ' if negated else ''}{filler}{word}"
        return text, good != negated

    first, verdict = clause()
    if rng.random() < 0.5:
        second, verdict = clause()
        first = f"{first} but {second}"
    label = CLASS_NAMES.index(f"{topic} {'good' if verdict else 'bad'}")
    return first, label


def text_task(rows: int, seed: int) -> TextTask:
    rng = random.Random(seed)
    pairs = [_sentence(rng) for _ in range(rows)]
    return TextTask([t for t, _ in pairs], [label for _, label in pairs])


def save_csv(path: Path, task: TextTask, labels: str = "names") -> Path:
    """text,label with class names (labels="names"), ids ("ids") or no label column ("none")."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text"] if labels == "none" else ["text", "label"])
        for text, label in zip(task.texts, task.labels, strict=True):
            if labels == "none":
                writer.writerow([text])
            else:
                writer.writerow([text, CLASS_NAMES[label] if labels == "names" else label])
    return path


def train_tokenizer(texts: list[str]) -> Any:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer.train_from_iterator(
        texts, trainers.WordPieceTrainer(vocab_size=400, special_tokens=specials)
    )
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return tokenizer


@dataclass(frozen=True)
class TextTeacherFiles:
    folder: Path  # what save_pretrained wrote
    zip: Path  # the folder, zipped as a user uploads it
    accuracy: float  # on held-out generated rows
    parameters: int


def train_bert_teacher(
    folder: Path, task: TextTask, test: TextTask, epochs: int = 4, seed: int = 0
) -> TextTeacherFiles:
    """A tiny BERT (2 layers, hidden 64) trained on the task for a few epochs on the CPU."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    torch.manual_seed(seed)
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
        num_labels=len(CLASS_NAMES),
        id2label=dict(enumerate(CLASS_NAMES)),
        label2id={n: i for i, n in enumerate(CLASS_NAMES)},
    )
    model = BertForSequenceClassification(config)
    encoded = tokenizer(
        task.texts, padding=True, truncation=True, max_length=64, return_tensors="pt"
    )
    labels = torch.tensor(task.labels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(labels)).split(32):
            out = model(
                input_ids=encoded["input_ids"][idx],
                attention_mask=encoded["attention_mask"][idx],
                labels=labels[idx],
            )
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
    model.eval()
    held = tokenizer(test.texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        predicted = model(**held).logits.argmax(1).numpy()
    accuracy = float((predicted == np.array(test.labels)).mean())
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return TextTeacherFiles(
        folder,
        zip_folder(folder, folder.with_suffix(".zip")),
        accuracy,
        sum(p.numel() for p in model.parameters()),
    )


def zip_folder(
    folder: Path, path: Path, extra: dict[str, bytes] | None = None, skip: tuple[str, ...] = ()
) -> Path:
    """The model folder as one zip (optionally with files added or left out)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(folder.iterdir()):
            if file.name not in skip:
                archive.write(file, f"model/{file.name}")
        for name, data in (extra or {}).items():
            archive.writestr(f"model/{name}", data)
    return path


def export_onnx_teacher(files: TextTeacherFiles, folder: Path) -> Path:
    """The teacher in optimum's layout: model.onnx (input_ids, attention_mask; batch and
    sequence dynamic) beside the tokenizer files and config.json, zipped."""
    import shutil

    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(files.folder)).eval()

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            logits: torch.Tensor = self.model(
                input_ids=input_ids, attention_mask=attention_mask
            ).logits
            return logits

    folder.mkdir(parents=True, exist_ok=True)
    example = torch.ones(2, 8, dtype=torch.long)
    axes = {0: "batch", 1: "sequence"}
    torch.onnx.export(
        Logits(),
        (example, example),
        str(folder / "model.onnx"),
        input_names=["input_ids", "attention_mask"],
        output_names=["logits"],
        dynamic_axes={"input_ids": axes, "attention_mask": axes, "logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        shutil.copy(files.folder / name, folder / name)
    return zip_folder(folder, folder.with_suffix(".zip"))
