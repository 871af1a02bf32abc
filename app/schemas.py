"""Request and response bodies of the public API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

T = TypeVar("T")
# Request bodies: unknown fields are refused, and so are NaN and Infinity (Python's JSON parser
# reads them; no spec may store them). Integers are bounded by what the columns hold.
STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


class TeacherPublic(BaseModel):
    id: str
    object: Literal["teacher"] = "teacher"
    created_at: datetime
    filename: str
    status: Literal["ready", "processing", "invalid"]
    format: str
    sha256: str
    bytes: int
    input_shape: list[int] = Field(description="Input shape without the batch dimension.")
    num_classes: int
    parameters: int
    output_name: str = Field(description="The model output the service distills from.")
    output_kind: Literal["logits", "probabilities"] = Field(
        description="Probabilities are turned into logits with log(p) before softening."
    )
    hint_candidates: list[str] = Field(
        default_factory=list,
        description="Intermediate tensors a FitNets hint can use (ONNX teachers).",
    )


class DatasetPublic(BaseModel):
    id: str
    object: Literal["dataset"] = "dataset"
    created_at: datetime
    filename: str
    format: str
    rows: int
    feature_shape: list[int]
    num_classes: int | None
    labeled: bool
    class_counts: dict[str, int] | None
    class_names: list[str] | None = Field(
        default=None, description="Image archives: label i is the i-th class folder."
    )
    sha256: str
    bytes: int


class StudentConfig(BaseModel):
    model_config = STRICT

    architecture: Literal["mlp", "cnn"] = "mlp"
    hidden_sizes: Annotated[
        list[Annotated[int, Field(ge=1, le=65536)]], Field(min_length=1, max_length=16)
    ] = [128]
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    batch_norm: bool = False
    channels: Annotated[
        list[Annotated[int, Field(ge=1, le=4096)]], Field(min_length=1, max_length=8)
    ] = Field(default=[16, 32], description="Conv channels per block (cnn only).")
    normalize: bool = Field(
        default=True,
        description="Standardize inputs with statistics fitted on the training rows, baked "
        "into the model and its ONNX, so the student takes raw inputs as the teacher does.",
    )
    max_parameters: int | None = Field(
        default=None,
        ge=10,
        le=INT64_MAX,
        description="Size the student automatically: widen or narrow every layer (keeping "
        "the shape given by hidden_sizes or channels) to the largest student with at most "
        "this many parameters.",
    )
    compression: float | None = Field(
        default=None,
        gt=1.0,
        le=1e6,
        description="Size the student automatically to at most teacher parameters / compression.",
    )

    @model_validator(mode="after")
    def _one_size_target(self) -> StudentConfig:
        if self.max_parameters is not None and self.compression is not None:
            raise ValueError("give max_parameters or compression, not both")
        return self


class HintConfig(BaseModel):
    model_config = STRICT

    teacher_output: str = Field(
        min_length=1,
        max_length=255,
        description="A tensor name from the teacher's `hint_candidates` (GET /v1/teachers/{id}).",
    )
    epochs: int = Field(default=5, ge=1, le=1000)


class KDMethodConfig(BaseModel):
    """Hinton's soft targets: L = alpha*CE(y, z) + (1-alpha)*T^2*KL(p_T || q_T).

    `alpha` weighs the HARD-label term (torchdistill's convention; some papers write
    lambda = 1 - alpha for the distillation term). alpha = 0 needs no labels."""

    model_config = STRICT

    type: Literal["kd"] = "kd"
    temperature: float = Field(default=4.0, gt=0.0, le=100.0)
    alpha: float = Field(default=0.1, ge=0.0, le=1.0)
    hint: HintConfig | None = Field(
        default=None,
        description="FitNets: before KD, a middle student layer learns (through a linear "
        "regressor) to predict this intermediate tensor of an ONNX teacher.",
    )
    kd_stop_epoch: int | None = Field(
        default=None,
        ge=0,
        le=1000,
        description="Early-stopped KD: after this epoch only the hard labels train the "
        "student (alpha = 1). None: distill to the end.",
    )


class TrainingConfig(BaseModel):
    model_config = STRICT

    epochs: int = Field(default=20, ge=1, le=1000)
    batch_size: int = Field(default=128, ge=1, le=65536)
    learning_rate: float = Field(default=3e-3, gt=0.0, le=10.0)
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0)
    seed: int = Field(default=0, ge=0, le=INT32_MAX)
    jitter_pixels: int = Field(
        default=0,
        ge=0,
        le=8,
        description="Image inputs only: shift every training batch by up to this many pixels "
        "(Hinton's teacher used 2). The teacher then labels each shifted batch afresh.",
    )
    time_limit_seconds: int | None = Field(
        default=None,
        ge=1,
        le=INT32_MAX,
        description="Fail the job (error.code time_limit_exceeded) if it runs longer; at most "
        "and by default the server's DISTILLERY_JOB_TIME_LIMIT_SECONDS.",
    )


class AssistantsConfig(BaseModel):
    """Teacher assistants: distill teacher -> assistant_1 -> ... -> student, each step KD.

    Give `count` (sizes chosen geometrically between the student's and the teacher's
    parameter counts, widening the student's layers) or the sizes themselves, largest first:
    `hidden_sizes` for an mlp student, `channels` for a cnn."""

    model_config = STRICT

    count: int | None = Field(default=None, ge=1, le=5)
    hidden_sizes: (
        list[
            Annotated[
                list[Annotated[int, Field(ge=1, le=65536)]], Field(min_length=1, max_length=16)
            ]
        ]
        | None
    ) = Field(default=None, min_length=1, max_length=5)
    channels: (
        list[
            Annotated[list[Annotated[int, Field(ge=1, le=4096)]], Field(min_length=1, max_length=8)]
        ]
        | None
    ) = Field(default=None, min_length=1, max_length=5)

    @model_validator(mode="after")
    def _one_way(self) -> AssistantsConfig:
        given = [v is not None for v in (self.count, self.hidden_sizes, self.channels)]
        if sum(given) != 1:
            raise ValueError("assistants: give exactly one of count, hidden_sizes or channels")
        return self


SynthesisMethod = Literal["mixup", "noise", "shift", "vae"]


class TransferConfig(BaseModel):
    """Inputs the service makes from the training rows; the teacher labels them once."""

    model_config = STRICT

    synthesize: (
        SynthesisMethod | Annotated[list[SynthesisMethod], Field(min_length=1, max_length=4)]
    ) = Field(
        description="mixup: convex pairs with Beta(mixup_alpha) weights; noise: Gaussian noise "
        "scaled per feature (noise_sigma x the feature's std); shift: moves by up to "
        "shift_pixels along the spatial axes (Hinton's jitter); vae: target inputs decoded by "
        "the job's cross-domain VAE (cross_domain.phi = 'vae') from samples near the training "
        "rows. Several may be combined."
    )
    size: int = Field(default=50_000, ge=1, le=5_000_000, description="Rows per method.")
    seed: int = Field(default=0, ge=0, le=INT32_MAX)
    mixup_alpha: float = Field(default=1.0, gt=0.0, le=100.0)
    noise_sigma: float = Field(default=0.5, gt=0.0, le=10.0)
    shift_pixels: int = Field(default=2, ge=1, le=16)

    @property
    def methods(self) -> list[str]:
        chosen = [self.synthesize] if isinstance(self.synthesize, str) else self.synthesize
        return list(dict.fromkeys(chosen))


Phi = Literal["identity", "gaussian_noise", "dilated_conv", "onnx", "vae"]
# The fields each mapping reads; a field given for another mapping is refused by name.
PHI_FIELDS: dict[str, frozenset[str]] = {
    "identity": frozenset(),
    "gaussian_noise": frozenset({"sigma", "seed"}),
    "dilated_conv": frozenset({"kernel_size", "dilation", "weights"}),
    "onnx": frozenset({"mapping_id"}),
    "vae": frozenset(
        {
            "source_dataset_id",
            "target_dataset_id",
            "latent_dim",
            "hidden",
            "epochs",
            "learning_rate",
            "beta",
            "seed",
        }
    ),
}


class CrossDomainConfig(BaseModel):
    """Cross-domain distillation (Bayazitov): the job's datasets are the TARGET domain, the
    teacher was trained on a SOURCE domain, and the teacher sees phi(x) for each target input
    x. The student (and its ONNX) takes target-domain inputs."""

    model_config = STRICT

    phi: Phi = Field(
        description="identity: the teacher reads target inputs as they are; gaussian_noise: "
        "x + N(0, sigma^2); dilated_conv: a fixed depthwise convolution (kernel_size, "
        "dilation, weights); onnx: an uploaded ONNX mapping (mapping_id, uploaded with POST "
        "/v1/teachers; its output, flat or shaped, must have the teacher's input size); vae: "
        "a VAE the job trains on source rows (source_dataset_id) paired by class with target "
        "rows (target_dataset_id, default the training split): one encoder, two decoders, "
        "phi(x) = decode_source(encode(x)). A vae also lets transfer.synthesize use 'vae'."
    )
    sigma: float = Field(default=0.1, gt=0.0, le=100.0, description="gaussian_noise: the std.")
    seed: int = Field(default=0, ge=0, le=INT32_MAX)
    kernel_size: int = Field(default=3, ge=1, le=15, description="dilated_conv: odd.")
    dilation: int = Field(default=2, ge=1, le=16)
    weights: Annotated[list[float], Field(min_length=1, max_length=15)] | None = Field(
        default=None,
        description="dilated_conv: kernel_size taps applied along each spatial axis "
        "(separable); default a box kernel 1/kernel_size.",
    )
    mapping_id: str | None = Field(default=None, description="onnx: the uploaded mapping.")
    source_dataset_id: str | None = Field(
        default=None, description="vae: labeled rows of the teacher's domain."
    )
    target_dataset_id: str | None = Field(
        default=None, description="vae: labeled target rows; default the training split."
    )
    latent_dim: int = Field(default=16, ge=1, le=1024)
    hidden: int = Field(default=256, ge=4, le=8192)
    epochs: int = Field(default=150, ge=1, le=1000, description="vae: training epochs.")
    learning_rate: float = Field(default=2e-3, gt=0.0, le=1.0)
    beta: float = Field(default=0.5, ge=0.0, le=100.0, description="vae: weight of the KL.")

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError("kernel_size must be odd (the output keeps the input's shape)")
        return value

    @model_validator(mode="after")
    def _fields_of_phi(self) -> CrossDomainConfig:
        if self.weights is not None and len(self.weights) != self.kernel_size:
            raise ValueError(
                f"weights has {len(self.weights)} taps but kernel_size is {self.kernel_size}"
            )
        return self

    @property
    def stray_fields(self) -> list[str]:
        """Fields given that this phi does not read."""
        return sorted(self.model_fields_set - PHI_FIELDS[self.phi] - {"phi"})


class JobCreate(BaseModel):
    model_config = STRICT

    teacher_id: str | None = Field(default=None, description="The teacher (or give teacher_ids).")
    teacher_ids: Annotated[list[str], Field(max_length=16)] = Field(
        default_factory=list,
        description="An ensemble: the target is the mean of the teachers' softened outputs. "
        "All must take the same input and have the same classes.",
    )
    train_dataset_id: str
    validation_dataset_id: str | None = None
    test_dataset_id: str | None = None
    student: StudentConfig = StudentConfig()
    method: KDMethodConfig = KDMethodConfig()
    training: TrainingConfig = TrainingConfig()
    transfer_dataset_ids: Annotated[list[str], Field(max_length=16)] = Field(
        default_factory=list,
        description="Unlabeled datasets whose rows the distillation term learns from, beside "
        "the training rows (labels in them are ignored).",
    )
    transfer: TransferConfig | None = None
    assistants: AssistantsConfig | None = None
    cross_domain: CrossDomainConfig | None = Field(
        default=None,
        description="Distill across domains: a mapping phi from the job's (target-domain) "
        "inputs to the teacher's (source-domain) inputs.",
    )
    baseline: bool = Field(
        default=True,
        description="Also train the same student from scratch (labeled rows, same budget and "
        "seed) and report it beside the distilled one.",
    )

    teacher_checkpoint_ids: Annotated[list[str], Field(max_length=16)] = Field(
        default_factory=list,
        description="Early-stopped teacher: checkpoints of one teacher (e.g. after 5, 20 and "
        "100 epochs). The job distills from each, keeps the student that does best on the "
        "validation rows and reports all.",
    )

    @field_validator("teacher_ids", "teacher_checkpoint_ids")
    @classmethod
    def _distinct_teachers(cls, value: list[str]) -> list[str]:
        if value and (len(value) < 2 or len(set(value)) != len(value)):
            raise ValueError("name at least two teachers, each once")
        return value

    @model_validator(mode="after")
    def _one_teacher_or_an_ensemble(self) -> JobCreate:
        if self.teacher_ids and self.teacher_checkpoint_ids:
            raise ValueError("give teacher_ids (an ensemble) or teacher_checkpoint_ids, not both")
        several = self.teacher_ids or self.teacher_checkpoint_ids
        if several:
            if self.teacher_id is not None and self.teacher_id != several[0]:
                raise ValueError("give teacher_id or a list of teachers, not both")
            self.teacher_id = several[0]
        elif self.teacher_id is None:
            raise ValueError(
                "teacher_id is required (or teacher_ids for an ensemble, or teacher_checkpoint_ids)"
            )
        return self

    @property
    def teacher_field(self) -> str:
        if self.teacher_ids:
            return "teacher_ids"
        return "teacher_checkpoint_ids" if self.teacher_checkpoint_ids else "teacher_id"

    @property
    def teachers(self) -> list[str]:
        several = self.teacher_ids or self.teacher_checkpoint_ids
        return list(several) if several else [str(self.teacher_id)]

    @model_validator(mode="after")
    def _distinct_datasets(self) -> JobCreate:
        if self.test_dataset_id and self.test_dataset_id == self.train_dataset_id:
            raise ValueError("test_dataset_id must differ from train_dataset_id")
        return self


class JobError(BaseModel):
    code: str
    message: str


class JobPublic(BaseModel):
    id: str
    object: Literal["job"] = "job"
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    stage: str
    epoch: int
    epochs: int
    metrics: dict[str, Any] | None = Field(
        description="Latest metrics while running; the full report once succeeded."
    )
    error: JobError | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested: bool
    attempts: int = Field(
        default=0, description="Runs so far: 1, or more once a worker died and another took over."
    )
    worker: str | None = Field(default=None, description="The worker that runs (or ran) it.")
    time_limit_seconds: int | None = None
    teacher_id: str
    teacher_ids: list[str]
    teacher_checkpoint_ids: list[str]
    train_dataset_id: str
    validation_dataset_id: str | None
    test_dataset_id: str | None
    student: dict[str, Any]
    method: dict[str, Any]
    training: dict[str, Any]
    split: dict[str, Any] | None
    transfer_dataset_ids: list[str]
    transfer: dict[str, Any] | None
    assistants: dict[str, Any] | None
    cross_domain: dict[str, Any] | None = None
    baseline: bool


class JobEventPublic(BaseModel):
    id: int
    object: Literal["job.event"] = "job.event"
    created_at: datetime
    type: Literal["state", "message", "metrics"]
    message: str
    data: dict[str, Any] | None


class ArtifactPublic(BaseModel):
    name: str
    object: Literal["artifact"] = "artifact"
    media_type: str
    bytes: int
    sha256: str
    created_at: datetime
    url: str


class Page(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool
    next_after: str | None = Field(description="Pass as `after` to get the next page.")
