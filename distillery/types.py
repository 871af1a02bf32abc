"""The API's answers as typed dicts, written by `python -m app.typegen` from the
server's models (do not edit by hand; tests/client/test_types.py checks it is current)."""

from __future__ import annotations

from typing import Any, Literal, TypedDict


class TeacherError(TypedDict):
    code: str
    message: str


class Teacher(TypedDict):
    """An uploaded model. A worker inspects it: until then it is `processing` and what it is"""

    id: str
    object: Literal["teacher"]
    created_at: str
    filename: str
    status: Literal["ready", "processing", "invalid"]
    error: TeacherError | None
    format: str | None
    sha256: str
    bytes: int
    input_shape: list[int] | None
    num_classes: int | None
    parameters: int | None
    output_name: str | None
    output_kind: Literal["logits", "probabilities"] | None
    hint_candidates: list[str]
    modality: Literal["tensor", "text"] | None
    class_names: list[str] | None
    input_names: list[str] | None
    vocab_size: int | None
    max_length: int | None


class Dataset(TypedDict):
    id: str
    object: Literal["dataset"]
    created_at: str
    filename: str
    format: str
    rows: int
    feature_shape: list[int]
    num_classes: int | None
    labeled: bool
    class_counts: dict[str, int] | None
    class_names: list[str] | None
    modality: Literal["tensor", "text"]
    sha256: str
    bytes: int


class TransferCounts(TypedDict):
    labeled_rows: int
    transfer_rows: int
    sources: dict[str, int]


class HintReport(TypedDict):
    teacher_output: str
    epochs: int
    student_width: int
    teacher_width: int
    mse: list[float]


class ClassificationReport(TypedDict):
    accuracy: float
    nll: float | None
    ece: float | None
    per_class_accuracy: dict[str, float | None]
    confusion_matrix: list[list[int]]


class Evaluation(TypedDict):
    teacher: ClassificationReport | None
    student: ClassificationReport | None
    scratch: ClassificationReport | None


class BatchLatency(TypedDict):
    student_onnx: float
    teacher: float
    speedup: float | None


class Latency(TypedDict):
    teacher_runtime: str
    repeats: int
    batch_1: BatchLatency
    batch_64: BatchLatency
    batch_32: BatchLatency | None


class EpochMetrics(TypedDict):
    epoch: int
    loss: float
    hard_loss: float
    soft_loss: float
    validation_accuracy: float | None
    seconds: float
    soft_loss_labeled: float | None
    soft_loss_transfer: float | None


class SplitFractions(TypedDict):
    train: float
    validation: float
    test: float


class SplitPart(TypedDict):
    rows: int
    source: str


class SplitReport(TypedDict):
    seed: int
    method: str | None
    fractions: SplitFractions | None
    train: SplitPart
    validation: SplitPart
    test: SplitPart


class CacheCounts(TypedDict):
    hits: int
    misses: int


class EnsembleMember(TypedDict):
    id: str
    output_name: str
    output_kind: str
    parameters: int
    accuracy: float | None
    validation_accuracy: float | None


class TeacherRuntimeReport(TypedDict):
    """How the job's teacher labelled its rows in its confined process."""

    device: str
    threads: int
    batch_rows: int
    row_activation_bytes: int
    memory_bytes: int
    labelled_rows: int
    rows_per_second: float | None


class TeacherReport(TypedDict):
    id: str
    output_name: str
    output_kind: str
    input_shape: list[int]
    num_classes: int
    ensemble: list[EnsembleMember] | None
    runtime: TeacherRuntimeReport | None


class SizedStudent(TypedDict):
    max_parameters: int
    compression: float | None
    hidden_sizes: list[int]
    channels: list[int]
    reason: str | None


class StudentReport(TypedDict):
    architecture: Literal["mlp", "cnn", "bag", "text_cnn", "bilstm", "transformer"]
    hidden_sizes: list[int] | None
    dropout: float
    batch_norm: bool
    channels: list[int]
    embedding_dim: int
    init_embeddings: Literal["teacher", "random"] | None
    max_length: int | None
    normalize: bool
    max_parameters: int | None
    compression: float | None
    sized: SizedStudent | None


class HintConfig(TypedDict):
    teacher_output: str
    epochs: int


class KDMethodConfig(TypedDict):
    """Hinton's soft targets: L = alpha*CE(y, z) + (1-alpha)*T^2*KL(p_T || q_T)."""

    type: Literal["kd"]
    temperature: float
    alpha: float
    hint: HintConfig | None
    loss: Literal["kl", "mse"]
    kd_stop_epoch: int | None


