"""The job spec: what a user asks for, validated once at the API and stored with the job as a
versioned document that the worker reads back into these same models.

Every default a job has is defined here, once. The request (`JobCreate`) names its teachers
the way the public API always has (`teacher_id`, `teacher_ids`, `teacher_checkpoint_ids`);
the stored spec (`JobSpec`) holds them as one discriminated field, `teachers`. The
cross-domain mapping phi is a discriminated union: each mapping has exactly its own fields,
so a field another mapping reads is refused by the model itself."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.bounds import INT32_MAX, INT64_MAX

SPEC_VERSION: Literal[1] = 1
Seed = Annotated[int, Field(ge=0, le=INT32_MAX)]
HiddenSizes = Annotated[
    list[Annotated[int, Field(ge=1, le=65536)]], Field(min_length=1, max_length=16)
]
Channels = Annotated[list[Annotated[int, Field(ge=1, le=4096)]], Field(min_length=1, max_length=8)]
ResourceId = Annotated[str, Field(min_length=1, max_length=64)]


class _Strict(BaseModel):
    # Unknown fields are refused, and so are NaN and Infinity (Python's JSON parser reads
    # them; no spec may store them).
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# The default student (an mlp whose job names no shape and no budget) is sized from the teacher:
# this layout, every layer widened or narrowed to at most 1/DEFAULT_COMPRESSION of the
# teacher's parameters, each layer between AUTO_WIDTHS wide.
DEFAULT_LAYOUT = (128, 128)
DEFAULT_COMPRESSION = 10
AUTO_WIDTHS = (16, 512)


class StudentConfig(_Strict):
    architecture: Literal["mlp", "cnn", "bag", "text_cnn", "bilstm", "transformer"] = Field(
        default="mlp",
        description="mlp or cnn for tensor teachers; for text teachers bag (mean of "
        "embeddings), text_cnn (Kim), bilstm (Tang et al.) or transformer (a small encoder). "
        "A text job that names no student gets a bilstm.",
    )
    hidden_sizes: HiddenSizes | None = Field(
        default=None,
        description="The mlp's hidden layers. null (the default): sized from the teacher, two "
        f"equal layers with at most 1/{DEFAULT_COMPRESSION} of the teacher's parameters (each "
        f"{AUTO_WIDTHS[0]} to {AUTO_WIDTHS[1]} wide); with max_parameters or compression, "
        f"the layout {list(DEFAULT_LAYOUT)} sized to that budget.",
    )
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    batch_norm: bool = False
    channels: Channels = Field(default=[16, 32], description="Conv channels per block (cnn only).")
    embedding_dim: int = Field(default=64, ge=4, le=1024, description="Text students only.")
    init_embeddings: Literal["teacher", "random"] | None = Field(
        default=None,
        description="Text students only: teacher starts the student's embeddings from the "
        "teacher's word embeddings (the tokens it keeps, projected to embedding_dim by PCA); "
        "random starts them afresh. null (the default): teacher for a text student. "
        "metrics.text.embeddings says what was done.",
    )
    max_length: int | None = Field(
        default=None,
        ge=4,
        le=4096,
        description="Text jobs: the most tokens a row keeps (default: the longest training "
        "text, at most 128 and at most what the teacher takes).",
    )
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

    @property
    def sized_from_teacher(self) -> bool:
        """No shape and no budget given: the default student, sized from the teacher."""
        return (
            self.architecture == "mlp"
            and self.hidden_sizes is None
            and self.max_parameters is None
            and self.compression is None
        )

    @property
    def layout(self) -> tuple[int, ...]:
        """The mlp's hidden layers as given, or the default layout to be sized."""
        return tuple(self.hidden_sizes) if self.hidden_sizes is not None else DEFAULT_LAYOUT

    def budget(self, teacher_parameters: int) -> int | None:
        """The parameter budget the student is sized to, if any."""
        if self.max_parameters is not None:
            return self.max_parameters
        if self.compression is not None:
            return int(teacher_parameters / self.compression)
        if self.sized_from_teacher:
            return max(1, teacher_parameters // DEFAULT_COMPRESSION)
        return None

    @model_validator(mode="after")
    def _one_size_target(self) -> StudentConfig:
        if self.max_parameters is not None and self.compression is not None:
            raise ValueError("give max_parameters or compression, not both")
        return self


class HintConfig(_Strict):
    teacher_output: str = Field(
        min_length=1,
        max_length=255,
        description="A tensor name from the teacher's `hint_candidates` (GET /v1/teachers/{id}).",
    )
    epochs: int = Field(default=5, ge=1, le=1000)


class KDMethodConfig(_Strict):
    """Hinton's soft targets: L = alpha*CE(y, z) + (1-alpha)*T^2*KL(p_T || q_T).

    `alpha` weighs the HARD-label term (torchdistill's convention; some papers write
    lambda = 1 - alpha for the distillation term). alpha = 0 needs no labels."""

    type: Literal["kd"] = "kd"
    temperature: float = Field(default=4.0, gt=0.0, le=100.0)
    alpha: float = Field(default=0.1, ge=0.0, le=1.0)
    hint: HintConfig | None = Field(
        default=None,
        description="FitNets: before KD, a middle student layer learns (through a linear "
        "regressor) to predict this intermediate tensor of an ONNX teacher.",
    )
    loss: Literal["kl", "mse"] = Field(
        default="kl",
        description="The soft term: kl (T^2 * KL of the softened outputs) or mse (squared "
        "error of the logits, no temperature: Tang et al.'s best objective for text).",
    )
    kd_stop_epoch: int | None = Field(
        default=None,
        ge=0,
        le=1000,
        description="Early-stopped KD: after this epoch only hard labels train the student "
        "(alpha = 1): the data's labels, and the teacher's argmax on transfer rows. None: "
        "distill to the end.",
    )


class TrainingConfig(_Strict):
    epochs: int = Field(default=20, ge=1, le=1000)
    batch_size: int = Field(default=128, ge=1, le=65536)
    # Measured (bench/quality.py --tables defaults; README): 1e-2 beat 3e-3 for KD students
    # with the default transfer set on MNIST-1D and tied on digits.
    learning_rate: float = Field(default=1e-2, gt=0.0, le=10.0, allow_inf_nan=False)
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0)
    seed: Seed = 0
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


