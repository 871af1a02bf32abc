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
from typing import Any, Literal

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


# The harder variant (bench/quality_text.py). Its words of praise and blame have a long tail, as
# a language's do (Zipf's law: frequency falling as 1/rank): 59 English words of each, then 300
# made-up words of each (rare domain words: "the curry was vorlish"), so that a few thousand
# labeled rows show the rarer ones a few times or never, while a teacher trained on more rows
# has met most of them. Clauses may be about different topics, joined so that only their order
# says which one decides ("although A , B": B; "A , even though B": A), and negations ("not",
# "hardly", "far from") flip a clause: a bag of words cannot tell "the soup was good but the
# film was bad" from "the film was bad but the soup was good".
REVIEW_NOUNS = {
    "film": [
        *TOPICS["film"],
        *("script", "ending", "soundtrack", "cast", "director", "sequel", "dialogue", "story"),
        *("trailer", "screenplay", "villain", "hero", "heroine", "cameo", "score", "editing"),
        *("pacing", "finale", "premise", "twist", "character", "performance", "documentary"),
        *("musical", "cinematography"),
    ],
    "food": [
        *TOPICS["food"],
        *("dessert", "steak", "sauce", "curry", "pizza", "noodles", "burger", "coffee", "menu"),
        *("risotto", "stew", "omelette", "sandwich", "cake", "pie", "chicken", "salmon", "rice"),
        *("dumplings", "tacos", "lasagna", "broth", "pudding", "waffles", "fries"),
    ],
}
REVIEW_GOOD = [
    *GOOD,
    *("excellent", "wonderful", "brilliant", "delightful", "charming", "solid", "decent"),
    *("terrific", "marvelous", "stunning", "pleasant", "splendid", "fantastic", "fabulous"),
    *("gorgeous", "superior", "outstanding", "exquisite", "enjoyable", "admirable", "clever"),
    *("satisfying", "impressive", "remarkable", "magnificent", "refreshing", "elegant"),
    *("flawless", "glorious", "heavenly", "masterful", "memorable", "moving", "perfect"),
    *("polished", "rich", "sublime", "tasty", "tender", "thrilling", "vivid", "warm", "witty"),
    *("fresh", "generous", "graceful", "inspired", "joyful", "likeable", "neat", "nice"),
    *("rewarding", "sparkling", "stellar"),
]
REVIEW_BAD = [
    *BAD,
    *("terrible", "boring", "horrible", "mediocre", "weak", "dreadful", "lousy", "stale"),
    *("clumsy", "tedious", "disappointing", "abysmal", "atrocious", "bleak", "bitter"),
    *("botched", "cheap", "clunky", "cold", "crude", "dire", "dismal", "drab", "dry", "flat"),
    *("forgettable", "greasy", "grim", "gross", "hollow", "inferior", "insipid", "lame"),
    *("lifeless", "limp", "messy", "miserable", "nasty", "painful", "pathetic", "pointless"),
    *("rotten", "shoddy", "sloppy", "soggy", "sour", "stiff", "tasteless", "tired", "ugly"),
    *("wretched", "wooden", "annoying", "overcooked"),
]
RARE_WORDS = 300  # made-up words of each polarity, after the English ones