class TrainingConfig(TypedDict):
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    seed: int
    jitter_pixels: int
    time_limit_seconds: int | None


class CrossDomainReport(TypedDict):
    """phi and the shapes it maps between, then the mapping's own parameters (sigma, kernel,"""

    phi: str
    target_input_shape: list[int]
    teacher_input_shape: list[int]


class TransferConfig(TypedDict):
    """Inputs the service makes from the training rows; the teacher labels them once."""

    synthesize: (
        Literal["mixup", "noise", "shift", "vae", "mask", "ngram", "swap"]
        | list[Literal["mixup", "noise", "shift", "vae", "mask", "ngram", "swap"]]
    )
    size: int
    seed: int
    mixup_alpha: float
    noise_sigma: float
    shift_pixels: int


class TransferChoice(TypedDict):
    """How the job's transfer set was decided: as given, by the service's default for the"""

    chosen: Literal["given", "auto", "off"]
    data_kind: Literal["image", "signal", "tabular", "text"] | None
    synthesize: list[str]
    rows: int
    reason: str


class TransferSpecReport(TypedDict):
    transfer_dataset_ids: list[str]
    synthesize: TransferConfig | None
    choice: TransferChoice | None


class AssistantReport(TypedDict):
    step: int
    architecture: str
    hidden_sizes: list[int]
    channels: list[int]
    parameters: int
    accuracy: float | None
    agreement_with_teacher: float
    onnx: str | None
    onnx_bytes: int | None


class CheckpointReport(TypedDict):
    checkpoint: int
    teacher_accuracy: float | None
    teacher_parameters: int
    validation_accuracy: float
    student_accuracy: float | None
    chosen: bool


class ValidationScores(TypedDict):
    """Accuracy on the job's validation rows: what the service decides on (never the test)."""

    teacher: float | None
    student: float | None
    scratch: float | None


class Recommendation(TypedDict):
    ship: Literal["student", "scratch"]
    reason: str
    validation: ValidationScores


class Int8Latency(TypedDict):
    int8: float
    fp32: float
    speedup: float | None


class Int8Report(TypedDict):
    """student.int8.onnx beside the fp32 student.onnx: built, measured, and which to ship."""

    status: Literal["built", "off", "failed"]
    mode: Literal["dynamic", "static"] | None
    error: str | None
    bytes: int | None
    fp32_bytes: int | None
    accuracy: float | None
    fp32_accuracy: float | None
    validation_accuracy: float | None
    fp32_validation_accuracy: float | None
    agreement_with_fp32: float | None
    agreement_with_teacher: float | None
    latency_ms: dict[str, Int8Latency]
    ship: Literal["int8", "fp32"] | None
    reason: str


class CandidateReport(TypedDict):
    """One candidate of a search: its settings and its scores on the validation rows."""

    number: int
    kind: Literal["student", "scratch"]
    temperature: float | None
    alpha: float | None
    transfer: list[str]
    hidden_sizes: list[int]
    channels: list[int]
    learning_rate: float
    weight_decay: float
    validation_accuracy: float | None
    agreement: float | None
    parameters: int
    seconds: float
    error: str | None
    chosen: bool


class SearchReport(TypedDict):
    budget: int
    candidates: list[CandidateReport]
    chosen_student: int
    chosen_scratch: int | None


class EmbeddingsReport(TypedDict):
    """Where a text student's embeddings started (spec student.init_embeddings)."""

    source: Literal["teacher", "random"]
    tensor: str | None
    teacher_dim: int | None
    student_dim: int
    tokens: int
    explained_variance: float | None
    reason: str


class TextReport(TypedDict):
    """A text job: how its texts became rows, and the student that reads them."""

    max_length: int
    teacher_max_length: int
    tokenizer_vocab: int
    student_vocab: int
    student_architecture: str
    input_names: list[str]
    class_names: list[str]
    reason: str | None
    embeddings: EmbeddingsReport | None


