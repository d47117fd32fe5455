"""Encoder, decoders (observation models) and the prediction head of the models.

Each decoder maps latent samples z [B, K, L] to the parameters of p(x | z) [B, K, D] and
knows its family's log-likelihood (through the fused operators or their reference twins,
chosen by the ``ops`` module passed in), conditional mean and samples.
"""

from __future__ import annotations

import contextlib
import math
from collections import OrderedDict
from typing import Iterator, Sequence, Union, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import ops
from ._types import Operators

__all__ = [
    "MLP",
    "mlp",
    "glorot_init_",
    "use_fused_networks",
    "Encoder",
    "GaussianFamily",
    "BernoulliFamily",
    "LocationScaleDecoder",
    "GaussianDecoder",
    "StudentTDecoder",
    "BernoulliDecoder",
    "PredictionHead",
    "OUT_DISTS",
    "make_decoder",
]

OUT_DISTS = ("gauss", "bern", "student_t")
DEFAULT_MIN_SCALE = 1e-3


class MLP(nn.Sequential):
    """Linear layers with tanh between them (the paper's networks): [..., sizes[0]] ->
    [..., sizes[-1]].

    An nn.Sequential of nn.Linear and nn.Tanh (state-dict keys ``0.weight``, ``0.bias``,
    ``2.weight``, ...). With ``fused = True`` (the models set it for ``backend="fused"``)
    the whole network is one :func:`notmiwae_fast.ops.mlp_tanh` call: ATen's matrix
    products, the activation in place and a hand-written backward; otherwise the layers
    run one by one (the reference path, also the one TorchScript and ONNX export use).
    """

    __constants__ = ["fused"]  # TorchScript compiles only the layer-by-layer branch

    def __init__(self, sizes: Sequence[int]):
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(nn.Tanh())
        super().__init__(*layers)
        self.fused = False

    @overload
    def __getitem__(self, idx: slice) -> nn.Sequential: ...

    @overload
    def __getitem__(self, idx: int) -> nn.Module: ...

    def __getitem__(self, idx: Union[slice, int]) -> nn.Module:
        if isinstance(idx, slice):  # a part of the network: plain layers, run one by one
            return nn.Sequential(OrderedDict(list(self._modules.items())[idx]))
        return super().__getitem__(idx)

    def forward(self, x: Tensor) -> Tensor:
        if self.fused:
            return self._fused_forward(x)
        for layer in self:
            x = layer(x)
        return x

    @torch.jit.unused
    def layer_parameters(self) -> tuple[list[Tensor], list[Tensor]]:
        """(weights, biases) of the linear layers, in order (the operators' arguments)."""
        linears = [m for m in self._modules.values() if isinstance(m, nn.Linear)]
        return [layer.weight for layer in linears], [layer.bias for layer in linears]

    @torch.jit.unused
    def _fused_forward(self, x: Tensor) -> Tensor:
        weights, biases = self.layer_parameters()
        y = ops.mlp_tanh(x.reshape(-1, x.shape[-1]), weights, biases)
        return y.reshape(*x.shape[:-1], y.shape[-1])


def mlp(sizes: Sequence[int]) -> MLP:
    """Linear layers with tanh between them (the paper's networks), see :class:`MLP`."""
    return MLP(sizes)


