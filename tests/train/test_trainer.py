"""The Trainer: resuming, checkpoints, early stopping, validation, mode, logging."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

import notmiwae_fast as nf
from notmiwae_fast import utils
from notmiwae_fast._common.io import save_atomic

D = 4


def data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=g)
    s = (torch.rand(n, D, generator=g) > 0.25).float()
    return torch.where(s.bool(), x, torch.zeros_like(x)), s, x


def loader(*tensors, shuffle=True):
    return torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(*tensors), batch_size=16, shuffle=shuffle
    )


def fresh_model():
    utils.set_seed(0)
    return nf.NotMIWAE(D, hidden_dim=16, n_samples=5)


def test_resume_continues_from_the_same_step_and_optimizer_state(tmp_path):
    x, s, _ = data()
    straight = fresh_model()
    utils.set_seed(1)
    t1 = nf.Trainer(straight, progress=False)
    t1.train(loader(x, s), n_epochs=4)

    interrupted = fresh_model()
    utils.set_seed(1)
    t2 = nf.Trainer(interrupted, progress=False, checkpoint_dir=tmp_path)
    t2.train(loader(x, s), n_epochs=2)
    resumed = fresh_model()  # a new process would start from scratch like this
    utils.set_seed(999)  # whatever the RNG state, the checkpoint restores it
    t3 = nf.Trainer(resumed, progress=False, checkpoint_dir=tmp_path)
    history = t3.train(loader(x, s), n_epochs=4, resume_from=tmp_path / "last.pt")

    assert t3.global_step == t1.global_step == 4 * 6 and t3.epoch == 4
    assert len(history["train_loss"]) == 4
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    opt1, opt3 = t1.optimizer.state_dict()["state"], t3.optimizer.state_dict()["state"]
    for key in opt1:
        torch.testing.assert_close(opt1[key]["exp_avg"], opt3[key]["exp_avg"], rtol=0, atol=0)


def test_cuda_random_states_restore_on_a_machine_with_fewer_gpus(monkeypatch):
    """A checkpoint written where two GPUs were visible restores the states of the GPUs
    this machine has (one here, faked) instead of failing half-way through the restore;
    a CUDA state that is not a generator state is refused before anything is restored."""
    from notmiwae_fast.distributed import context
    from notmiwae_fast.train import checkpoint

    saved = {
        "torch": torch.get_rng_state(),
        "numpy": checkpoint._numpy_state_plain(),
        "python": __import__("random").getstate(),
        "cuda": [torch.full((16,), 1, dtype=torch.uint8), torch.full((16,), 2, dtype=torch.uint8)],
    }
    rng = checkpoint._checked_rng(saved)
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, i: restored.append((i, s[0].item())))
    checkpoint._restore_rng(rng, True, context())
    assert restored == [(0, 1)]
    with pytest.raises(TypeError, match="'cuda' is not a list of generator states"):
        checkpoint._checked_rng({**saved, "cuda": [torch.zeros(2, 8)]})


def test_best_and_last_checkpoints_and_early_stopping(tmp_path):
    x, s, x_true = data()
    model = fresh_model()
    trainer = nf.Trainer(
        model,
        lr=1e-2,
        progress=False,
        checkpoint_dir=tmp_path,
        original_data_available=True,
        rmse_n_samples=10,
    )
    val = loader(x, s, x_true, shuffle=False)
    history = trainer.train(loader(x, s), val_loader=val, n_epochs=200, early_stopping_patience=2)
    epochs = len(history["train_loss"])
    assert epochs < 200  # stopped early
    assert len(history["val_loss"]) == epochs and len(history["val_rmse"]) == epochs
    assert all(math.isfinite(v) for v in history["val_rmse"])
    best_epoch = int(np.argmin(history["val_loss"]))
    assert epochs - 1 - best_epoch == 2  # patience counted from the best
    best = torch.load(tmp_path / "best.pt", weights_only=False)
    last = torch.load(tmp_path / "last.pt", weights_only=False)
    assert best["epoch"] == best_epoch + 1 and last["epoch"] == epochs
    assert best["best_loss"] == pytest.approx(min(history["val_loss"]))
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_atomic_save_leaves_the_old_file_on_failure(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_atomic({"a": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_atomic({"a": Unpicklable()}, path)
    assert torch.load(path) == {"a": 1}
    assert os.listdir(tmp_path) == ["ckpt.pt"]


def test_atomic_save_gives_an_ordinary_file_and_leaves_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        save_atomic({"a": 1}, tmp_path / "ckpt.pt")
        assert os.umask(0o027) == 0o027  # read, not changed
    finally:
        os.umask(old)
    assert (tmp_path / "ckpt.pt").stat().st_mode & 0o777 == 0o640  # 0o666 & ~umask


@pytest.mark.parametrize("mode", [True, False])
def test_model_left_in_the_mode_it_was_found(mode):
    x, s, _ = data()
    model = fresh_model().train(mode)
    trainer = nf.Trainer(model, progress=False)
    trainer.train(loader(x, s), val_loader=loader(x, s), n_epochs=1)
    assert model.training is mode
    trainer.validate(loader(x, s))
    assert model.training is mode


def test_every_submodule_keeps_its_mode():
    """A model in train mode with its encoder in eval mode (say, frozen): training,
    validation and imputation put each module's mode back, not just the model's."""
    x, s, _ = data(32)
    model = fresh_model().train()
    model.encoder.eval()
    modes = {name: m.training for name, m in model.named_modules()}
    trainer = nf.Trainer(model, progress=False)
    trainer.train(loader(x, s), val_loader=loader(x, s), n_epochs=1)
    assert {name: m.training for name, m in model.named_modules()} == modes
    trainer.validate(loader(x, s))
    model.impute(x, s, n_samples=5)
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert modes[""] and not modes["encoder"] and modes["decoder"]


def test_trains_supervised_models_and_clips_gradients():
    x, s, x_true = data()
    y = (x_true[:, 0] > 0).long()
    model = nf.SupNotMIWAE(D, y_dim=1, task="classification", hidden_dim=16)
    trainer = nf.Trainer(model, lr=3e-3, grad_clip=0.5, progress=False)
    history = trainer.train(loader(x, s, y), n_epochs=6)
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert "train_log_p_y_given_x" in history


def test_tensorboard_optional(tmp_path):
    x, s, _ = data()
    trainer = nf.Trainer(fresh_model(), progress=False, log_dir=tmp_path / "tb")
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.warns(UserWarning, match="tensorboard package is not installed"):
            trainer.train(loader(x, s), n_epochs=1)
    else:
        trainer.train(loader(x, s), n_epochs=1)
        assert any((tmp_path / "tb").iterdir())


def test_bad_arguments(tmp_path):
    model = fresh_model()
    with pytest.raises(ValueError, match="'lr' must be > 0"):
        nf.Trainer(model, lr=0)
    with pytest.raises(ValueError, match="'grad_clip' must be > 0"):
        nf.Trainer(model, grad_clip=-1)
    trainer = nf.Trainer(model, progress=False)
    x, s, _ = data()
    with pytest.raises(ValueError, match="'n_epochs' must be an int >= 1"):
        trainer.train(loader(x, s), n_epochs=0)
    with pytest.raises(FileNotFoundError, match="'resume_from': no checkpoint"):
        trainer.train(loader(x, s), n_epochs=1, resume_from="/nonexistent/last.pt")
    trainer.save_checkpoint(tmp_path / "not_miwae.pt")
    other = nf.Trainer(nf.MIWAE(D, hidden_dim=16), progress=False)
    with pytest.raises(ValueError, match="holds a NotMIWAE, not a MIWAE"):
        other.load_checkpoint(tmp_path / "not_miwae.pt")
    for patience in (0, -1, 1.5):
        with pytest.raises(ValueError, match="'early_stopping_patience' must be an int >= 1"):
            trainer.train(loader(x, s), n_epochs=2, early_stopping_patience=patience)
    with pytest.raises(ValueError, match="'rmse_n_samples' must be an int >= 1"):
        nf.Trainer(model, rmse_n_samples=0)
    checking = nf.Trainer(model, progress=False, original_data_available=True)
    with pytest.raises(ValueError, match="'val_loader' must yield batches \\(x, s, x_true\\)"):
        checking.validate(loader(x, s))


def test_epochs_already_done_warn():
    x, s, _ = data(32)
    trainer = nf.Trainer(fresh_model(), progress=False)
    trainer.train(loader(x, s), n_epochs=2)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    with pytest.warns(UserWarning, match="2 epochs done already and n_epochs=2"):
        trainer.train(loader(x, s), n_epochs=2)
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


def test_metrics_are_averaged_over_rows():
    """A short last batch weighs by its rows: 32 + 1 rows give the mean over 33 rows."""
    model = fresh_model()
    model.forward = lambda x, s: {"loss": x.sum(1).mean(), "elbo": -x.sum(1).mean()}
    x = torch.arange(33 * D, dtype=torch.float32).reshape(33, D)
    s = torch.ones_like(x)
    batches = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, s), batch_size=32)
    metrics = nf.Trainer(model, progress=False).validate(batches)
    assert metrics["loss"] == pytest.approx(x.sum(1).mean().item())
    assert metrics["elbo"] == pytest.approx(-x.sum(1).mean().item())


def _train_steps(model, steps, fast, monkeypatch, calls):
    """``steps`` Trainer steps on fixed batches, with or without the one-operator
    forward+backward (gauss_bound_grads); returns the parameters and the outputs."""
    from notmiwae_fast import ops
    from notmiwae_fast.train import trainer as trainer_module

    with monkeypatch.context() as m:
        original = ops.gauss_bound_grads
        m.setattr(ops, "gauss_bound_grads", lambda *a: calls.append(1) or original(*a))
        if not fast:
            m.setattr(
                trainer_module.Trainer,
                "_outputs_and_grads",
                lambda self, batch: (self._outputs(batch), None),
            )
        tr = nf.Trainer(model, lr=1e-2, progress=False)
        x, s, _ = data(32)
        torch.manual_seed(5)
        outs = [
            tr.train_step((x[i * 16 : (i + 1) * 16], s[i * 16 : (i + 1) * 16]))
            for i in range(steps)
        ]
    return [p.detach().clone() for p in model.parameters()], outs


@pytest.mark.parametrize(
    "model_cls,kwargs",
    [
        (nf.NotMIWAE, dict(missing_process="selfmasking")),
        (nf.NotMIWAE, dict(missing_process="selfmasking_known_signs", signs=[1.0, -1.0, 1.0, 1.0])),
        (nf.MIWAE, {}),
    ],
    ids=["selfmasking", "known_signs", "miwae"],
)
def test_one_operator_training_step_equals_backward(model_cls, kwargs, monkeypatch):
    """Where forward is one operator the Trainer takes the loss's gradients from
    gauss_bound_grads instead of loss.backward(): after two steps the parameters (the
    known-signs slope's parameter, reached through the chain rule, included), the Adam
    state and the outputs are those of the backward path."""
    results = {}
    for fast in (True, False):
        calls = []
        utils.set_seed(0)
        model = model_cls(D, hidden_dim=16, n_samples=5, **kwargs)
        results[fast] = _train_steps(model, 2, fast, monkeypatch, calls)
        assert bool(calls) == fast
    for a, b in zip(results[True][0], results[False][0]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert not torch.equal(results[True][0][0], fresh_model().encoder.net[0].weight.detach())
    for out_fast, out_graph in zip(results[True][1], results[False][1]):
        assert out_fast.keys() == out_graph.keys()
        for key in out_fast:
            torch.testing.assert_close(out_fast[key], out_graph[key], rtol=1e-6, atol=1e-6)


def test_one_operator_step_respects_frozen_parameters_and_bad_losses(monkeypatch):
    """A parameter that does not require grad gets no gradient and is not moved; a
    non-finite loss raises before any gradient is handed out."""
    model = fresh_model()
    frozen = model.decoder.net[0].weight
    frozen.requires_grad_(False)
    before = frozen.detach().clone()
    calls = []
    _train_steps(model, 2, True, monkeypatch, calls)
    assert calls and frozen.grad is None and torch.equal(frozen, before)
    assert model.encoder.net[0].weight.grad is not None
    tr = nf.Trainer(model, progress=False)
    with torch.no_grad():
        model.decoder.net[-1].bias.fill_(float("nan"))
    x, s, _ = data(16)
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        tr.train_step((x, s))
    assert all(p.grad is None for p in model.parameters())


def test_fused_adam_step_equals_torch_adam():
    """The Trainer's Adam (torch's fused kernel called directly) moves parameters and
    state exactly as torch.optim.Adam(fused=True): over steps with a parameter left
    without gradient, a changed learning rate and weight decay, and after
    load_state_dict; a closure or a second parameter group goes through Adam.step."""
    from notmiwae_fast.train.optim import _FusedAdam

    g = torch.Generator().manual_seed(0)
    start = [
        torch.randn(5, 3, generator=g),
        torch.randn(3, generator=g),
        torch.randn(2, generator=g),
    ]
    runs = []
    for cls in (_FusedAdam, torch.optim.Adam):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        opt = cls(params, lr=1e-2, fused=True, weight_decay=0.01)
        g = torch.Generator().manual_seed(1)
        for step in range(6):
            for i, p in enumerate(params):
                p.grad = None if (i == 2 and step in (1, 2)) else torch.randn(p.shape, generator=g)
            if step == 3:
                opt.param_groups[0]["lr"] = 3e-3
            if step == 4:
                opt.load_state_dict(opt.state_dict())
            opt.step()
        runs.append((params, opt.state_dict()))
    for a, b in zip(runs[0][0], runs[1][0]):
        assert torch.equal(a, b)
    for key, state in runs[1][1]["state"].items():
        for name, value in state.items():
            assert torch.equal(runs[0][1]["state"][key][name], value), name
    opt = _FusedAdam([torch.nn.Parameter(torch.ones(2))], lr=0.1, fused=True)
    opt.param_groups[0]["params"][0].grad = torch.ones(2)
    assert opt._kernel_arguments() is None  # no state yet: the first step is Adam.step's
    opt.step()
    assert opt._kernel_arguments() is not None
    assert opt.step(closure=lambda: torch.tensor(1.0)) == torch.tensor(1.0)
    opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(1))]})
    assert opt._kernel_arguments() is None


@pytest.fixture
def two_threads():
    """torch set to two threads for the test, the count before put back after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("numel", [100, 40000])
