"""A model trained in the job itself (a teacher assistant) acting as the next step's teacher."""

from __future__ import annotations

import numpy as np
from torch import nn

from worker.engine.students import count_parameters
from worker.engine.teachers.base import DEFAULT_BATCH_ROWS, OutputKind
from worker.engine.training import predict_logits


class ModuleTeacher:
    """A model trained in this job (an assistant) acting as the next step's teacher."""

    format = "torch"
    output_name = "logits"
    output_kind: OutputKind = "logits"
    fingerprint: str | None = None  # trained here: nothing to reuse across jobs

    def __init__(self, module: nn.Module, input_shape: tuple[int, ...], num_classes: int) -> None:
        self.module = module.eval()
        self.input_shape = input_shape
        self.num_classes = num_classes
        self.parameters = count_parameters(module)

    def logits(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        return predict_logits(self.module, x, batch_size or DEFAULT_BATCH_ROWS)
