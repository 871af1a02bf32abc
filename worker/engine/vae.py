"""A learned mapping between domains (docs/methods.md §6, Bayazitov's thesis): a VAE
with one encoder and two decoders, trained on target rows paired by class with source rows.

    L = ||x_s - dec_s(z)||^2 + ||x_t - dec_t(z)||^2 + beta * KL(q(z | x_t) || N(0, I))

with z ~ q(z | x_t). phi(x_t) = dec_s(mean of q(z | x_t)) turns a target input into a source
input the teacher can read; dec_t decodes samples near the training rows into new target
inputs (a synthetic transfer set the student can learn from)."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from worker.engine.crossdomain import MappingRejected
from worker.engine.finite import finite_loss


@dataclass(frozen=True)
class VaeSpec:
    latent_dim: int
    hidden: int
    epochs: int
    learning_rate: float
    beta: float  # weight of the KL term
    seed: int
    batch_size: int = 128  # not a job setting: the VAE's own


class CrossDomainVAE(nn.Module):
    def __init__(self, target_features: int, source_features: int, hidden: int, latent: int):
        super().__init__()

        def decoder(features: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Linear(latent, hidden),
                nn.ReLU(),
                nn.Linear(hidden, hidden),
                nn.ReLU(),
                nn.Linear(hidden, features),
            )

        self.encoder = nn.Sequential(
            nn.Linear(target_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 2 * latent),
        )
        self.decode_source = decoder(source_features)
        self.decode_target = decoder(target_features)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_var = self.encoder(x).chunk(2, dim=1)
        return mean, log_var.clamp(-10.0, 10.0)


def _standardization(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flat = x.reshape(len(x), -1).astype(np.float64)
    return flat.mean(0).astype(np.float32), (flat.std(0) + 1e-3).astype(np.float32)


def pair_by_class(
    y_target: np.ndarray, y_source: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """For each target row, the index of a random source row of the same class."""
    pairs = np.empty(len(y_target), dtype=np.int64)
    for label in np.unique(y_target):
        rows = np.flatnonzero(y_target == label)
        pool = np.flatnonzero(y_source == label)
        if len(pool) == 0:
            raise MappingRejected(
                f"class {int(label)} has target rows but no source rows to pair them with"
            )
        pairs[rows] = pool[rng.integers(0, len(pool), len(rows))]
    return pairs


def _losses(
    model: CrossDomainVAE, xt: torch.Tensor, xs: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    mean, log_var = model.encode(xt)
    z = mean + torch.randn_like(mean) * torch.exp(0.5 * log_var)
    recon_s = ((model.decode_source(z) - xs) ** 2).sum(1).mean()
    recon_t = ((model.decode_target(z) - xt) ** 2).sum(1).mean()
    kl = (-0.5 * (1 + log_var - mean**2 - log_var.exp()).sum(1)).mean()
    return recon_s + recon_t + beta * kl, recon_s, recon_t, kl


class VaeMapping:
    """phi(x_t) = decode_source(encode(x_t)), on raw inputs of either domain."""

    kind = "vae"

    def __init__(
        self,
        model: CrossDomainVAE,
        spec: VaeSpec,
        target_shape: tuple[int, ...],
        source_shape: tuple[int, ...],
        target_stats: tuple[np.ndarray, np.ndarray],
        source_stats: tuple[np.ndarray, np.ndarray],
        report: dict[str, Any],
    ) -> None:
        self.model = model.cpu().eval()
        self.spec = spec
        self.input_shape, self.output_shape = tuple(target_shape), tuple(source_shape)
        self.target_stats, self.source_stats = target_stats, source_stats
        self.report = report
        hasher = hashlib.sha256(b"vae")
        for tensor in self.model.state_dict().values():
            hasher.update(tensor.detach().cpu().numpy().tobytes())
        for array in (*target_stats, *source_stats):
            hasher.update(array.tobytes())
        self.fingerprint = hasher.hexdigest()

    def _target_in(self, x: np.ndarray) -> torch.Tensor:
        mean, std = self.target_stats
        flat = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
        return torch.from_numpy((flat - mean) / std)

    @torch.no_grad()
    def __call__(self, x: np.ndarray, first_row: int = 0) -> np.ndarray:
        mean, _ = self.model.encode(self._target_in(x))
        out = self.model.decode_source(mean).numpy()
        s_mean, s_std = self.source_stats
        values: np.ndarray = (
            (out * s_std + s_mean).reshape(len(x), *self.output_shape).astype(np.float32)
        )
        return values

    @torch.no_grad()
    def generate(self, x: np.ndarray, rows: int, rng: np.random.Generator) -> np.ndarray:
        """New target-domain inputs: decode samples of q(z | x) for random training rows x."""
        base = x[rng.integers(0, len(x), rows)]
        mean, log_var = self.model.encode(self._target_in(base))
        noise = torch.from_numpy(rng.standard_normal(tuple(mean.shape), dtype=np.float32))
        out = self.model.decode_target(mean + noise * torch.exp(0.5 * log_var)).numpy()
        t_mean, t_std = self.target_stats
        values: np.ndarray = (
            (out * t_std + t_mean).reshape(rows, *self.input_shape).astype(np.float32)
        )
        return values

    def describe(self) -> dict[str, Any]:
        return {
            "phi": self.kind,
            "latent_dim": self.spec.latent_dim,
            "hidden": self.spec.hidden,
            "epochs": self.spec.epochs,
            "beta": self.spec.beta,
            "seed": self.spec.seed,
            **self.report,
        }


def _epoch(
    model: CrossDomainVAE,
    optimizer: torch.optim.Optimizer,
    target: torch.Tensor,
    source: torch.Tensor,
    spec: VaeSpec,
) -> np.ndarray:
    """One pass over the (target, source) pairs in order: the summed source and target
    reconstruction terms and KL term."""
    sums = np.zeros(3)
    for start in range(0, len(target), spec.batch_size):
        xt, xs = target[start : start + spec.batch_size], source[start : start + spec.batch_size]
        loss, recon_s, recon_t, kl = _losses(model, xt, xs, spec.beta)
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        optimizer.step()
        sums += np.array([recon_s.item(), recon_t.item(), kl.item()]) * len(xt)
    return sums


def train_vae(
    x_target: np.ndarray,
    y_target: np.ndarray,
    x_source: np.ndarray,
    y_source: np.ndarray,
    spec: VaeSpec,
    held_out: tuple[np.ndarray, np.ndarray] | None = None,
    on_epoch: Any = None,
) -> VaeMapping:
    """Train the mapping on target rows paired by class with source rows (re-paired each
    epoch). Reports the reconstruction terms (mean squared error per feature, standardized
    units) and the KL term, on the training pairs and on `held_out` target rows if given."""
    if len(x_target) == 0 or len(x_source) == 0:
        raise MappingRejected("the VAE needs labeled rows from both domains")
    rng = np.random.default_rng(spec.seed)
    torch.manual_seed(spec.seed)
    t_stats, s_stats = _standardization(x_target), _standardization(x_source)
    xt_all = torch.from_numpy((x_target.reshape(len(x_target), -1) - t_stats[0]) / t_stats[1])
    xs_all = torch.from_numpy((x_source.reshape(len(x_source), -1) - s_stats[0]) / s_stats[1])
    model = CrossDomainVAE(xt_all.shape[1], xs_all.shape[1], spec.hidden, spec.latent_dim)
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.learning_rate)
    history: list[dict[str, float]] = []
    n = len(xt_all)
    for epoch in range(1, spec.epochs + 1):
        model.train()
        pairs = torch.from_numpy(pair_by_class(y_target, y_source, rng))
        order = torch.from_numpy(rng.permutation(n))
        sums = _epoch(model, optimizer, xt_all[order], xs_all[pairs[order]], spec)
        finite_loss(float(sums.sum()), "VAE", epoch)
        record = {
            "epoch": epoch,
            "source_mse": sums[0] / n / xs_all.shape[1],
            "target_mse": sums[1] / n / xt_all.shape[1],
            "kl": sums[2] / n,
        }
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    report: dict[str, Any] = {
        "reconstruction": {k: v for k, v in history[-1].items() if k != "epoch"},
        "history": history,
        "pairs": {"target_rows": int(n), "source_rows": int(len(xs_all))},
    }
    mapping = VaeMapping(
        model,
        spec,
        tuple(x_target.shape[1:]),
        tuple(x_source.shape[1:]),
        t_stats,
        s_stats,
        report,
    )
    if held_out is not None and len(held_out[0]):
        report["held_out_reconstruction"] = _held_out(mapping, held_out, x_source, y_source, rng)
    return mapping


@torch.no_grad()
def _held_out(
    mapping: VaeMapping,
    held_out: tuple[np.ndarray, np.ndarray],
    x_source: np.ndarray,
    y_source: np.ndarray,
    rng: np.random.Generator,
) -> dict[str, float]:
    x, y = held_out
    known = np.isin(y, np.unique(y_source))
    x, y = x[known], y[known]
    xt = mapping._target_in(x)
    pairs = pair_by_class(y, y_source, rng)
    s_mean, s_std = mapping.source_stats
    xs = torch.from_numpy((x_source[pairs].reshape(len(x), -1) - s_mean) / s_std)
    _, recon_s, recon_t, kl = _losses(mapping.model, xt, xs, mapping.spec.beta)
    return {
        "rows": int(len(x)),
        "source_mse": float(recon_s) / xs.shape[1],
        "target_mse": float(recon_t) / xt.shape[1],
        "kl": float(kl) if math.isfinite(float(kl)) else float("nan"),
    }
