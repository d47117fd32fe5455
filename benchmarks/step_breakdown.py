"""Where the time of a CPU training step and of imputation goes: the parts that bound
what any change to notmiwae_fast can reach (issue 22's targets), measured in one run.

Training (NotMIWAE, self-masking, Gaussian, D = 11, hidden 128, latent 10, K = 20; the
loop users write, ``loss = model(x, s)["loss"]; opt.zero_grad(); loss.backward();
opt.step()``), per batch size:

* the parts of that loop timed inside it: the forward autograd records, the backward,
  ``opt.zero_grad()`` and ``opt.step()`` of ``torch.optim.Adam`` with its default (on
  the CPU: a loop over the parameters, about a dozen operator calls per tensor) and
  with ``fused=True``, and the Trainer's direct call of the fused kernel;
* ``gauss_bound_grads`` alone: the one operator computing the bound and every gradient
  (what the forward plus backward cannot go below);
* whole steps: the plain loop with the default Adam, the same with the model's
  parameters held as views of one flat tensor (a prototype made here, not the
  package's layout: one tensor for Adam's loop instead of 14), with ``fused=True``,
  and notmiwae-pytorch's plain loop (default Adam) when installed, for the ratio.

Imputation (the same model, one batch of 64 rows, K = 1000: the decoder runs on 64,000
latent samples):

* the whole batch (``model.impute``), the decoder (``ops.mlp_tanh``) alone, the
  decoder's three matrix products alone (blocks of 1,024 samples, the narrow output
  layer in its faster transposed form, as ``impute_roofline.py`` bounds them), and
  drawing the batch's standard normal numbers (z and x̂) with torch.

Rounds alternate every measurement in one process (load on a shared machine reaches
them alike); medians over rounds with [min–max]. One thread, OMP_WAIT_POLICY=PASSIVE.

    python benchmarks/step_breakdown.py            # writes benchmarks/results/cpu/step_breakdown.*
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Callable

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from _measure import cpu_run_record, load_text, spread, spread_text, write_report  # noqa: E402
from train_loop import step_of  # noqa: E402

IMPUTE_ROWS, IMPUTE_K, PRODUCT_BLOCK = 64, 1000, 1024
# Issue 22's aims for the plain loop against notmiwae-pytorch's, by batch size.
AIMS = {16: 2.5, 128: 2.0}


def plain_parts(model, x, s, fused: bool) -> Callable[[int], dict]:
    """n steps of the plain loop, each part timed inside it: {part: seconds per step}."""
    import torch

    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused)
    adam = "adam_fused" if fused else "adam_default"

    def run(n: int) -> dict:
        t = {"forward": [], "zero_grad": [], "backward": [], adam: []}
        for _ in range(n):
            t0 = time.perf_counter()
            loss = model(x, s)["loss"]
            t1 = time.perf_counter()
            opt.zero_grad()
            t2 = time.perf_counter()
            loss.backward()
            t3 = time.perf_counter()
            opt.step()
            t4 = time.perf_counter()
            for key, a, b in (("forward", t0, t1), ("zero_grad", t1, t2), ("backward", t2, t3)):
                t[key].append(b - a)
            t[adam].append(t4 - t3)
        return {k: statistics.median(v) for k, v in t.items()}

    return run


def direct_fused_adam(model) -> Callable[[], None]:
    """The Trainer's optimizer step (the fused kernel called directly) on gradients set
    once: its cost alone."""
    import torch

    from notmiwae_fast.train.optim import _adam

    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    opt = _adam(params, 1e-3)
    opt.step()  # makes Adam's state: later steps take the direct path
    return opt.step


def kernel_call(model, x, s) -> Callable[[], None]:
    """gauss_bound_grads on the model's arguments (noise drawn once)."""
    from notmiwae_fast import ops
    from notmiwae_fast.nn import _gauss_bound

    x0, s0 = model._batch_inputs(x, s)
    process, selfmask = model._missing_model_and_selfmask()
    nets = model._gauss_bound_networks(x0, process, selfmask)
    args = _gauss_bound.arguments(x0, s0, model.n_samples, model.latent_dim, nets, selfmask)
    return lambda: ops.gauss_bound_grads(*args)