class AssistantsConfig(_Strict):
    """Teacher assistants: distill teacher -> assistant_1 -> ... -> student, each step KD.

    Give `count` (sizes chosen geometrically between the student's and the teacher's
    parameter counts, widening the student's layers) or the sizes themselves, largest first:
    `hidden_sizes` for an mlp student, `channels` for a cnn."""

    count: int | None = Field(default=None, ge=1, le=5)
    hidden_sizes: list[HiddenSizes] | None = Field(default=None, min_length=1, max_length=5)
    channels: list[Channels] | None = Field(default=None, min_length=1, max_length=5)

    @model_validator(mode="after")
    def _one_way(self) -> AssistantsConfig:
        given = [v is not None for v in (self.count, self.hidden_sizes, self.channels)]
        if sum(given) != 1:
            raise ValueError("assistants: give exactly one of count, hidden_sizes or channels")
        return self


SynthesisMethod = Literal["mixup", "noise", "shift", "vae", "mask", "ngram", "swap"]


class TransferConfig(_Strict):
    """Inputs the service makes from the training rows; the teacher labels them once."""

    synthesize: (
        SynthesisMethod | Annotated[list[SynthesisMethod], Field(min_length=1, max_length=4)]
    ) = Field(
        description="mixup: convex pairs with Beta(mixup_alpha) weights; noise: Gaussian noise "
        "scaled per feature (noise_sigma x the feature's std); shift: moves by up to "
        "shift_pixels along the spatial axes (Hinton's jitter); vae: target inputs decoded by "
        "the job's cross-domain VAE (cross_domain.phi = 'vae') from samples near the training "
        "rows. Text teachers: mask (tokens become the mask token), ngram (a window of 1-5 "
        "tokens), swap (tokens swapped for tokens seen elsewhere), after Tang et al. Several "
        "may be combined."
    )
    size: int = Field(default=50_000, ge=1, le=5_000_000, description="Rows per method.")
    seed: Seed = 0
    mixup_alpha: float = Field(default=1.0, gt=0.0, le=100.0)
    noise_sigma: float = Field(default=0.5, gt=0.0, le=10.0)
    shift_pixels: int = Field(default=2, ge=1, le=16)

    @property
    def methods(self) -> list[SynthesisMethod]:
        chosen = [self.synthesize] if isinstance(self.synthesize, str) else self.synthesize
        return list(dict.fromkeys(chosen))


class IdentityPhi(_Strict):
    """The teacher reads target inputs as they are."""

    phi: Literal["identity"]


class GaussianNoisePhi(_Strict):
    """x + N(0, sigma^2), drawn once per row (so the teacher's outputs are cached)."""

    phi: Literal["gaussian_noise"]
    sigma: float = Field(default=0.1, gt=0.0, le=100.0, description="The noise's std.")
    seed: Seed = 0