def glorot_init_(module: nn.Module) -> nn.Module:
    """Re-initialises every ``nn.Linear`` inside ``module`` as Keras's ``Dense`` layer
    does, which the paper's code used: Glorot-uniform weights (U(±√(6 / (fan_in +
    fan_out)))), zero biases. Other parameters (the self-masking W and b, a PPCA scale)
    are left alone. Returns ``module``.

    PyTorch's default (U(±1/√fan_in) weights and biases) gives smaller weights in the
    128-unit layers, and the agnostic (linear) missing process imputes markedly worse
    with it (measured in benchmarks/results/uci_table1_linear_glorot_10k.md)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def _fusable(module: nn.Module) -> list[Union[MLP, LocationScaleDecoder]]:
    """The networks inside ``module`` that have a fused path (the MLPs and the Gaussian
    and Student-t decoders' scale)."""
    return [m for m in module.modules() if isinstance(m, (MLP, LocationScaleDecoder))]


def use_fused_networks(module: nn.Module, fused: bool) -> None:
    """Sets ``fused`` on every network inside ``module`` that has a fused path."""
    for m in _fusable(module):
        m.fused = bool(fused)


@contextlib.contextmanager
def layer_by_layer(module: nn.Module) -> Iterator[nn.Module]:
    """Runs every network inside ``module`` layer by layer for the duration (no custom
    autograd Function: what torch.func transforms such as vmap / jacrev need), and puts
    each network's ``fused`` setting back afterwards."""
    saved = [(m, m.fused) for m in _fusable(module)]
    try:
        use_fused_networks(module, False)
        yield module
    finally:
        for m, fused in saved:
            m.fused = fused


@torch.jit.unused
def _fused_scale(raw: Tensor, min_scale: float) -> Tensor:
    return ops.softplus_scale(raw, min_scale)


class Encoder(nn.Module):
    """q(z | x̃) = N(μ, diag σ²), x̃ = x with zeros at the missing entries.

    [B, D] -> (μ [B, L], σ [B, L]); log σ² is clamped to [−10, 10]."""

    def __init__(self, input_dim: int, hidden_dim: int, latent_dim: int):
        super().__init__()
        self.net = mlp([input_dim, hidden_dim, hidden_dim, 2 * latent_dim])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, log_var = self.net(x).chunk(2, dim=-1)
        return mu, torch.exp(0.5 * log_var.clamp(-10.0, 10.0))


class GaussianFamily:
    """Likelihood, mean and samples of p(x | z) = N(loc, scale), given the decoder's
    parameters {"loc", "scale"} ([B, K, D] each). Shared by the MLP and conv decoders."""

    family = "gauss"

    def log_prob(self, ops: Operators, x0: Tensor, s: Tensor, p: dict[str, Tensor]) -> Tensor:
        return ops.masked_normal_logprob(x0, s, p["loc"], p["scale"])

    def mean(self, p: dict[str, Tensor]) -> Tensor:
        return p["loc"]

    def sample(self, p: dict[str, Tensor]) -> Tensor:
        """A reparameterised draw x ~ p(x | z)."""
        # float32 noise when loc is bfloat16 / float16 (autocast): full-precision draws,
        # the same random numbers as without autocast.
        dtype = torch.promote_types(p["loc"].dtype, torch.float32)
        return p["loc"] + p["scale"] * torch.randn(
            p["loc"].shape, dtype=dtype, device=p["loc"].device
        )

    def draw(self, p: dict[str, Tensor]) -> Tensor:
        return self.sample(p)


class BernoulliFamily:
    """p(x | z) = Bernoulli(σ(logits)), given {"logits"} [B, K, D].

    There is no reparameterised Bernoulli sample: where not-MIWAE needs a sample x_k to
    evaluate p(s | x̂_k), :meth:`sample` gives the decoder mean σ(logits) (a
    deterministic, differentiable stand-in); :meth:`draw` gives genuine 0/1 draws for
    multiple imputation."""

    family = "bern"

    def log_prob(self, ops: Operators, x0: Tensor, s: Tensor, p: dict[str, Tensor]) -> Tensor:
        return ops.masked_bernoulli_logprob(x0, s, p["logits"])

    def mean(self, p: dict[str, Tensor]) -> Tensor:
        return torch.sigmoid(p["logits"])

    def sample(self, p: dict[str, Tensor]) -> Tensor:
        return self.mean(p)

    def draw(self, p: dict[str, Tensor]) -> Tensor:
        return torch.bernoulli(torch.sigmoid(p["logits"]))


class LocationScaleDecoder(nn.Module):
    """The location and scale of the Gaussian and Student-t decoders, [B, K, L] ->
    ([B, K, D], [B, K, D]): loc and raw from an MLP, scale = softplus(raw) + min_scale;
    with ``ppca=True`` loc is linear in z and one learnt scale is shared by all
    features."""

    # TorchScript: only the used branches compile (export sets fused = False)
    __constants__ = ["ppca", "min_scale", "fused"]

    def __init__(
        self,
        latent_dim: int,
        hidden_dim: int,
        output_dim: int,
        min_scale: float = DEFAULT_MIN_SCALE,
        ppca: bool = False,
    ):
        super().__init__()
        self.ppca = ppca
        self.fused = False
        self.min_scale = float(min_scale)
        if ppca:
            self.loc = nn.Linear(latent_dim, output_dim)
            self.raw_scale = nn.Parameter(torch.zeros(()))
        else:
            self.net = mlp([latent_dim, hidden_dim, hidden_dim, 2 * output_dim])

    def loc_scale(self, z: Tensor) -> tuple[Tensor, Tensor]:
        if self.ppca:
            loc = self.loc(z)
            return loc, (F.softplus(self.raw_scale) + self.min_scale).expand_as(loc)
        out = self.net(z)
        if self.fused:
            # loc and raw each contiguous, in one copy of the output: the operators that
            # read them (the scale, the likelihood terms, iw_impute's values) would each
            # make a contiguous copy of their strided half otherwise.
            pair = out.unflatten(-1, (2, -1)).movedim(-2, 0).contiguous()
            return pair[0], _fused_scale(pair[1], self.min_scale)
        loc, raw = out.chunk(2, dim=-1)
        # contiguous first: ATen's softplus is much slower on the strided half
        return loc, F.softplus(raw.contiguous()) + self.min_scale


class GaussianDecoder(GaussianFamily, LocationScaleDecoder):
    """p(x | z) = N(loc(z), scale(z)), scale = softplus(raw) + min_scale.

    ``ppca=True``: loc is linear in z and one learnt scale is shared by all features
    (the paper's not-MIWAE-PPCA). ``min_scale`` (default 1e-3, for standardised data)
    keeps the likelihood bounded: a floor of 1e-6 lets it blow up.
    """

    def forward(self, z: Tensor) -> dict[str, Tensor]:
        loc, scale = self.loc_scale(z)
        return {"loc": loc, "scale": scale}


class StudentTDecoder(LocationScaleDecoder):
    """p(x | z) = StudentT(df, loc(z), scale(z)), df per feature, learnt, df > 2."""

    family = "student_t"
    MIN_DF = 2.0
    __constants__ = ["ppca", "min_scale", "MIN_DF", "fused"]

    def __init__(
        self,
        latent_dim: int,
        hidden_dim: int,
        output_dim: int,
        min_scale: float = DEFAULT_MIN_SCALE,
        ppca: bool = False,
    ):
        super().__init__(latent_dim, hidden_dim, output_dim, min_scale, ppca)
        # softplus(raw) + 2 = 5 at start: between Cauchy-like and Gaussian tails.
        self.raw_df = nn.Parameter(torch.full((output_dim,), math.log(math.expm1(3.0))))

    def forward(self, z: Tensor) -> dict[str, Tensor]:
        loc, scale = self.loc_scale(z)
        return {"loc": loc, "scale": scale, "df": F.softplus(self.raw_df) + self.MIN_DF}

    def log_prob(self, ops: Operators, x0: Tensor, s: Tensor, p: dict[str, Tensor]) -> Tensor:
        return ops.masked_studentt_logprob(x0, s, p["loc"], p["scale"], p["df"])

    def mean(self, p: dict[str, Tensor]) -> Tensor:
        return p["loc"]

    def sample(self, p: dict[str, Tensor]) -> Tensor:
        return torch.distributions.StudentT(p["df"], p["loc"], p["scale"]).rsample()

    draw = sample


class BernoulliDecoder(BernoulliFamily, nn.Module):
    """p(x | z) = Bernoulli(σ(logits(z))) for data in [0, 1] (see BernoulliFamily)."""

    def __init__(
        self,
        latent_dim: int,
        hidden_dim: int,
        output_dim: int,
        min_scale: float = DEFAULT_MIN_SCALE,
        ppca: bool = False,
    ):
        super().__init__()
        self.net = (
            nn.Linear(latent_dim, output_dim)
            if ppca
            else mlp([latent_dim, hidden_dim, hidden_dim, output_dim])
        )

    def forward(self, z: Tensor) -> dict[str, Tensor]:
        return {"logits": self.net(z)}


_DECODERS: dict[str, type[Union[GaussianDecoder, BernoulliDecoder, StudentTDecoder]]] = {
    "gauss": GaussianDecoder,
    "bern": BernoulliDecoder,
    "student_t": StudentTDecoder,
}


def make_decoder(
    out_dist: str, latent_dim: int, hidden_dim: int, output_dim: int, min_scale: float, ppca: bool
) -> Union[GaussianDecoder, BernoulliDecoder, StudentTDecoder]:
    """The MLP (or, with ``ppca``, linear) decoder of the family ``out_dist``."""
    return _DECODERS[out_dist](latent_dim, hidden_dim, output_dim, min_scale=min_scale, ppca=ppca)


class PredictionHead(nn.Module):
    """p(y | x̂) for the supervised models, an MLP on the (imputed) data.

    task ``"regression"``: Normal(mean(x̂), σ) with a learnt σ per output; y [B, y_dim].
    task ``"classification"``: ``y_dim = 1`` is binary with one logit (y in {0, 1});
    ``y_dim = C >= 2`` is categorical with C logits (y in {0..C−1}); binary works with
    either ``y_dim = 1`` or ``y_dim = 2``.
    """

    TASKS = ("regression", "classification")

    def __init__(self, input_dim: int, y_dim: int, hidden_dim: int, task: str):
        super().__init__()
        self.task, self.y_dim = task, y_dim
        self.net = mlp([input_dim, hidden_dim, hidden_dim, y_dim])
        if task == "regression":
            self.log_std = nn.Parameter(torch.zeros(y_dim))

    @property
    def n_classes(self) -> int:
        return max(2, self.y_dim)

    def log_prob(self, x_hat: Tensor, y: Tensor) -> Tensor:
        """log p(y | x̂): x̂ [B, K, D], y [B, y_dim] (regression) or [B] -> [B, K]."""
        out = self.net(x_hat)
        if self.task == "regression":
            dist = torch.distributions.Normal(out, self.log_std.exp())
            return dist.log_prob(y.unsqueeze(1)).sum(-1)
        if self.y_dim == 1:
            yk = y.to(out.dtype).view(-1, 1)
            return yk * F.logsigmoid(out[..., 0]) + (1 - yk) * F.logsigmoid(-out[..., 0])
        log_p = F.log_softmax(out, dim=-1)
        index = y.view(-1, 1, 1).expand(-1, out.shape[1], 1)
        return log_p.gather(-1, index).squeeze(-1)

    def predictive(self, x_hat: Tensor) -> Tensor:
        """E[y | x̂] (regression, [B, K, y_dim]) or class probabilities ([B, K, C])."""
        out = self.net(x_hat)
        if self.task == "regression":
            return out
        if self.y_dim == 1:
            p1 = torch.sigmoid(out)
            return torch.cat([1 - p1, p1], dim=-1)
        return torch.softmax(out, dim=-1)