def flat_parameter_step(model, x, s) -> Callable[[], None]:
    """The plain loop with the default Adam on a prototype layout: every parameter of
    ``model`` replaced by a view of one flat leaf tensor, re-made from it (one split)
    before each forward, so Adam loops over one tensor. The model is changed in place."""
    import torch
    from torch import nn

    slots = [
        (module, name, p.shape, p.detach().clone())
        for module in model.modules()
        for name, p in module._parameters.items()
        if p is not None
    ]
    flat = nn.Parameter(torch.cat([t.reshape(-1) for *_, t in slots]))
    sizes = [t.numel() for *_, t in slots]
    for module, name, *_ in slots:
        del module._parameters[name]
    model.register_parameter("flat_prototype", flat)
    opt = torch.optim.Adam([flat], lr=1e-3)

    def step() -> None:
        for (module, name, shape, _), view in zip(slots, flat.split(sizes)):
            setattr(module, name, view.view(shape))
        loss = model(x, s)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def imputation_calls() -> dict:
    """The imputation measurements of one batch (see the module docstring)."""
    import torch

    from notmiwae_fast import ops
    from notmiwae_fast.bench import model_cases as cases

    model = cases.tabular_model("fused")
    x, s = cases.tabular_data(IMPUTE_ROWS, cases.TABULAR_D)
    d, latent = cases.TABULAR_D, cases.TABULAR_D - 1
    n = IMPUTE_ROWS * IMPUTE_K
    g = torch.Generator().manual_seed(0)
    z = torch.randn(n, latent, generator=g)
    weights, biases = model.decoder.net.layer_parameters()
    weights = [w.detach() for w in weights]
    biases = [b.detach() for b in biases]
    w_t = [w.t().contiguous() for w in weights[:2]]

    def products() -> None:
        for r in range(0, n, PRODUCT_BLOCK):
            h = torch.mm(z[r : r + PRODUCT_BLOCK], w_t[0])
            h = torch.mm(h, w_t[1])
            torch.mm(weights[2], h.t())  # [2D, block]: the narrow layer's faster form

    def noise() -> None:
        torch.randn(IMPUTE_ROWS, IMPUTE_K, latent)
        torch.randn(IMPUTE_ROWS, IMPUTE_K, d)

    def impute() -> None:
        with torch.no_grad():
            model.impute(x, s, n_samples=IMPUTE_K)

    def decoder() -> None:
        with torch.no_grad():
            ops.mlp_tanh(z, weights, biases)

    return {"impute_batch": impute, "decoder": decoder, "products": products, "noise": noise}


