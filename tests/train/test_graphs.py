"""Trainer(cuda_graphs=True): the switch, which batches replay a captured step and which
run uncaptured, and the captured step's numbers, errors and state against the uncaptured
step's (on the CPU through the stand-in that replays by running the step again; on a
GPU with real CUDA graphs)."""

from __future__ import annotations

import pytest
import torch
from helpers import cuda_only, fixed_noise

import notmiwae_fast as nf
from notmiwae_fast import utils
from notmiwae_fast.train.graphs import StepGraphs

D = 4


def data(n=40, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=g)
    s = (torch.rand(n, D, generator=g) > 0.25).float()
    return (x * s).to(device), s.to(device)


MODELS = {
    "selfmasking": (nf.NotMIWAE, dict(missing_process="selfmasking")),
    "known_signs": (
        nf.NotMIWAE,
        dict(missing_process="selfmasking_known_signs", signs=[1.0, -1.0, 1.0, 1.0]),
    ),
    "miwae": (nf.MIWAE, {}),
}


def trainer(name="selfmasking", graphs=None, device="cpu", grad_clip=None, warmup=1):
    """A fresh model's Trainer; ``graphs``: None (uncaptured), "stand_in" or "cuda"."""
    cls, kwargs = MODELS[name]
    utils.set_seed(0)
    model = cls(D, hidden_dim=16, n_samples=5, **kwargs)
    tr = nf.Trainer(
        model,
        lr=1e-2,
        device=device,
        grad_clip=grad_clip,
        progress=False,
        cuda_graphs=graphs == "cuda",
    )
    if graphs == "stand_in":
        tr._graphs = StepGraphs(tr, stand_in=True, warmup=warmup)
    elif tr._graphs is not None:
        tr._graphs.warmup = warmup
    return tr


def run(tr, epochs=3, batch=16, n=40):
    """``epochs`` passes over n rows in batches of ``batch`` (the last one short)."""
    x, s = data(n, device=tr.device)
    torch.manual_seed(3)
    outs = []
    for _ in range(epochs):
        for i in range(0, n, batch):
            outs.append(tr.train_step((x[i : i + batch], s[i : i + batch])))
    return outs


def state(tr):
    """The parameters, the Adam moments and step counts, and the step counters."""
    tensors = [p.detach().clone() for p in tr.model.parameters()]
    for moments in tr.optimizer.state.values():
        tensors += [moments[k].clone() for k in ("exp_avg", "exp_avg_sq", "step")]
    return tensors + [tr.model.n_train_steps.clone(), torch.tensor(tr.global_step)]


def assert_same(a, b, **tol):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, **(tol or dict(rtol=0, atol=0)))


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_switch_must_be_a_bool(value):
    model = nf.MIWAE(D, hidden_dim=8)
    with pytest.raises(ValueError, match="argument 'cuda_graphs' must be True or False"):
        nf.Trainer(model, progress=False, cuda_graphs=value)


def test_switch_on_the_cpu_runs_the_uncaptured_step():
    """Off CUDA the switch changes nothing: no graphs, the same numbers."""
    on, off = trainer(graphs="cuda"), trainer()
    assert on._graphs is None and on.cuda_graphs and not off.cuda_graphs
    assert_same([o["loss"] for o in run(on)], [o["loss"] for o in run(off)])
    assert_same(state(on), state(off))


def test_a_device_named_without_its_index_still_captures():
    """Trainer(device="cpu:0") (as "cuda" for cuda:0): the Trainer keeps the device as
    its tensors report it, so batches moved there match it and get captured."""
    tr = trainer(graphs="stand_in", device="cpu:0")
    assert tr.device == torch.device("cpu")
    run(tr, epochs=2)
    assert sorted(key[0] for key in tr._graphs.graphs) == [(8, D), (16, D)]


