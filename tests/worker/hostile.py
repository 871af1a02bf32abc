"""ONNX teachers built node by node: a normal one and hostile ones that pass inspection (which
probes 8 rows) and turn on the job when it sends a bigger batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

PROBE_ROWS = 8


def _model(path: Path, nodes: list, inits: list, shape: tuple[int, ...], classes: int) -> Path:
    graph = helper.make_graph(
        nodes,
        "teacher",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", *shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _weights(shape: tuple[int, ...], classes: int, hidden: int = 32) -> list:
    rng = np.random.default_rng(0)
    features = int(np.prod(shape))
    return [
        numpy_helper.from_array(rng.standard_normal((features, hidden)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal((hidden, classes)).astype(np.float32), "w2"),
    ]


def _classifier(out: str = "logits") -> list:
    """x -> Flatten -> MatMul -> Relu ("hidden", a hint candidate) -> MatMul."""
    return [
        helper.make_node("Flatten", ["x"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w1"], ["pre"]),
        helper.make_node("Relu", ["pre"], ["hidden"]),
        helper.make_node("MatMul", ["hidden", "w2"], [out]),
    ]


def mlp_onnx(path: Path, shape: tuple[int, ...] = (1, 8, 8), classes: int = 10) -> Path:
    return _model(path, _classifier(), _weights(shape, classes), shape, classes)


def _rows_past_probe(free_rows: int) -> tuple[list, list]:
    """Nodes computing max(batch - free_rows, 0) as a 1-D int64 tensor named `extra`."""
    inits = [
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
        numpy_helper.from_array(np.array([free_rows], np.int64), "free"),
    ]
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Slice", ["shape", "zero", "one"], ["rows"]),
        helper.make_node("Sub", ["rows", "free"], ["over"]),
        helper.make_node("Max", ["over", "zero"], ["extra"]),
    ]
    return nodes, inits


def hungry_onnx(
    path: Path,
    floats_per_row: int,
    free_rows: int = PROBE_ROWS,
    shape: tuple[int, ...] = (1, 8, 8),
    classes: int = 10,
) -> Path:
    """A classifier that also allocates (batch - free_rows) * floats_per_row float32s.

    With free_rows=8 it passes inspection and asks for the memory on the job's first batch."""
    count, inits = _rows_past_probe(free_rows)
    inits += [
        numpy_helper.from_array(np.array([floats_per_row], np.int64), "per_row"),
        numpy_helper.from_array(np.array([0.0], np.float32), "nil"),
    ]
    nodes = [
        *count,
        helper.make_node("Mul", ["extra", "per_row"], ["size"]),
        helper.make_node(
            "ConstantOfShape",
            ["size"],
            ["big"],
            value=helper.make_tensor("one_f", TensorProto.FLOAT, [1], [1.0]),
        ),
        helper.make_node("ReduceSum", ["big"], ["total"], keepdims=1),
        helper.make_node("Mul", ["total", "nil"], ["zero_f"]),
        *_classifier("scores"),
        helper.make_node("Add", ["scores", "zero_f"], ["logits"]),
    ]
    return _model(path, nodes, inits + _weights(shape, classes), shape, classes)


def spinning_onnx(path: Path, shape: tuple[int, ...] = (1, 8, 8), classes: int = 10) -> Path:
    """A classifier that loops (batch - 8) * 10^9 times: inspection passes, a job's batch spins."""
    count, inits = _rows_past_probe(PROBE_ROWS)
    inits += [
        numpy_helper.from_array(np.array([10**9], np.int64), "spins_per_row"),
        numpy_helper.from_array(np.array(True), "go"),
        numpy_helper.from_array(np.zeros(1, np.float32), "start"),
    ]
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["acc_in", "acc_in"], ["acc_out"]),
        ],
        "spin",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [1]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [1]),
        ],
    )
    nodes = [
        *count,
        helper.make_node("Mul", ["extra", "spins_per_row"], ["trips_1d"]),
        helper.make_node("Squeeze", ["trips_1d"], ["trips"]),
        helper.make_node("Loop", ["trips", "go", "start"], ["acc"], body=body),
        helper.make_node("ReduceSum", ["acc"], ["total"], keepdims=1),
        *_classifier("scores"),
        helper.make_node("Add", ["scores", "total"], ["logits"]),
    ]
    return _model(path, nodes, inits + _weights(shape, classes), shape, classes)


def mapping_onnx(path: Path, features: int = 64) -> Path:
    """A mapping phi: [batch, features] -> tanh(x W + b) as [batch, features] (dynamic batch)."""
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(rng.standard_normal((features, features)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal(features).astype(np.float32), "b"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["pre"]),
        helper.make_node("Tanh", ["pre"], ["mapped"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mapping",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("mapped", TensorProto.FLOAT, ["batch", features])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def poisoned_onnx(
    path: Path,
    poison: float,
    when: str = "always",
    shape: tuple[int, ...] = (1, 8, 8),
    classes: int = 10,
) -> Path:
    """A classifier whose logits get `poison` (NaN or +-inf) added: on every row ("always"),
    only past the inspector's 8 probe rows ("past_probe": a batch of more rows), or only where
    an input value exceeds 100 ("large_inputs": rows far from the training data)."""
    inits = [
        numpy_helper.from_array(np.array([poison], np.float32), "poison"),
        numpy_helper.from_array(np.array([0.0], np.float32), "clean"),
    ]
    nodes = _classifier("scores")
    if when == "always":
        nodes.append(helper.make_node("Add", ["scores", "poison"], ["logits"]))
        return _model(path, nodes, inits + _weights(shape, classes), shape, classes)
    if when == "past_probe":
        count, extra_inits = _rows_past_probe(PROBE_ROWS)
        nodes = [*count, *nodes]
        inits += extra_inits
        nodes.append(helper.make_node("Greater", ["extra", "zero"], ["bad"]))
    elif when == "large_inputs":
        inits.append(numpy_helper.from_array(np.array(100.0, np.float32), "limit"))
        nodes.append(helper.make_node("ReduceMax", ["flat"], ["top"], axes=[1], keepdims=1))
        nodes.append(helper.make_node("Greater", ["top", "limit"], ["bad"]))
    else:
        raise ValueError(when)
    nodes.append(helper.make_node("Where", ["bad", "poison", "clean"], ["added"]))
    nodes.append(helper.make_node("Add", ["scores", "added"], ["logits"]))
    return _model(path, nodes, inits + _weights(shape, classes), shape, classes)


def constant_onnx(path: Path, shape: tuple[int, ...] = (1, 8, 8), classes: int = 10) -> Path:
    """Finite logits whatever the input's scale (0 * x, then a bias): a teacher that stays
    finite while a student fed enormous raw inputs overflows."""
    rng = np.random.default_rng(2)
    features = int(np.prod(shape))
    inits = [
        numpy_helper.from_array(np.zeros((features, classes), np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal(classes).astype(np.float32), "b"),
        numpy_helper.from_array(np.array([0.0], np.float32), "nil"),
    ]
    nodes = [
        helper.make_node("Flatten", ["x"], ["flat"]),
        helper.make_node("Mul", ["flat", "nil"], ["zeros"]),
        helper.make_node("MatMul", ["zeros", "w"], ["none"]),
        helper.make_node("Add", ["none", "b"], ["logits"]),
    ]
    return _model(path, nodes, inits, shape, classes)