def test_fused_adam_runs_small_parameters_on_one_thread(numel, monkeypatch, two_threads):
    """On the CPU with two threads, the fused kernel runs on this thread alone when every
    parameter is smaller than ATen's grain (a parallel region per small tensor costs
    more than it saves) and with both threads otherwise; the same numbers as
    torch.optim.Adam(fused=True) either way, and the thread count is put back, also
    when the kernel raises."""
    from notmiwae_fast.train.optim import _FusedAdam
    from notmiwae_fast.train.threads import GRAIN_SIZE

    kernel = torch._fused_adam_
    seen = []

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return kernel(*args, **kwargs)

    start = [torch.randn(numel), torch.randn(7)]
    runs = []
    for cls in (_FusedAdam, torch.optim.Adam):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        opt = cls(params, lr=1e-2, fused=True)
        g = torch.Generator().manual_seed(1)
        for _ in range(3):
            for p in params:
                p.grad = torch.randn(p.shape, generator=g)
            with monkeypatch.context() as m:
                m.setattr(torch, "_fused_adam_", spy)
                opt.step()
            assert torch.get_num_threads() == 2
        runs.append((params, opt))
    (ours, ours_opt), (torchs, _) = runs
    for a, b in zip(ours, torchs):
        assert torch.equal(a, b)
    # _FusedAdam's first step is Adam.step's (both threads); then its own kernel call
    expected = 1 if numel < GRAIN_SIZE else 2
    assert seen[1:3] == [expected, expected]

    def broken(*args, **kwargs):
        raise RuntimeError("kernel failed")

    monkeypatch.setattr(torch, "_fused_adam_", broken)
    with pytest.raises(RuntimeError, match="kernel failed"):
        ours_opt.step()
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("batch, expected", [(16, 1), (64, 2)])
def test_small_cpu_steps_run_on_one_thread(batch, expected, monkeypatch, two_threads):
    """With two threads, a step whose largest product (rows × K × the widest linear
    layer, here 128 × 128 with K = 20) is under the operators' serial limit runs on the
    calling thread alone, a larger one on both; the count is put back after each step,
    also when the step raises."""
    utils.set_seed(0)
    model = nf.NotMIWAE(D, hidden_dim=128, n_samples=20)
    trainer = nf.Trainer(model, lr=1e-3, device="cpu", progress=False)
    seen = []
    inner = model._loss_and_grads

    def spy(x, s):
        seen.append(torch.get_num_threads())
        return inner(x, s)

    monkeypatch.setattr(model, "_loss_and_grads", spy)
    x, s, _ = data(n=batch)
    trainer.train_step((x, s))
    assert seen == [expected]
    assert torch.get_num_threads() == 2

    def broken(x, s):
        raise RuntimeError("step failed")

    monkeypatch.setattr(model, "_loss_and_grads", broken)
    with pytest.raises(RuntimeError, match="step failed"):
        trainer.train_step((x, s))
    assert torch.get_num_threads() == 2


def test_widest_linear_layer_and_models_it_cannot_see():
    """The largest in·out of the linear layers; parameters of one dimension (a missing
    process's W and b) do not count; any other module with a matrix parameter (a
    convolution) makes it 0: such a model is never run serially."""
    from notmiwae_fast.train.threads import widest_linear

    assert widest_linear(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 5))) == 20
    assert widest_linear(nf.NotMIWAE(D, hidden_dim=32)) == 32 * 32
    conv = torch.nn.Sequential(torch.nn.Conv1d(2, 3, 3), torch.nn.Linear(3, 4))
    assert widest_linear(conv) == 0