@pytest.mark.parametrize("grad_clip", [None, 0.5], ids=["no_clip", "clip"])
@pytest.mark.parametrize("name", list(MODELS))
def test_captured_step_gives_the_uncaptured_numbers(name, grad_clip):
    """Three epochs of 16, 16 and 8 rows: the outputs of every step (same keys, same
    values), the parameters, Adam's state and the step counts equal the uncaptured
    run's, the known-signs slope's parameter (reached through the chain rule) and
    clipping included; each batch shape got its own captured step."""
    captured, plain = (
        trainer(name, "stand_in", grad_clip=grad_clip),
        trainer(name, None, grad_clip=grad_clip),
    )
    outs, expected = run(captured), run(plain)
    for got, want in zip(outs, expected):
        assert list(got) == list(want)
        assert_same(list(got.values()), list(want.values()))
    assert_same(state(captured), state(plain))
    assert sorted(key[0] for key in captured._graphs.graphs) == [(8, D), (16, D)]
    for p in captured.model.parameters():
        assert p.grad is not None


def test_which_steps_replay(monkeypatch):
    """Warm-up steps of each shape run uncaptured, later ones replay; a shape beyond
    max_graphs, a changed learning rate (captured again) and uncapturable steps (an
    Adam setting the fused kernel lacks, a reference-backend model) are told apart."""
    tr = trainer(graphs="stand_in", warmup=2)
    graphs = tr._graphs
    graphs.max_graphs = 1
    eager = []
    original = tr._step
    monkeypatch.setattr(tr, "_step", lambda batch: eager.append(len(batch[0])) or original(batch))
    x, s = data(64)
    for rows in (16, 16, 16, 16, 8, 8, 8):
        tr.train_step((x[:rows], s[:rows]))
    # 16: the first step makes Adam's state (nothing to capture before it), two
    # warm-ups, then captured; 8: never captured (one graph at most).
    assert eager == [16, 16, 16, 8, 8, 8]
    assert len(graphs.graphs) == 1
    tr.optimizer.param_groups[0]["lr"] = 5e-3
    tr.train_step((x[:16], s[:16]))
    tr.train_step((x[:16], s[:16]))
    assert eager[-2:] == [16, 16]  # a new key: warm-up again
    tr.optimizer.param_groups[0]["amsgrad"] = True  # Adam.step's own path: uncaptured
    assert graphs._key([x[:16], s[:16]]) is None
    tr.optimizer.param_groups[0]["amsgrad"] = False
    assert graphs._key([x[:16], s[:16]]) is not None
    tr.model.backend = "reference"
    tr.train_step((x[:16], s[:16]))
    assert graphs._key([x[:16], s[:16]]) is None


def test_loading_a_checkpoint_captures_again(tmp_path):
    """Loading replaces the Adam state the graphs read: they are dropped and the step
    is captured again, continuing as the uncaptured run does."""
    captured, plain = trainer(graphs="stand_in"), trainer()
    for tr in (captured, plain):
        run(tr, epochs=1)
        tr.save_checkpoint(tmp_path / "a.pt")
        tr.load_checkpoint(tmp_path / "a.pt")
    keys_before = dict(captured._graphs.graphs)
    outs, expected = run(captured, epochs=2), run(plain, epochs=2)
    assert all(
        captured._graphs.graphs[k] is not keys_before.get(k) for k in captured._graphs.graphs
    )
    assert_same([o["loss"] for o in outs], [o["loss"] for o in expected])
    assert_same(state(captured), state(plain))


def test_non_finite_loss_and_bad_mask_leave_the_state_as_it_was():
    """On a replayed step a non-finite loss raises FloatingPointError naming the step
    and a mask that is not 0/1 raises the data check's ValueError; neither moves the
    parameters, Adam's state or the step counts, and no gradient is handed out."""
    tr = trainer(graphs="stand_in")
    run(tr, epochs=2)
    assert (16, D) in [key[0] for key in tr._graphs.graphs]  # these steps replay
    x, s = data(16)
    before = state(tr)
    bad_s = s.clone()
    bad_s[0, 0] = 2.0
    with pytest.raises(ValueError, match="argument 's' must hold only 0"):
        tr.train_step((x, bad_s))
    assert_same(state(tr)[:-1], before[:-1])
    with torch.no_grad():
        tr.model.decoder.net[-1].bias.fill_(float("nan"))
    before = state(tr)
    step = tr.global_step
    with pytest.raises(FloatingPointError, match=f"non-finite loss .* at step {step};"):
        tr.train_step((x, s))
    after = state(tr)
    assert_same(after, before, rtol=0, atol=0, equal_nan=True)
    assert all(p.grad is None for p in tr.model.parameters())


