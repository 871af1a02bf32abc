"""What a job reports: `JobMetrics` once it has succeeded (also stored as metrics.json), and
`JobProgress` while it trains. The worker builds these models, the API serves them, the
report renders them, and the Python client's types are generated from them
(`distillery/types.py`, checked by a test), so none of them can drift from the others."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.jobs.spec import KDMethodConfig, StudentConfig, TrainingConfig, TransferConfig


class _Report(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EpochMetrics(_Report):
    epoch: int
    loss: float
    hard_loss: float
    soft_loss: float
    validation_accuracy: float | None
    seconds: float
    soft_loss_labeled: float | None = Field(
        default=None, description="The soft term on the labeled rows (with transfer rows)."
    )
    soft_loss_transfer: float | None = Field(
        default=None, description="The soft term on the transfer rows."
    )


class ClassificationReport(_Report):
    accuracy: float
    nll: float | None = Field(description="Mean negative log-likelihood; null if infinite.")
    ece: float | None = Field(description="Expected calibration error, 15 bins.")
    per_class_accuracy: dict[str, float | None]
    confusion_matrix: list[list[int]] = Field(description="Rows: true class.")


class Evaluation(_Report):
    teacher: ClassificationReport | None
    student: ClassificationReport | None
    scratch: ClassificationReport | None


class BatchLatency(_Report):
    student_onnx: float
    teacher: float
    speedup: float | None


class Latency(_Report):
    teacher_runtime: str
    repeats: int
    batch_1: BatchLatency
    batch_64: BatchLatency
    batch_32: BatchLatency | None = Field(default=None, description="Text jobs.")


class TransferCounts(_Report):
    labeled_rows: int
    transfer_rows: int
    sources: dict[str, int]


class HintReport(_Report):
    teacher_output: str
    epochs: int
    student_width: int
    teacher_width: int
    mse: list[float]


class AssistantReport(_Report):
    step: int
    architecture: str
    hidden_sizes: list[int]
    channels: list[int]
    parameters: int
    accuracy: float | None
    agreement_with_teacher: float
    onnx: str | None = None
    onnx_bytes: int | None = None


class CheckpointReport(_Report):
    checkpoint: int
    teacher_accuracy: float | None
    teacher_parameters: int
    validation_accuracy: float
    student_accuracy: float | None
    chosen: bool


class EnsembleMember(_Report):
    id: str
    output_name: str
    output_kind: str
    parameters: int
    accuracy: float | None
    # On the validation rows: a member below the scratch student is named in the warnings.
    validation_accuracy: float | None = None


class TeacherRuntimeReport(_Report):
    """How the job's teacher labelled its rows in its confined process.

    Its batch is chosen from the model's size and DISTILLERY_TEACHER_MEMORY_BYTES, its threads
    from the job's (DISTILLERY_JOB_THREADS)."""

    device: str = Field(description="cpu, or cuda on a GPU worker.")
    threads: int = Field(description="The runtime's intra-op threads (0: its own choice).")
    batch_rows: int
    row_activation_bytes: int = Field(description="The estimate the batch was sized from.")
    memory_bytes: int = Field(description="The teacher process's memory limit.")
    labelled_rows: int = Field(description="Rows it labelled (cached outputs not counted).")
    rows_per_second: float | None = Field(description="Its speed as the job saw it, pipes in.")


class TeacherReport(_Report):
    id: str
    output_name: str
    output_kind: str
    input_shape: list[int]
    num_classes: int
    ensemble: list[EnsembleMember] | None
    runtime: TeacherRuntimeReport | None = None


class SizedStudent(_Report):
    max_parameters: int
    compression: float | None
    hidden_sizes: list[int]
    channels: list[int]
    reason: str | None = Field(
        default=None, description="For the default student: how it was sized from the teacher."
    )


class StudentReport(StudentConfig):
    sized: SizedStudent | None = Field(
        description="What automatic sizing chose: for a budget, or for the default student."
    )


class SplitPart(_Report):
    rows: int
    source: str


class SplitFractions(_Report):
    train: float
    validation: float
    test: float


class SplitReport(_Report):
    seed: int
    method: str | None = None
    fractions: SplitFractions | None = None
    train: SplitPart
    validation: SplitPart
    test: SplitPart


class CacheCounts(_Report):
    hits: int
    misses: int


class TransferChoice(_Report):
    """How the job's transfer set was decided: as given, by the service's default for the
    data's kind ("transfer": "auto"), or off ("transfer": null)."""

    chosen: Literal["given", "auto", "off"]
    data_kind: Literal["image", "signal", "tabular", "text"] | None = None
    synthesize: list[str] = []
    rows: int = Field(default=0, description="Synthesized rows, over all methods.")
    reason: str


class TransferSpecReport(_Report):
    transfer_dataset_ids: list[str]
    synthesize: TransferConfig | None = Field(description="What was synthesized, as settings.")
    choice: TransferChoice | None = None