class DilatedConvPhi(_Strict):
    """A fixed depthwise convolution with dilation along each spatial axis."""

    phi: Literal["dilated_conv"]
    kernel_size: int = Field(default=3, ge=1, le=15, description="Odd.")
    dilation: int = Field(default=2, ge=1, le=16)
    weights: Annotated[list[float], Field(min_length=1, max_length=15)] | None = Field(
        default=None,
        description="kernel_size taps applied along each spatial axis (separable); default a "
        "box kernel 1/kernel_size.",
    )

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError("kernel_size must be odd (the output keeps the input's shape)")
        return value

    @model_validator(mode="after")
    def _taps(self) -> DilatedConvPhi:
        if self.weights is not None and len(self.weights) != self.kernel_size:
            raise ValueError(
                f"weights has {len(self.weights)} taps but kernel_size is {self.kernel_size}"
            )
        return self


class OnnxPhi(_Strict):
    """An uploaded ONNX mapping (POST /v1/teachers), run confined like a teacher."""

    phi: Literal["onnx"]
    mapping_id: ResourceId = Field(description="The uploaded mapping.")


class VaePhi(_Strict):
    """A VAE the job trains on source rows paired by class with target rows: one encoder,
    two decoders, phi(x) = decode_source(encode(x))."""

    phi: Literal["vae"]
    source_dataset_id: ResourceId = Field(description="Labeled rows of the teacher's domain.")
    target_dataset_id: ResourceId | None = Field(
        default=None, description="Labeled target rows; default the training split."
    )
    latent_dim: int = Field(default=16, ge=1, le=1024)
    hidden: int = Field(default=256, ge=4, le=8192)
    epochs: int = Field(default=150, ge=1, le=1000, description="VAE training epochs.")
    learning_rate: float = Field(default=2e-3, gt=0.0, le=1.0)
    beta: float = Field(default=0.5, ge=0.0, le=100.0, description="Weight of the KL term.")
    seed: Seed = 0


CrossDomainConfig = Annotated[
    IdentityPhi | GaussianNoisePhi | DilatedConvPhi | OnnxPhi | VaePhi,
    Field(discriminator="phi"),
]
PHI_NAMES = ("identity", "gaussian_noise", "dilated_conv", "onnx", "vae")


class SingleTeacher(_Strict):
    kind: Literal["single"] = "single"
    id: ResourceId

    @property
    def ids(self) -> list[str]:
        return [self.id]


class TeacherEnsemble(_Strict):
    """The target is the mean of the members' softened outputs."""

    kind: Literal["ensemble"] = "ensemble"
    ids: Annotated[list[ResourceId], Field(min_length=2, max_length=16)]


class TeacherCheckpoints(_Strict):
    """Early-stopped teacher: checkpoints of one teacher; the job keeps the best student."""

    kind: Literal["checkpoints"] = "checkpoints"
    ids: Annotated[list[ResourceId], Field(min_length=2, max_length=16)]


Teachers = Annotated[
    SingleTeacher | TeacherEnsemble | TeacherCheckpoints, Field(discriminator="kind")
]
# The request field that names the teachers of each kind (for error messages).
TEACHER_FIELD = {
    "single": "teacher_id",
    "ensemble": "teacher_ids",
    "checkpoints": "teacher_checkpoint_ids",
}


AUTO_SEARCH_BUDGET = 8


class SearchConfig(_Strict):
    """Train up to `budget` candidate students (temperature, alpha, transfer synthesis and,
    with a parameter budget, the student's depth), score each on the validation rows and keep
    the best; the scratch baseline gets the same budget (learning rate, weight decay, depth)."""

    budget: int = Field(default=AUTO_SEARCH_BUDGET, ge=1, le=32)


class ResourcesConfig(_Strict):
    """What the job needs from the worker that runs it."""

    gpu: bool = Field(
        default=False,
        description="Run on a GPU worker: the job goes to the GPU queue "
        "(DISTILLERY_GPU_QUEUE_NAME), which `distillery worker --gpu` serves, and its student "
        "and teacher run on the GPU. Refused (422) when no GPU worker is alive.",
    )


