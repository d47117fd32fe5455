"""The reference operators: complete (every operator of SPEC section 2) and scriptable
(the pure-PyTorch TorchScript export is built from them)."""

from __future__ import annotations

import pytest
import torch

from notmiwae_fast import ops
from notmiwae_fast.ops import reference

# The eight operators of SPEC section 2, the latent samples' terms, and the networks'
# MLP and decoder scale.
SPEC_OPERATORS = [
    "iw_logmeanexp",
    "iw_weights",
    "masked_normal_logprob",
    "masked_bernoulli_logprob",
    "masked_studentt_logprob",
    "selfmask_logprob",
    "notmiwae_normal_terms",
    "iw_impute",
    "latent_terms",
    "mlp_tanh",
    "softplus_scale",
]


# The likelihoods of mixed-type tables (counts and categorical columns).
MIXED_OPERATORS = ["masked_poisson_logprob", "masked_categorical_logprob"]
# Composed of the others (not exported: TorchScript export runs the layers one by one).
COMPOSITE_OPERATORS = ["gauss_bound", "gauss_bound_grads"]
# The models' input check and zero-fill (tests/ops/test_observed_data.py).
INPUT_OPERATORS = ["observed_data"]
# The clipped-pixel model's imputation (inference only; tests/images/test_clipped.py).
IMAGE_OPERATORS = ["clipped_impute"]


def test_every_spec_operator_has_a_reference_a_wrapper_and_a_kernel():
    every = (
        SPEC_OPERATORS + MIXED_OPERATORS + COMPOSITE_OPERATORS + INPUT_OPERATORS + IMAGE_OPERATORS
    )
    assert sorted(reference.__all__) == sorted(every)
    for name in every:
        assert callable(getattr(reference, name)) and callable(getattr(ops, name))
        assert hasattr(torch.ops.notmiwae_fast, name)


@pytest.mark.parametrize("name", SPEC_OPERATORS + MIXED_OPERATORS)
def test_reference_scripts_and_matches_eager(name):
    scripted = torch.jit.script(getattr(reference, name))
    B, K, D = 3, 4, 5
    g = torch.Generator().manual_seed(0)
    x, mask = torch.randn(B, D, generator=g), torch.rand(B, D, generator=g) > 0.4
    per_sample = [torch.randn(B, K, D, generator=g) for _ in range(3)]
    scale = per_sample[1].exp()
    args = {
        "iw_logmeanexp": (per_sample[0][..., 0],),
        "iw_weights": (per_sample[0][..., 0],),
        "iw_impute": (per_sample[0][..., 0], per_sample[1]),
        "masked_normal_logprob": (x, mask, per_sample[0], scale),
        "masked_bernoulli_logprob": ((x > 0).float(), mask, per_sample[0]),
        "masked_studentt_logprob": (x, mask, per_sample[0], scale, torch.full((D,), 4.0)),
        "masked_poisson_logprob": (torch.floor(4 * x.abs()), mask, per_sample[0]),
        "masked_categorical_logprob": (  # two columns of 2 and 3 categories
            torch.floor(2 * x[:, :2].abs()).clamp(max=1),
            mask[:, :2],
            per_sample[0],
            [0, 2, D],
        ),
        "selfmask_logprob": (per_sample[0], mask, torch.randn(D), torch.randn(D)),
        "notmiwae_normal_terms": (
            x,
            mask,
            per_sample[0],
            scale,
            per_sample[2],
            torch.randn(D),
            torch.randn(D),
        ),
        "mlp_tanh": (x, [torch.randn(6, D), torch.randn(2, 6)], [torch.randn(6), torch.randn(2)]),
        "softplus_scale": (per_sample[0], 1e-3),
        "latent_terms": (x, scale[:, 0], per_sample[2]),
    }[name]
    torch.testing.assert_close(scripted(*args), getattr(reference, name)(*args))
