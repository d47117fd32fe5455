"""MIWAE / not-MIWAE for tables of mixed column types: real, binary, categorical and
count columns side by side.

A table of D columns is held as one float tensor [B, D]: a real column in the model's
(standardised) units, a binary one as 0 / 1, a categorical one as its category code
(0 … n − 1) and a count as the count; the mask s [B, D] says which entries are observed.
:class:`MixedLayout` says which column is which.

One decoder network with one head per column type gives p(x | z): a normal (loc, scale)
per real column, a Bernoulli logit per binary column, a softmax over each categorical
column's categories and a Poisson log-rate per count column; each family's masked
log-likelihood is its fused operator (``masked_normal_logprob``,
``masked_bernoulli_logprob``, ``masked_categorical_logprob``,
``masked_poisson_logprob``).

The missing process of :class:`MixedNotMIWAE` is self-masking per column type:
logit p(observed) = a_j − W_j x̂_j for a real, binary or count column (a count enters
as log(1 + count)), and one learnt logit per category for a categorical column (which
categories go missing). x̂ at a missing entry is a reparameterised normal draw for a
real column and the decoder's mean for a binary (σ(logit)) or count column (the rate) —
no discrete sample, so the bound stays differentiable (the choice ``out_dist="bern"``
makes too). A missing categorical entry needs no x̂: its term is the exact mixture
p(s_j = 0 | z) = Σ_c π_c(z) σ(−ℓ_c) over the decoder's category probabilities π.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import ops
from .._common import validate as _validate
from .networks import DEFAULT_MIN_SCALE, Encoder, mlp

__all__ = [
    "COLUMN_KINDS",
    "MixedLayout",
    "MixedNotMIWAE",
    "MixedSelfMaskingProcess",
    "upgrade_state_dict",
]

COLUMN_KINDS = ("real", "binary", "categorical", "count")


@dataclass(frozen=True)
class MixedLayout:
    """The column types of a mixed table: ``kinds[j]`` in :data:`COLUMN_KINDS`,
    ``n_categories[j]`` the number of categories of a categorical column (ignored for
    the others)."""

    kinds: tuple[str, ...]
    n_categories: tuple[int, ...]
    _index: dict[str, list[int]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.kinds) != len(self.n_categories):
            raise ValueError(
                f"argument 'n_categories' must have one entry per column ({len(self.kinds)}); "
                f"got {len(self.n_categories)}"
            )
        for j, kind in enumerate(self.kinds):
            if kind not in COLUMN_KINDS:
                raise ValueError(
                    f"argument 'kinds' holds {kind!r} for column {j}; expected one of "
                    f"{COLUMN_KINDS}"
                )
            if kind == "categorical" and self.n_categories[j] < 1:
                raise ValueError(
                    f"categorical column {j} must have >= 1 category; got {self.n_categories[j]}"
                )
        index = {k: [j for j, kind in enumerate(self.kinds) if kind == k] for k in COLUMN_KINDS}
        object.__setattr__(self, "_index", index)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MixedLayout":
        return cls(tuple(d["kinds"]), tuple(int(n) for n in d["n_categories"]))

    def to_dict(self) -> dict[str, Any]:
        return {"kinds": list(self.kinds), "n_categories": list(self.n_categories)}

    def columns(self, kind: str) -> list[int]:
        """The indices of the columns of ``kind``."""
        return self._index[kind]

    @property
    def scalar_columns(self) -> list[int]:
        """The real, binary and count columns, in column order."""
        return [j for j, k in enumerate(self.kinds) if k != "categorical"]

    def scalar_positions(self, kind: str) -> list[int]:
        """Where the columns of ``kind`` sit among :attr:`scalar_columns`."""
        return [i for i, j in enumerate(self.scalar_columns) if self.kinds[j] == kind]

    @property
    def category_counts(self) -> list[int]:
        """n per categorical column, in column order."""
        return [self.n_categories[j] for j in self.columns("categorical")]

    @property
    def offsets(self) -> list[int]:
        """Where each categorical column's categories start in the concatenated
        one-hot / logit vector, and their total T at the end (G + 1 entries)."""
        out = [0]
        for n in self.category_counts:
            out.append(out[-1] + n)
        return out

    @property
    def n_scalar(self) -> int:
        """Columns that are one number each in the networks: real, binary, count."""
        return len(self.kinds) - len(self.columns("categorical"))

    @property
    def encoder_width(self) -> int:
        """The encoder's input: one value per scalar column, one-hot categories."""
        return self.n_scalar + self.offsets[-1]

    @property
    def decoder_width(self) -> int:
        """The decoder's output: loc and raw scale per real column, one number per
        binary and count column, one logit per category."""
        return (
            len(self.kinds)
            + len(self.columns("real"))
            + self.offsets[-1]
            - len(self.columns("categorical"))
        )