def measure(calls: dict, parts: dict, rounds: int, n: int) -> dict:
    """Medians (ms) over ``rounds`` alternating rounds: each call timed over n runs,
    each parts-runner's parts timed inside its own n steps."""
    samples: dict = {}
    for fn in calls.values():
        for _ in range(max(3, n // 10)):
            fn()
    for run in parts.values():
        run(max(3, n // 10))
    for _ in range(rounds):
        for name, fn in calls.items():
            start = time.perf_counter()
            for _ in range(n):
                fn()
            samples.setdefault(name, []).append((time.perf_counter() - start) / n * 1e3)
        for prefix, run in parts.items():
            for part, seconds in run(n).items():
                samples.setdefault(f"{prefix}/{part}", []).append(seconds * 1e3)
    return {k: spread(v) for k, v in samples.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 128])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "cpu", "step_breakdown"))
    args = parser.parse_args(argv)

    import torch

    from notmiwae_fast import bench
    from notmiwae_fast.bench import model_cases as cases

    torch.set_num_threads(1)
    theirs = bench.have_notmiwae_pytorch()
    load_before = os.getloadavg()
    training = {}
    for batch in args.batches:
        x, s = cases.tabular_data(batch, cases.TABULAR_D)
        calls = {
            "step/plain_default_adam": step_of("fused", "plain", batch),
            "step/flat_prototype_default_adam": flat_parameter_step(
                cases.tabular_model("fused"), x, s
            ),
            "kernel/gauss_bound_grads": kernel_call(cases.tabular_model("fused"), x, s),
            "part/adam_direct_fused_kernel": direct_fused_adam(cases.tabular_model("fused")),
        }
        if theirs is not None:
            calls["step/notmiwae_pytorch_plain"] = step_of("notmiwae_pytorch", "plain", batch)
        parts = {
            "plain_default": plain_parts(cases.tabular_model("fused"), x, s, fused=False),
            "plain_fused": plain_parts(cases.tabular_model("fused"), x, s, fused=True),
        }
        training[batch] = measure(calls, parts, args.rounds, max(20, 2000 // batch))
    imputation = measure(imputation_calls(), {}, args.rounds, 3)
    result = {
        "machine": cpu_run_record(1, load_before, theirs),
        "rounds": args.rounds,
        "training": {str(b): r for b, r in training.items()},
        "imputation": imputation,
    }
    write_report(args.out, result, markdown(result))
    return 0


def _row(name: str, t: dict, extra: str = "") -> str:
    return f"| {name} | {spread_text(t)} | {extra} |"


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# Where the time goes: a CPU training step and imputation",
        "",
        f"Generated by `benchmarks/step_breakdown.py`. {m['cpu']}, {m['cores']} cores, 1 "
        f"thread, OMP_WAIT_POLICY={m['OMP_WAIT_POLICY']}, torch {m['torch']}, "
        f"notmiwae-pytorch {m['notmiwae_pytorch']}; {load_text(m)}; "
        f"{result['rounds']} alternating rounds, median [min–max].",
    ]
    for batch, r in result["training"].items():
        base = r.get("step/notmiwae_pytorch_plain")
        lines += [
            "",
            f"## Training step, batch {batch} (NotMIWAE self-masking, D = 11, K = 20)",
            "",
            "| measurement | ms | × notmiwae-pytorch plain loop |",
            "|---|---|---|",
        ]
        for name, t in r.items():
            ratio = f"{base['median_ms'] / t['median_ms']:.2f}" if base and "step/" in name else ""
            lines.append(_row(name, t, ratio))
        aim = AIMS.get(int(batch))
        if base and aim:
            need = base["median_ms"] / aim
            adam = r["plain_default/adam_default"]["median_ms"]
            kernel = r["kernel/gauss_bound_grads"]["median_ms"]
            lines += [
                "",
                f"{aim}× notmiwae-pytorch is {need:.3f} ms per step. The default Adam's step "
                f"takes {adam:.3f} ms of it and the one operator computing the bound and all "
                f"gradients {kernel:.3f} ms: together {adam + kernel:.3f} ms, "
                f"{(adam + kernel) / need:.0%} of the budget before any forward bookkeeping, "
                "autograd graph or zero_grad.",
            ]
    imp = result["imputation"]
    batch, dec, prod, noise = (
        imp[k]["median_ms"] for k in ("impute_batch", "decoder", "products", "noise")
    )
    lines += [
        "",
        f"## Imputation, one batch of {IMPUTE_ROWS} rows, K = {IMPUTE_K}",
        "",
        "| measurement | ms | share of the batch |",
        "|---|---|---|",
    ]
    for name, t in imp.items():
        lines.append(_row(name, t, f"{t['median_ms'] / batch:.0%}"))
    lines += [
        "",
        f"The decoder's products alone are {prod / batch:.0%} of the batch (the bound "
        f"fraction); the decoder with its bias and tanh is {dec / prod:.0%} of its products "
        f"alone, and torch's random numbers add {noise / prod:.0%} of them. 80 % of the "
        f"bound means a batch in {prod / 0.8:.1f} ms: {prod / 0.8 - prod:.1f} ms for "
        f"everything but the products, where the tanh passes take {dec - prod:.1f} ms "
        f"and the noise {noise:.1f} ms.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