class CrossDomainReport(BaseModel):
    """phi and the shapes it maps between, then the mapping's own parameters (sigma, kernel,
    the uploaded mapping's sha256, the VAE's reconstruction losses and history)."""

    model_config = ConfigDict(extra="allow")

    phi: str
    target_input_shape: list[int]
    teacher_input_shape: list[int]


class Int8Latency(_Report):
    int8: float
    fp32: float
    speedup: float | None


class Int8Report(_Report):
    """student.int8.onnx beside the fp32 student.onnx: built, measured, and which to ship."""

    status: Literal["built", "off", "failed"]
    mode: Literal["dynamic", "static"] | None = Field(
        default=None, description="dynamic: linear students; static (calibrated): cnn."
    )
    error: str | None = None
    bytes: int | None = None
    fp32_bytes: int | None = None
    accuracy: float | None = Field(default=None, description="On the test rows.")
    fp32_accuracy: float | None = None
    validation_accuracy: float | None = None
    fp32_validation_accuracy: float | None = None
    agreement_with_fp32: float | None = Field(
        default=None, description="Share of test rows where int8 and fp32 predict alike."
    )
    agreement_with_teacher: float | None = None
    latency_ms: dict[str, Int8Latency] = Field(
        default={}, description="Median ms on this worker, by batch (batch_1, batch_64)."
    )
    ship: Literal["int8", "fp32"] | None = Field(
        default=None,
        description="int8 when it is faster at batch 1 and 64 and within 0.5 points of the "
        "fp32 student's validation accuracy; fp32 otherwise.",
    )
    reason: str = ""


class CandidateReport(_Report):
    """One candidate of a search: its settings and its scores on the validation rows."""

    number: int
    kind: Literal["student", "scratch"]
    temperature: float | None = Field(description="KD's temperature (null for scratch).")
    alpha: float | None
    transfer: list[str] = Field(description="The transfer sources it learned from.")
    hidden_sizes: list[int]
    channels: list[int]
    learning_rate: float
    weight_decay: float
    validation_accuracy: float | None
    agreement: float | None = Field(description="With the teacher, on the validation rows.")
    parameters: int
    seconds: float
    error: str | None = Field(description="Why the candidate failed (the search went on).")
    chosen: bool


class SearchReport(_Report):
    budget: int
    candidates: list[CandidateReport] = Field(description="Students, then scratch ones.")
    chosen_student: int
    chosen_scratch: int | None


class EmbeddingsReport(_Report):
    """Where a text student's embeddings started (spec student.init_embeddings)."""

    source: Literal["teacher", "random"]
    tensor: str | None = Field(default=None, description="The teacher's table, by its name.")
    teacher_dim: int | None = None
    student_dim: int
    tokens: int = Field(description="Rows taken from the teacher: the tokens the student keeps.")
    explained_variance: float | None = Field(
        default=None, description="Of those rows, by the principal components the student keeps."
    )
    reason: str


class TextReport(_Report):
    """A text job: how its texts became rows, and the student that reads them."""

    max_length: int = Field(description="Tokens per row (the longest training text, capped).")
    teacher_max_length: int
    tokenizer_vocab: int
    student_vocab: int = Field(description="Tokens the student keeps: those in the job's rows.")
    student_architecture: str
    input_names: list[str] = Field(description="Of student.onnx (int64, [batch, sequence]).")
    class_names: list[str] = Field(description="The teacher's classes, in class-id order.")
    reason: str | None = Field(default=None, description="For the default student: why.")
    embeddings: EmbeddingsReport | None = None


class ValidationScores(_Report):
    """Accuracy on the job's validation rows: what the service decides on (never the test)."""

    teacher: float | None
    student: float | None
    scratch: float | None


class Recommendation(_Report):
    ship: Literal["student", "scratch"] = Field(
        description="Which ONNX to ship: student.onnx (distilled) or scratch.onnx."
    )
    reason: str
    validation: ValidationScores


class JobMetrics(_Report):
    teacher_accuracy: float | None
    student_accuracy: float | None
    scratch_accuracy: float | None
    gap_closed: float | None = Field(description="(student - scratch) / (teacher - scratch).")
    agreement: float = Field(description="Share of test rows where student and teacher agree.")
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
    assistants: list[AssistantReport] | None = None
    checkpoints: list[CheckpointReport] | None = None
    recommendation: Recommendation | None = Field(
        default=None, description="Null when no scratch baseline was trained."
    )
    int8: Int8Report | None = None
    search: SearchReport | None = None
    modality: Literal["tensor", "text"] = "tensor"
    text: TextReport | None = None
    warnings: list[str] = Field(
        default=[],
        description="What the user should know: a teacher or a student that "
        "does worse than scratch on the validation rows.",
    )


class JobProgress(_Report):
    """The live view while a job trains: the curves so far."""

    latest: EpochMetrics | None = None
    latest_scratch: EpochMetrics | None = None
    history: list[EpochMetrics] = []
    history_scratch: list[EpochMetrics] = []


# A succeeded job's report, else its progress; tried in this order.
MetricsView = Annotated[JobMetrics | JobProgress, Field(union_mode="left_to_right")]
