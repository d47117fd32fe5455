"""The Trainer: resuming, checkpoints, early stopping, validation, mode, logging."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

import notmiwae_fast as nf
from notmiwae_fast import utils
from notmiwae_fast._io import save_atomic

D = 4


def data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=g)
    s = (torch.rand(n, D, generator=g) > 0.25).float()
    return torch.where(s.bool(), x, torch.zeros_like(x)), s, x


def loader(*tensors, shuffle=True):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*tensors),
                                       batch_size=16, shuffle=shuffle)


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
    utils.set_seed(999)      # whatever the RNG state, the checkpoint restores it
    t3 = nf.Trainer(resumed, progress=False, checkpoint_dir=tmp_path)
    history = t3.train(loader(x, s), n_epochs=4, resume_from=tmp_path / "last.pt")

    assert t3.global_step == t1.global_step == 4 * 6 and t3.epoch == 4
    assert len(history["train_loss"]) == 4
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    opt1, opt3 = t1.optimizer.state_dict()["state"], t3.optimizer.state_dict()["state"]
    for key in opt1:
        torch.testing.assert_close(opt1[key]["exp_avg"], opt3[key]["exp_avg"], rtol=0, atol=0)


def test_best_and_last_checkpoints_and_early_stopping(tmp_path):
    x, s, x_true = data()
    model = fresh_model()
    trainer = nf.Trainer(model, lr=1e-2, progress=False, checkpoint_dir=tmp_path,
                         original_data_available=True, rmse_n_samples=10)
    val = loader(x, s, x_true, shuffle=False)
    history = trainer.train(loader(x, s), val_loader=val, n_epochs=200,
                            early_stopping_patience=2)
    epochs = len(history["train_loss"])
    assert epochs < 200                                  # stopped early
    assert len(history["val_loss"]) == epochs and len(history["val_rmse"]) == epochs
    assert all(math.isfinite(v) for v in history["val_rmse"])
    best_epoch = int(np.argmin(history["val_loss"]))
    assert epochs - 1 - best_epoch == 2                  # patience counted from the best
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


@pytest.mark.parametrize("mode", [True, False])
def test_model_left_in_the_mode_it_was_found(mode):
    x, s, _ = data()
    model = fresh_model().train(mode)
    trainer = nf.Trainer(model, progress=False)
    trainer.train(loader(x, s), val_loader=loader(x, s), n_epochs=1)
    assert model.training is mode
    trainer.validate(loader(x, s))
    assert model.training is mode


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