def test_outputs_are_fresh_tensors():
    """A step's outputs are not overwritten by the next replay (the epoch metrics keep
    them until the end of the pass)."""
    tr = trainer(graphs="stand_in")
    outs = run(tr, epochs=3)
    losses = [o["loss"].item() for o in outs]
    assert len(set(losses)) == len(losses)


# -- on a GPU: real CUDA graphs -------------------------------------------------------------


@cuda_only
@pytest.mark.cuda
@pytest.mark.parametrize("grad_clip", [None, 0.5], ids=["no_clip", "clip"])
@pytest.mark.parametrize("name", list(MODELS))
def test_cuda_graph_step_equals_uncaptured(name, grad_clip, monkeypatch):
    """With the same noise, CUDA-graph training over three epochs (16, 16, 8 rows) gives
    the uncaptured run's losses, parameters and Adam state (the same kernels on the
    same numbers)."""
    fixed_noise(monkeypatch)
    captured = trainer(name, "cuda", device="cuda", grad_clip=grad_clip)
    plain = trainer(name, None, device="cuda", grad_clip=grad_clip)
    assert captured._graphs is not None
    outs, expected = run(captured), run(plain)
    assert len(captured._graphs.graphs) == 2
    assert all(g.captured.is_graph for g in captured._graphs.graphs.values())
    torch.testing.assert_close(
        torch.stack([o["loss"] for o in outs]), torch.stack([o["loss"] for o in expected])
    )
    assert_same(state(captured), state(plain), rtol=1e-5, atol=1e-6)


@cuda_only
@pytest.mark.cuda
def test_cuda_graph_draws_new_noise_and_raises_like_uncaptured():
    """Replays draw fresh noise (the same batch, different losses) and a non-finite
    loss raises without moving the parameters."""
    tr = trainer(graphs="cuda", device="cuda")
    run(tr, epochs=2)
    x, s = data(16, device="cuda")
    a, b = (tr.train_step((x, s))["loss"].item() for _ in range(2))
    assert a != b
    with torch.no_grad():
        tr.model.decoder.net[-1].bias.fill_(float("nan"))
    before = state(tr)
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        tr.train_step((x, s))
    assert_same(state(tr), before, rtol=0, atol=0, equal_nan=True)


def test_a_failed_capture_warns_and_runs_uncaptured(monkeypatch):
    """A step that cannot be captured (an operator a CUDA graph refuses) warns once and
    runs uncaptured from then on, with the uncaptured numbers."""
    from notmiwae_fast.train import graphs as graphs_module

    def refuse(*args, **kwargs):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(graphs_module, "Captured", refuse)
    captured, plain = trainer(graphs="stand_in"), trainer()
    with pytest.warns(RuntimeWarning, match="could not be captured") as caught:
        outs = run(captured)
    assert len(caught) == 2  # one per batch shape
    assert not captured._graphs.graphs and len(captured._graphs.failed) == 2
    assert_same([o["loss"] for o in outs], [o["loss"] for o in run(plain)])
    assert_same(state(captured), state(plain))


def test_frozen_parameter_is_left_alone():
    """A parameter that does not require grad gets no gradient and is not moved by the
    replayed steps, as without graphs."""
    captured, plain = trainer(graphs="stand_in"), trainer()
    for tr in (captured, plain):
        tr.model.decoder.net[0].weight.requires_grad_(False)
    outs, expected = run(captured), run(plain)
    assert_same([o["loss"] for o in outs], [o["loss"] for o in expected])
    assert_same(state(captured), state(plain))
    assert captured._graphs.graphs and captured.model.decoder.net[0].weight.grad is None