class JobMetrics(TypedDict):
    teacher_accuracy: float | None
    student_accuracy: float | None
    scratch_accuracy: float | None
    gap_closed: float | None
    agreement: float
    scratch_agreement: float | None
    teacher_parameters: int
    student_parameters: int
    train_seconds: float
    device: str
    test_rows: int
    transfer: TransferCounts
    baseline: str
    hint: HintReport | None
    evaluation: Evaluation
    onnx_bytes: int
    onnx_max_abs_diff: float
    onnx_opset: int
    latency_ms: Latency
    history: list[EpochMetrics]
    history_scratch: list[EpochMetrics]
    split: SplitReport
    teacher_output_cache: CacheCounts
    teacher: TeacherReport
    student: StudentReport
    method: KDMethodConfig
    training: TrainingConfig
    cross_domain: CrossDomainReport | None
    transfer_spec: TransferSpecReport
    assistants: list[AssistantReport] | None
    checkpoints: list[CheckpointReport] | None
    recommendation: Recommendation | None
    int8: Int8Report | None
    search: SearchReport | None
    modality: Literal["tensor", "text"]
    text: TextReport | None
    warnings: list[str]


class JobProgress(TypedDict):
    """The live view while a job trains: the curves so far."""

    latest: EpochMetrics | None
    latest_scratch: EpochMetrics | None
    history: list[EpochMetrics]
    history_scratch: list[EpochMetrics]


class JobError(TypedDict):
    code: str
    message: str


class StudentConfig(TypedDict):
    architecture: Literal["mlp", "cnn", "bag", "text_cnn", "bilstm", "transformer"]
    hidden_sizes: list[int] | None
    dropout: float
    batch_norm: bool
    channels: list[int]
    embedding_dim: int
    init_embeddings: Literal["teacher", "random"] | None
    max_length: int | None
    normalize: bool
    max_parameters: int | None
    compression: float | None


class AssistantsConfig(TypedDict):
    """Teacher assistants: distill teacher -> assistant_1 -> ... -> student, each step KD."""

    count: int | None
    hidden_sizes: list[list[int]] | None
    channels: list[list[int]] | None


class IdentityPhi(TypedDict):
    """The teacher reads target inputs as they are."""

    phi: Literal["identity"]


class GaussianNoisePhi(TypedDict):
    """x + N(0, sigma^2), drawn once per row (so the teacher's outputs are cached)."""

    phi: Literal["gaussian_noise"]
    sigma: float
    seed: int


class DilatedConvPhi(TypedDict):
    """A fixed depthwise convolution with dilation along each spatial axis."""

    phi: Literal["dilated_conv"]
    kernel_size: int
    dilation: int
    weights: list[float] | None


class OnnxPhi(TypedDict):
    """An uploaded ONNX mapping (POST /v1/teachers), run confined like a teacher."""

    phi: Literal["onnx"]
    mapping_id: str


class VaePhi(TypedDict):
    """A VAE the job trains on source rows paired by class with target rows: one encoder,"""

    phi: Literal["vae"]
    source_dataset_id: str
    target_dataset_id: str | None
    latent_dim: int
    hidden: int
    epochs: int
    learning_rate: float
    beta: float
    seed: int


class SearchConfig(TypedDict):
    """Train up to `budget` candidate students (temperature, alpha, transfer synthesis and,"""

    budget: int


class ResourcesConfig(TypedDict):
    """What the job needs from the worker that runs it."""

    gpu: bool


class Job(TypedDict):
    id: str
    object: Literal["job"]
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    stage: str
    epoch: int
    epochs: int
    metrics: JobMetrics | JobProgress | None
    error: JobError | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    cancel_requested: bool
    attempts: int
    worker: str | None
    time_limit_seconds: int | None
    teacher_id: str
    teacher_ids: list[str]
    teacher_checkpoint_ids: list[str]
    train_dataset_id: str
    validation_dataset_id: str | None
    test_dataset_id: str | None
    student: StudentConfig
    method: KDMethodConfig
    training: TrainingConfig
    split: SplitReport | None
    transfer_dataset_ids: list[str]
    transfer: TransferConfig | Literal["auto"] | None
    assistants: AssistantsConfig | None
    cross_domain: IdentityPhi | GaussianNoisePhi | DilatedConvPhi | OnnxPhi | VaePhi | None
    search: SearchConfig | Literal["auto"] | None
    quantize: bool
    baseline: bool
    resources: ResourcesConfig


class JobEvent(TypedDict):
    id: int
    object: Literal["job.event"]
    created_at: str
    type: Literal["state", "message", "metrics"]
    message: str
    data: dict[str, Any] | None


class Artifact(TypedDict):
    name: str
    object: Literal["artifact"]
    media_type: str
    bytes: int
    sha256: str
    created_at: str
    url: str
