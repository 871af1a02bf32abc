"""Teacher assistants (Mirzadeh et al., docs/methods.md §3): distill in steps through models
of sizes between the teacher's and the student's, teacher -> assistant_1 -> ... -> student."""

from __future__ import annotations

from dataclasses import replace

from worker.engine.evaluation import accuracy, agreement
from worker.engine.logit_cache import teacher_logits
from worker.engine.methods.kd import distill
from worker.engine.methods.registry import MethodInputs, MethodResult, TrainingCallbacks, register
from worker.engine.outcome import AssistantStep
from worker.engine.teachers import Teacher
from worker.engine.teachers.module import ModuleTeacher
from worker.engine.training import predict_logits


@register("assistants")
def distill_through_assistants(inputs: MethodInputs) -> MethodResult:
    """Each step is a KD run whose teacher is the previous step's model; the last step trains
    the student (with its scratch baseline), reported against the real teacher."""
    teacher, splits, stage = inputs.teacher, inputs.splits, inputs.callbacks.stage
    teacher_test = teacher_logits(teacher, splits.test.x, inputs.cache)
    current: Teacher = teacher
    steps: list[AssistantStep] = []
    for number, spec in enumerate(inputs.assistants, start=1):
        stage(f"assistant_{number}")
        step = replace(
            inputs,
            config=replace(inputs.config, student=spec, baseline=False),
            teachers=(current,),
            callbacks=TrainingCallbacks(),
            cache=inputs.cache if number == 1 else None,
        )
        outcome = distill(step)
        logits = predict_logits(outcome.student, splits.test.x)
        steps.append(
            AssistantStep(
                number=number,
                spec=spec,
                module=outcome.student,
                parameters=outcome.student_parameters,
                accuracy=accuracy(logits, splits.test.y),
                agreement_with_teacher=agreement(logits, teacher_test),
            )
        )
        current = ModuleTeacher(outcome.student, teacher.input_shape, teacher.num_classes)
    final = distill(replace(inputs, teachers=(current,)))
    outcome = replace(
        final,
        test=replace(final.test, teacher=teacher_test),
        teacher_parameters=teacher.parameters,
    )
    return MethodResult(outcome=outcome, teacher=teacher, assistants=steps)