def _group_softmax(logits: Tensor, offsets: Sequence[int]) -> Tensor:
    """Softmax over each categorical column's slice of ``logits`` [..., T]."""
    if len(offsets) < 2:  # no categorical column: T = 0
        return logits
    return torch.cat(
        [logits[..., a:b].softmax(-1) for a, b in zip(offsets[:-1], offsets[1:])], dim=-1
    )


def _group_log_softmax(logits: Tensor, offsets: Sequence[int]) -> Tensor:
    """Log-softmax over each categorical column's slice of ``logits`` [..., T]."""
    if len(offsets) < 2:
        return logits
    return torch.cat(
        [logits[..., a:b].log_softmax(-1) for a, b in zip(offsets[:-1], offsets[1:])], dim=-1
    )


def _one_hot(codes: Tensor, observed: Tensor, counts: Sequence[int]) -> Tensor:
    """[B, G] codes (anything where not ``observed``) -> [B, T] one-hot, zeros for the
    columns not observed."""
    parts = []
    for g, n in enumerate(counts):
        code = torch.where(observed[:, g], codes[:, g], torch.zeros_like(codes[:, g]))
        hot = F.one_hot(code.long().clamp(0, n - 1), n).to(codes.dtype)
        parts.append(hot * observed[:, g : g + 1].to(codes.dtype))
    if not parts:
        return codes.new_zeros(codes.shape[0], 0)
    return torch.cat(parts, dim=-1)


class MixedSelfMaskingProcess(nn.Module):
    """p(s | x̂) for a mixed table: logit p(observed) = a_j − W_j x̂_j per real, binary
    or count column (counts as log(1 + count)); ``category_logits`` [T], one per category
    of the categorical columns: logit p(observed) of an entry of category c is ℓ_c.

    The scalar logit is the self-masking logit −W_j (x̂_j − b_j) of the numeric models
    written with its intercept a_j = W_j b_j (``intercept``), so that a column missing
    completely at random is W_j = 0 with its rate in a_j. In the form −W_j (x̂_j − b_j)
    a rate other than 1/2 needs a slope (W_j b_j = a_j with W_j ≠ 0): fitted to such a
    column, it kept a spurious slope that tilted the column's imputations."""

    def __init__(self, layout: MixedLayout):
        super().__init__()
        self.layout = layout
        self.W = nn.Parameter(torch.zeros(layout.n_scalar))
        self.intercept = nn.Parameter(torch.zeros(layout.n_scalar))
        self.category_logits = nn.Parameter(torch.zeros(layout.offsets[-1]))

    def forward(self, scalar: Tensor) -> Tensor:
        """Logits of p(observed) of the scalar columns: scalar [..., n_scalar] (x̂ in
        column order, counts as log(1 + count)) -> a − W x̂ [..., n_scalar]."""
        return self.intercept - self.W * scalar

    def category_log_missing(self) -> Tensor:
        """log p(missing | c) = log σ(−ℓ_c) for every category of the categorical
        columns [T] (ℓ_c is the logit of being observed)."""
        return F.logsigmoid(-self.category_logits)

    def category_log_prob(self, observed: Tensor, hot: Tensor, log_probs: Tensor) -> Tensor:
        """Σ over the categorical columns of log p(s_j | x): [B, K].

        Args:
            observed: [B, G] the categorical columns' masks (True = observed).
            hot: [B, T] the observed categories one-hot (zeros where missing).
            log_probs: [B, K, T] the decoder's log category probabilities log π.
        An observed entry of category c contributes log σ(ℓ_c); a missing one the exact
        mixture log Σ_c π_c σ(−ℓ_c) (its category is unknown: no sample is drawn)."""
        offsets = self.layout.offsets
        seen = F.logsigmoid(self.category_logits)
        lost = self.category_log_missing()
        total = log_probs.new_zeros(log_probs.shape[:-1])
        for g, (a, b) in enumerate(zip(offsets[:-1], offsets[1:])):
            if_seen = (hot[:, a:b] * seen[a:b]).sum(-1, keepdim=True)
            if_lost = torch.logsumexp(log_probs[..., a:b] + lost[a:b], -1)
            total = total + torch.where(observed[:, g : g + 1], if_seen, if_lost)
        return total

    def interpret(self, names: Optional[Sequence[str]] = None, categories=None) -> dict:
        """Per column: for scalar columns the slope W (W > 0: high values go missing),
        the intercept a (the logit of p(observed) at x̂ = 0: a real column's mean) and
        the threshold b = a / W where p(missing) = 1/2 (None when W = 0: a constant
        rate); for categorical ones p(missing) per category."""
        layout = self.layout
        names = list(names) if names is not None else [str(j) for j in range(len(layout.kinds))]
        result: dict[str, Any] = {}
        for i, j in enumerate(layout.scalar_columns):
            w, a = float(self.W[i].detach()), float(self.intercept[i].detach())
            result[names[j]] = {
                "kind": layout.kinds[j],
                "W": w,
                "intercept": a,
                "b": a / w if w != 0 else None,
                "direction": "high values missing"
                if w > 0
                else ("low values missing" if w < 0 else "constant rate"),
            }
        offsets = layout.offsets
        for g, j in enumerate(layout.columns("categorical")):
            logits = self.category_logits[offsets[g] : offsets[g + 1]].detach()
            p_missing = torch.sigmoid(-logits).tolist()
            labels = categories[j] if categories is not None else range(len(p_missing))
            result[names[j]] = {
                "kind": "categorical",
                "p_missing": {str(c): p for c, p in zip(labels, p_missing)},
            }
        return result