def _made_up_words(count: int, taken: set[str]) -> list[str]:
    """Pronounceable words that are not English (and not in `taken`), the same every run."""
    rng = random.Random(14)
    onsets = ["b", "br", "d", "dr", "f", "g", "gl", "k", "l", "m", "n", "p", "pl", "r", "s"]
    onsets += ["sk", "t", "tr", "v", "z"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ou"]
    endings = ["", "ic", "ish", "ous", "y", "al", "en"]
    words: list[str] = []
    while len(words) < count:
        syllables = [rng.choice(onsets) + rng.choice(vowels) for _ in range(rng.randint(2, 3))]
        word = "".join(syllables) + rng.choice(endings)
        if word not in taken:
            taken.add(word)
            words.append(word)
    return words


_RARE = _made_up_words(2 * RARE_WORDS, {*REVIEW_GOOD, *REVIEW_BAD})
REVIEW_GOOD += _RARE[:RARE_WORDS]
REVIEW_BAD += _RARE[RARE_WORDS:]
NEGATIONS = ["not", "never", "hardly", "not at all", "far from", "barely", "scarcely"]
REVIEW_FILLER = [*FILLER, "somewhat", "incredibly", "pretty", "so", "fairly"]
DETERMINERS = ["the", "this", "that", "our", "their"]
VERBS = ["was", "is", "seemed", "felt", "looked"]


def _zipf(rng: random.Random, words: list[str]) -> str:
    """A word drawn with frequency falling as 1/rank (the list's order is its rank)."""
    return rng.choices(words, weights=[1.0 / (rank + 1) for rank in range(len(words))])[0]


def _review_clause(rng: random.Random, topic: str) -> tuple[str, bool]:
    """One clause about `topic` and whether it praises it."""
    good, negated = rng.random() < 0.5, rng.random() < 0.4
    word = _zipf(rng, REVIEW_GOOD if good else REVIEW_BAD)
    filler = rng.choice(REVIEW_FILLER) + " " if rng.random() < 0.4 else ""
    negation = _zipf(rng, NEGATIONS) + " " if negated else ""
    noun = f"{rng.choice(DETERMINERS)} {_zipf(rng, REVIEW_NOUNS[topic])}"
    form = rng.random()
    if form < 0.7:
        text = f"{noun} {rng.choice(VERBS)} {negation}{filler}{word}"
    elif form < 0.85:
        text = f"i found {noun} {negation}{filler}{word}"
    else:
        text = f"{noun} was {negation}a {filler}{word} one"
    return text, good != negated


def _review(rng: random.Random) -> tuple[str, int]:
    topic = rng.choice(list(REVIEW_NOUNS))
    other = topic if rng.random() < 0.5 else ("food" if topic == "film" else "film")
    first, first_good = _review_clause(rng, topic)
    second, second_good = _review_clause(rng, other)
    shape = rng.random()
    if shape < 0.35:
        text, decides, good = first, topic, first_good
    elif shape < 0.6:
        text, decides, good = f"{first} but {second}", other, second_good
    elif shape < 0.8:
        text, decides, good = f"although {first} , {second}", other, second_good
    else:
        text, decides, good = f"{first} , even though {second}", topic, first_good
    return text, CLASS_NAMES.index(f"{decides} {'good' if good else 'bad'}")


def review_task(rows: int, seed: int) -> TextTask:
    """The harder task: the same four classes as text_task."""
    rng = random.Random(seed)
    pairs = [_review(rng) for _ in range(rows)]
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


def train_tokenizer(texts: list[str], vocab_size: int = 400) -> Any:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer.train_from_iterator(
        texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials)
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


@dataclass(frozen=True)
class BertShape:
    """A teacher's architecture, size and training: the tests' tiny BERT by default (2 layers,
    hidden 64); the text bench trains a larger ModernBERT (pre-norm, rotary positions, mean
    pooling), which learns from scratch in far fewer steps than BERT's post-norm [CLS] head."""

    model_type: Literal["bert", "modernbert"] = "bert"
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    intermediate: int = 128
    vocab_size: int = 400  # the WordPiece tokenizer's
    learning_rate: float = 3e-3
    batch_size: int = 32
    decay: bool = False  # the learning rate warms up over a tenth of the steps, then falls to 0
    clip: float | None = None  # the gradient's largest norm


def _config(shape: BertShape, tokenizer: Any) -> Any:
    from transformers import BertConfig, ModernBertConfig

    labels = {
        "num_labels": len(CLASS_NAMES),
        "id2label": dict(enumerate(CLASS_NAMES)),
        "label2id": {n: i for i, n in enumerate(CLASS_NAMES)},
    }
    size = {
        "vocab_size": len(tokenizer),
        "hidden_size": shape.hidden,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "intermediate_size": shape.intermediate,
        "max_position_embeddings": 64,
    }
    if shape.model_type == "bert":
        return BertConfig(**size, **labels)
    return ModernBertConfig(
        **size,
        **labels,
        pad_token_id=tokenizer.pad_token_id,
        cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        classifier_pooling="mean",
        attention_dropout=0.0,
        mlp_dropout=0.0,
        embedding_dropout=0.0,
    )


def _tokenizer(texts: list[str], shape: BertShape) -> Any:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=train_tokenizer(texts, shape.vocab_size),
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def _fit_bert(model: Any, encoded: Any, labels: Any, epochs: int, shape: BertShape) -> None:
    """AdamW on cross-entropy; each batch cut to its longest text (the padding after it is
    masked, so nothing changes but the time)."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=shape.learning_rate)
    steps = epochs * -(-len(labels) // shape.batch_size)
    warmup = max(1, steps // 10)

    def factor(step: int) -> float:
        if not shape.decay:
            return 1.0
        return min(step / warmup, max(0.0, (steps - step) / max(1, steps - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(labels)).split(shape.batch_size):
            mask = encoded["attention_mask"][idx]
            length = int(mask.sum(1).max())
            out = model(
                input_ids=encoded["input_ids"][idx][:, :length],
                attention_mask=mask[:, :length],
                labels=labels[idx],
            )
            optimizer.zero_grad()
            out.loss.backward()
            if shape.clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), shape.clip)
            optimizer.step()
            schedule.step()
    model.eval()


def train_bert_teacher(
    folder: Path,
    task: TextTask,
    test: TextTask,
    epochs: int = 4,
    seed: int = 0,
    shape: BertShape = BertShape(),
) -> TextTeacherFiles:
    """A BERT built from a config (tiny by default) trained on the task on the CPU."""
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    tokenizer = _tokenizer(task.texts, shape)
    model = AutoModelForSequenceClassification.from_config(_config(shape, tokenizer))
    encoded = tokenizer(
        task.texts, padding=True, truncation=True, max_length=64, return_tensors="pt"
    )
    _fit_bert(model, encoded, torch.tensor(task.labels), epochs, shape)
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