class JobOptions(_Strict):
    """What a job trains on and how: everything but its teachers."""

    train_dataset_id: ResourceId
    validation_dataset_id: ResourceId | None = None
    test_dataset_id: ResourceId | None = None
    student: StudentConfig = StudentConfig()
    method: KDMethodConfig = KDMethodConfig()
    training: TrainingConfig = TrainingConfig()
    transfer_dataset_ids: Annotated[list[ResourceId], Field(max_length=16)] = Field(
        default_factory=list,
        description="Unlabeled datasets whose rows the distillation term learns from, beside "
        "the training rows (labels in them are ignored).",
    )
    transfer: TransferConfig | Literal["auto"] | None = Field(
        default="auto",
        description="Inputs the teacher labels beyond the training rows. 'auto' (the default): "
        "when no transfer_dataset_ids are given, synthesize a set suited to the data's kind "
        "(images and 1-D signals: shift and mixup; tabular rows: mixup and noise), 20 rows "
        "per labeled row, at least 10,000 and at most DISTILLERY_AUTO_TRANSFER_MAX_ROWS. "
        "null: none. The job's metrics say what was chosen and why.",
    )
    assistants: AssistantsConfig | None = None
    cross_domain: CrossDomainConfig | None = Field(
        default=None,
        description="Distill across domains: a mapping phi from the job's (target-domain) "
        "inputs to the teacher's (source-domain) inputs.",
    )
    search: SearchConfig | Literal["auto"] | None = Field(
        default=None,
        description=f"Search on the validation rows: {{'budget': N}} or 'auto' (a budget of "
        f"{AUTO_SEARCH_BUDGET}). The test rows are scored once, for the chosen student. Works "
        "with a single teacher, an ensemble and cross-domain jobs (not with assistants or "
        "teacher checkpoints).",
    )
    quantize: bool = Field(
        default=True,
        description="Also build student.int8.onnx with onnxruntime's quantization (dynamic "
        "for mlp students, static with calibration on training rows for cnn), measure it "
        "beside the fp32 student and say which to ship. A quantization that fails is "
        "reported and does not fail the job.",
    )
    baseline: bool = Field(
        default=True,
        description="Also train the same student from scratch (labeled rows, same budget and "
        "seed) and report it beside the distilled one.",
    )
    resources: ResourcesConfig = ResourcesConfig()

    @property
    def search_budget(self) -> int | None:
        if self.search is None:
            return None
        return AUTO_SEARCH_BUDGET if self.search == "auto" else self.search.budget

    @model_validator(mode="after")
    def _distinct_datasets(self) -> JobOptions:
        if self.test_dataset_id and self.test_dataset_id == self.train_dataset_id:
            raise ValueError("test_dataset_id must differ from train_dataset_id")
        return self


def _distinct(value: list[str]) -> list[str]:
    if value and (len(value) < 2 or len(set(value)) != len(value)):
        raise ValueError("name at least two teachers, each once")
    return value


class JobCreate(JobOptions):
    """The body of POST /v1/jobs."""

    teacher_id: ResourceId | None = Field(
        default=None, description="The teacher (or give teacher_ids)."
    )
    teacher_ids: Annotated[list[ResourceId], Field(max_length=16)] = Field(
        default_factory=list,
        description="An ensemble: the target is the mean of the teachers' softened outputs. "
        "All must take the same input and have the same classes.",
    )
    teacher_checkpoint_ids: Annotated[list[ResourceId], Field(max_length=16)] = Field(
        default_factory=list,
        description="Early-stopped teacher: checkpoints of one teacher (e.g. after 5, 20 and "
        "100 epochs). The job distills from each, keeps the student that does best on the "
        "validation rows and reports all.",
    )

    _distinct_teachers = field_validator("teacher_ids", "teacher_checkpoint_ids")(_distinct)

    @model_validator(mode="after")
    def _one_way_to_name_teachers(self) -> JobCreate:
        if self.teacher_ids and self.teacher_checkpoint_ids:
            raise ValueError("give teacher_ids (an ensemble) or teacher_checkpoint_ids, not both")
        several = self.teacher_ids or self.teacher_checkpoint_ids
        if several and self.teacher_id is not None and self.teacher_id != several[0]:
            raise ValueError("give teacher_id or a list of teachers, not both")
        if not several and self.teacher_id is None:
            raise ValueError(
                "teacher_id is required (or teacher_ids for an ensemble, or teacher_checkpoint_ids)"
            )
        return self

    @property
    def teachers(self) -> SingleTeacher | TeacherEnsemble | TeacherCheckpoints:
        if self.teacher_ids:
            return TeacherEnsemble(ids=self.teacher_ids)
        if self.teacher_checkpoint_ids:
            return TeacherCheckpoints(ids=self.teacher_checkpoint_ids)
        assert self.teacher_id is not None
        return SingleTeacher(id=self.teacher_id)

    def to_spec(self) -> JobSpec:
        options = self.model_dump(
            exclude={"teacher_id", "teacher_ids", "teacher_checkpoint_ids"}, exclude_unset=False
        )
        return JobSpec.model_validate({**options, "teachers": self.teachers.model_dump()})


class JobSpec(JobOptions):
    """The stored document: `JobSpec.model_validate(job.spec)` on the worker."""

    version: Literal[1] = SPEC_VERSION
    teachers: Teachers

    @property
    def teacher_field(self) -> str:
        return TEACHER_FIELD[self.teachers.kind]