def upgrade_state_dict(model: nn.Module, weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """``weights`` for ``model`` in the current form. A :class:`MixedNotMIWAE` saved
    before the scalar columns' process took an intercept holds ``missing_model.b``
    (logits −W (x̂ − b)): it becomes ``missing_model.intercept`` = W b, the same process.
    Anything else comes back as it is: other models (a numeric NotMIWAE's self-masking
    process also has ``W`` and ``b``, with that meaning), current state dicts, and
    weights that fit no older form (left to the caller's checks)."""
    if not isinstance(getattr(model, "missing_model", None), MixedSelfMaskingProcess):
        return weights
    w, b = weights.get("missing_model.W"), weights.get("missing_model.b")
    if w is None or b is None or w.shape != b.shape or "missing_model.intercept" in weights:
        return weights
    upgraded = {k: v for k, v in weights.items() if k != "missing_model.b"}
    upgraded["missing_model.intercept"] = w * b
    return upgraded


class MixedNotMIWAE(nn.Module):
    """not-MIWAE (``missing_process="selfmasking"``) or MIWAE (``None``) for a mixed
    table (see the module docstring).

    Args:
        layout: the column types.
        latent_dim: L (default: D − 1, at least 1). hidden_dim: the networks' width.
        n_samples: K importance samples per row while training.
        missing_process: "selfmasking" or None (values missing at random: MIWAE).
    """

    data_mean: Tensor
    data_std: Tensor

    def __init__(
        self,
        layout: MixedLayout,
        latent_dim: Optional[int] = None,
        hidden_dim: int = 128,
        n_samples: int = 20,
        missing_process: Optional[str] = "selfmasking",
        min_scale: float = DEFAULT_MIN_SCALE,
    ):
        super().__init__()
        if missing_process not in ("selfmasking", None):
            raise ValueError(
                "argument 'missing_process' of a mixed-type model must be 'selfmasking' or "
                f"None; got {missing_process!r}"
            )
        D = len(layout.kinds)
        self.layout = layout
        self.input_dim = D
        self.latent_dim = latent_dim if latent_dim is not None else max(D - 1, 1)
        self.hidden_dim, self.n_samples, self.min_scale = hidden_dim, n_samples, min_scale
        self.encoder = Encoder(layout.encoder_width, hidden_dim, self.latent_dim)
        self.decoder = mlp([self.latent_dim, hidden_dim, hidden_dim, layout.decoder_width])
        self.missing_model = (
            MixedSelfMaskingProcess(layout) if missing_process == "selfmasking" else None
        )
        self.missing_process_name = missing_process
        # "fused": the compiled operators; "reference": their pure-PyTorch twins (export).
        self.backend = "fused"
        # The table's real columns are standardised: x_model = (x − data_mean) / data_std
        # (0 and 1 for the other columns), set by set_standardization.
        self.register_buffer("data_mean", torch.zeros(D))
        self.register_buffer("data_std", torch.ones(D))

    @property
    def ops(self) -> Any:
        """The operator functions of ``backend``."""
        return ops if self.backend == "fused" else ops.reference

    def set_standardization(self, mean: Any, std: Any) -> None:
        """The per-column mean and scale [D] the model's inputs were standardised with
        (kept with the model, so an exported model imputes in the table's units)."""
        self.data_mean.copy_(torch.as_tensor(mean, dtype=self.data_mean.dtype))
        self.data_std.copy_(torch.as_tensor(std, dtype=self.data_std.dtype))

    # -- pieces ------------------------------------------------------------------------
    def _observed_values(self, x: Tensor, observed: Tensor) -> tuple[Tensor, Tensor]:
        """The observed values as the networks see them: the scalar columns [B, n_scalar]
        (counts as log(1 + count), zeros where missing) and the categorical columns one-hot
        [B, T] (zeros where missing). They are the encoder's input and x̂ where observed."""
        layout = self.layout
        scalar = self._scalar(x)
        keep = observed[:, layout.scalar_columns]
        scalar = torch.where(keep, scalar, torch.zeros_like(scalar))
        cats = layout.columns("categorical")
        return scalar, _one_hot(x[:, cats], observed[:, cats], layout.category_counts)

    def _scalar(self, x: Tensor) -> Tensor:
        """The scalar columns of x [..., D] in column order, counts as log(1 + count)."""
        scalar = x[..., self.layout.scalar_columns]
        counts = self.layout.scalar_positions("count")
        if counts:
            scalar = scalar.clone()
            scalar[..., counts] = torch.log1p(scalar[..., counts].clamp_min(0))
        return scalar

    def _heads(self, out: Tensor) -> dict[str, Tensor]:
        """The decoder's output [..., W] split into each family's parameters."""
        layout = self.layout
        n_real, n_bin = len(layout.columns("real")), len(layout.columns("binary"))
        n_cnt, T = len(layout.columns("count")), layout.offsets[-1]
        loc, raw, logits, cat, log_rate = out.split([n_real, n_real, n_bin, T, n_cnt], -1)
        return {
            "loc": loc,
            "scale": F.softplus(raw) + self.min_scale,
            "logits": logits,
            "category_logits": cat,
            "log_rate": log_rate.clamp(max=20.0),
        }

    def _log_px(self, x: Tensor, s: Tensor, p: dict[str, Tensor]) -> Tensor:
        """Σ over observed entries of log p(x | z): [B, K]."""
        layout = self.layout
        total = p["loc"].new_zeros(p["loc"].shape[:-1])
        real, binary = layout.columns("real"), layout.columns("binary")
        cats, counts = layout.columns("categorical"), layout.columns("count")
        if real:
            total = total + self.ops.masked_normal_logprob(
                x[:, real], s[:, real], p["loc"], p["scale"]
            )
        if binary:
            total = total + self.ops.masked_bernoulli_logprob(
                x[:, binary], s[:, binary], p["logits"]
            )
        if cats:
            total = total + self.ops.masked_categorical_logprob(
                x[:, cats], s[:, cats], p["category_logits"], layout.offsets
            )
        if counts:
            total = total + self.ops.masked_poisson_logprob(
                x[:, counts], s[:, counts], p["log_rate"]
            )
        return total

    def _scalar_means(self, p: dict[str, Tensor]) -> Tensor:
        """E[x | z] of the scalar columns in column order [B, K, n_scalar]."""
        layout = self.layout
        B_K = p["loc"].shape[:-1]
        scalar = p["loc"].new_empty(*B_K, layout.n_scalar)
        for kind, value in (
            ("real", p["loc"]),
            ("binary", torch.sigmoid(p["logits"])),
            ("count", torch.exp(p["log_rate"])),
        ):
            cols = layout.scalar_positions(kind)
            if cols:
                scalar[..., cols] = value
        return scalar

    def _terms(self, x: Tensor, s: Tensor, k: int) -> dict[str, Tensor]:
        """log_w [B, K] and the decoder's parameters for K = ``k`` samples per row."""
        observed = s != 0
        scalar, hot = self._observed_values(x, observed)
        mu, std = self.encoder(torch.cat([scalar, hot], dim=-1))
        eps = torch.randn(x.shape[0], k, self.latent_dim, dtype=x.dtype, device=x.device)
        z = mu.unsqueeze(1) + std.unsqueeze(1) * eps
        # log p(z) − log q(z | x): the normalising constants cancel.
        log_w = (
            -0.5 * (z * z).sum(-1)
            + 0.5 * (eps * eps).sum(-1)
            + torch.log(std).sum(-1, keepdim=True)
        )
        p = self._heads(self.decoder(z))
        log_w = log_w + self._log_px(x, s, p)
        if self.missing_model is not None:
            log_w = log_w + self._log_ps(s, observed, scalar, hot, p)
        p["log_w"] = log_w
        return p

    def _log_ps(
        self, s: Tensor, observed: Tensor, scalar: Tensor, hot: Tensor, p: dict[str, Tensor]
    ) -> Tensor:
        """log p(s | x̂) [B, K], x̂ the observed values (``scalar``, ``hot`` of
        :meth:`_observed_values`) and, at the missing scalar entries, a normal draw (real)
        or the decoder's mean (binary, count); missing categorical entries enter as the
        exact mixture over their categories (:meth:`MixedSelfMaskingProcess.
        category_log_prob`)."""
        layout = self.layout
        assert self.missing_model is not None  # (called only for not-MIWAE)
        scalar_mean = self._scalar_means(p)
        real = layout.scalar_positions("real")
        if real:  # a reparameterised draw where the family has one
            scalar_mean[..., real] = p["loc"] + p["scale"] * torch.randn_like(p["loc"])
        counts = layout.scalar_positions("count")
        if counts:
            scalar_mean[..., counts] = torch.log1p(scalar_mean[..., counts])
        columns, dtype = layout.scalar_columns, scalar.dtype
        total = scalar_mean.new_zeros(scalar_mean.shape[:-1])
        if columns:
            keep = observed[:, columns].unsqueeze(1)
            x_hat = torch.where(keep, scalar.unsqueeze(1), scalar_mean)
            s_scalar = s[:, columns].to(dtype)
            # log Π_j Bernoulli(s_j; σ(ℓ_j)): a Bernoulli likelihood of s, all observed.
            total = total + self.ops.masked_bernoulli_logprob(
                s_scalar, torch.ones_like(s_scalar), self.missing_model(x_hat)
            )
        cats = layout.columns("categorical")
        if cats:
            log_probs = _group_log_softmax(p["category_logits"], layout.offsets)
            total = total + self.missing_model.category_log_prob(observed[:, cats], hot, log_probs)
        return total

    # -- the model's interface -----------------------------------------------------------
    def forward(self, x: Tensor, s: Tensor, n_samples: Optional[int] = None) -> dict[str, Tensor]:
        """x [B, D] (anything at the missing entries), s [B, D] (1 = observed), K =
        ``n_samples`` (default: the model's) -> {"loss": −elbo, "elbo": the bound
        averaged over rows, "bound" [B], "log_w" [B, K]}."""
        k = self.n_samples if n_samples is None else _validate.n_samples(n_samples)
        x = torch.where(s != 0, x, torch.zeros_like(x))
        log_w = self._terms(x, s, k)["log_w"]
        bound = torch.logsumexp(log_w, 1) - math.log(log_w.shape[1])
        elbo = bound.mean()
        return {"loss": -elbo, "elbo": elbo, "bound": bound, "log_w": log_w}

    def interpret_missing_process(
        self, names: Optional[Sequence[str]] = None, categories: Optional[Sequence[Any]] = None
    ) -> dict:
        """Per column, what the learnt process says (see
        :meth:`MixedSelfMaskingProcess.interpret`): slope and threshold of a scalar
        column, p(missing) per category of a categorical one. ``names``: the D column
        names; ``categories``: per column its category labels (None for the others)."""
        if self.missing_model is None:
            raise AttributeError(f"{type(self).__name__} without a missing process (MIWAE)")
        return self.missing_model.interpret(names, categories)

    def missing_probability(self, x: Tensor) -> Tensor:
        """p(value missing | x) per entry of complete rows x [B, D] (the model's units,
        category codes) -> [B, D]: σ(W x − a) for a scalar column (counts as
        log(1 + count)), p(missing | c) = σ(−ℓ_c) for a categorical entry of category c."""
        if self.missing_model is None:
            raise AttributeError(f"{type(self).__name__} without a missing process (MIWAE)")
        layout = self.layout
        p = torch.empty_like(x)
        p[:, layout.scalar_columns] = torch.sigmoid(-self.missing_model(self._scalar(x)))
        lost = self.missing_model.category_log_missing().exp()
        for g, j in enumerate(layout.columns("categorical")):
            p[:, j] = lost[layout.offsets[g] + x[:, j].long()]
        return p

    @torch.no_grad()
    def impute(
        self, x: Tensor, s: Tensor, n_samples: int = 1000, n_draws: Optional[int] = None
    ) -> Tensor:
        """Fills the missing entries of x [B, D] (s [B, D], 1 = observed); observed
        entries come back unchanged.

        Single imputation: the self-normalised importance-weighted mean for real columns,
        rounded for count columns, thresholded at 0.5 for binary ones and the weighted
        mode for categorical ones: the category of highest Σ_k α_k p(c | z_k, missing),
        where p(c | z_k, missing) ∝ π_c(z_k) σ(−ℓ_c) with the self-masking process (a
        category that goes missing more often is more likely behind a missing entry) and
        π_c(z_k) without one.
        ``n_draws = M``: M draws [M, B, D] by sampling-importance-resampling of the K
        samples, then a draw per column from p(x | z) (a category from p(c | z_k,
        missing)).
        Memory grows as B · K · (decoder width): call it on blocks of rows."""
        was_training = self.training
        self.eval()
        try:
            observed = s != 0
            x = torch.where(observed, x, torch.zeros_like(x))
            p = self._terms(x, s, n_samples)
            alpha = torch.softmax(p["log_w"], 1)  # [B, K]
            if n_draws is None:
                filled = self._weighted_fill(p, alpha)
            else:
                picks = torch.multinomial(alpha, n_draws, replacement=True).T  # [M, B]
                filled = torch.stack([self._draw(p, k) for k in picks])
            return torch.where(observed, x, filled)
        finally:
            self.train(was_training)

    def _missing_category_logits(self, category_logits: Tensor) -> Tensor:
        """Logits [..., T] of a missing entry's category given z_k: the decoder's
        log π_c plus log p(missing | c) = log σ(−ℓ_c) of the self-masking process, so that
        each group's softmax is π_c σ(−ℓ_c) / Σ_c' π_c' σ(−ℓ_c'), the category's posterior
        given z_k and that the entry went missing (the factor the bound marginalises, see
        :meth:`MixedSelfMaskingProcess.category_log_prob`). Without a missing process
        (MIWAE): the decoder's logits."""
        if self.missing_model is None:
            return category_logits
        return category_logits + self.missing_model.category_log_missing()

    def _weighted_fill(self, p: dict[str, Tensor], alpha: Tensor) -> Tensor:
        """Single imputation from the K samples' terms and their weights alpha [B, K]
        (see :meth:`impute`): [B, D] in standardised units."""
        layout = self.layout
        scalar = self._scalar_means(p)
        probs = _group_softmax(self._missing_category_logits(p["category_logits"]), layout.offsets)
        a = alpha.unsqueeze(-1)
        scalar = (a * scalar).sum(1)
        probs = (a * probs).sum(1)
        out = scalar.new_empty(scalar.shape[0], len(layout.kinds))
        out[:, layout.scalar_columns] = scalar
        for kind, rule in (("binary", lambda v: (v >= 0.5).to(v.dtype)), ("count", torch.round)):
            cols = layout.columns(kind)
            if cols:
                out[:, cols] = rule(out[:, cols])
        offsets = layout.offsets
        for g, j in enumerate(layout.columns("categorical")):
            out[:, j] = probs[:, offsets[g] : offsets[g + 1]].argmax(-1).to(out.dtype)
        return out

    def _draw(self, p: dict[str, Tensor], k: Tensor) -> Tensor:
        """One value per entry from p(x | z_k) with z_k the sample ``k`` [B] of each row."""
        layout = self.layout
        rows = torch.arange(k.shape[0], device=k.device)
        q = {name: value[rows, k] for name, value in p.items() if value.dim() == 3}
        out = q["loc"].new_empty(k.shape[0], len(layout.kinds))
        real, binary = layout.columns("real"), layout.columns("binary")
        if real:
            out[:, real] = q["loc"] + q["scale"] * torch.randn_like(q["loc"])
        if binary:
            out[:, binary] = torch.bernoulli(torch.sigmoid(q["logits"]))
        counts = layout.columns("count")
        if counts:
            out[:, counts] = torch.poisson(torch.exp(q["log_rate"]))
        offsets = layout.offsets
        category_logits = self._missing_category_logits(q["category_logits"])
        for g, j in enumerate(layout.columns("categorical")):
            logits = category_logits[:, offsets[g] : offsets[g + 1]]
            out[:, j] = torch.multinomial(logits.softmax(-1), 1).squeeze(1).to(out.dtype)
        return out
