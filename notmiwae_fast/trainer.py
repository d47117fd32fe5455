"""Training loop for the models: Adam, gradient clipping, validation, early stopping,
atomic best / last checkpoints, resuming, a progress bar and TensorBoard (when
installed)."""

from __future__ import annotations

import math
import os
import random
import tempfile
import time
import warnings
from pathlib import Path
from typing import Iterable, Optional, Union

import numpy as np
import torch
from torch import nn

from .utils import missing_rmse

__all__ = ["Trainer", "save_atomic"]


def save_atomic(obj, path: Union[str, Path]) -> None:
    """torch.save to a temporary file in the same folder, then rename: a crash never
    leaves a half-written file at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _adam(params, lr: float) -> torch.optim.Optimizer:
    """Adam, in its fused single-kernel form where this torch and device have it."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


def _progress(iterable, enabled: bool, **kwargs):
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, **kwargs)


class Trainer:
    """Trains a MIWAE, NotMIWAE, SupMIWAE or SupNotMIWAE model.

    Args:
        model: the model.
        lr: Adam learning rate.
        device: where to train (default: the model's device).
        grad_clip: maximum gradient norm (None: no clipping).
        checkpoint_dir: where ``last.pt`` (every epoch) and the best checkpoint go
            (None: no checkpoints).
        log_dir: TensorBoard folder (needs the ``tensorboard`` package; None: off).
        progress: show a progress bar (needs ``tqdm``).
        original_data_available: unsupervised batches are (x, s, x_true) and the
            imputation RMSE on the missing entries is tracked.
        rmse_n_samples: importance samples for that RMSE.

    Batches are (x, s) for unsupervised models (or (x, s, x_true), see above) and
    (x, s, y) for supervised ones.
    """

    def __init__(self, model: nn.Module, lr: float = 1e-3, device=None,
                 grad_clip: Optional[float] = None,
                 checkpoint_dir: Optional[Union[str, Path]] = None,
                 log_dir: Optional[Union[str, Path]] = None, progress: bool = True,
                 original_data_available: bool = False, rmse_n_samples: int = 50):
        if not lr > 0:
            raise ValueError(f"argument 'lr' must be > 0; got {lr!r}")
        if grad_clip is not None and not grad_clip > 0:
            raise ValueError(f"argument 'grad_clip' must be > 0 or None; got {grad_clip!r}")
        self.device = torch.device(device) if device is not None else next(
            model.parameters()).device
        self.model = model.to(self.device)
        self.lr, self.grad_clip = lr, grad_clip
        self.optimizer = _adam(self.model.parameters(), lr)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.log_dir = log_dir
        self.progress = progress
        self.original_data_available = original_data_available
        self.rmse_n_samples = rmse_n_samples
        self.supervised = bool(getattr(model, "supervised", False))
        self.epoch = 0
        self.global_step = 0
        self.best_loss = math.inf
        self.epochs_without_improvement = 0
        self.history: dict[str, list] = {}

    # -- one batch / one pass ---------------------------------------------------------------
    def _move(self, batch) -> list:
        return [b.to(self.device) if torch.is_tensor(b) else b for b in batch]

    def _outputs(self, batch) -> dict:
        if self.supervised:
            x, s, y = batch[:3]
            return self.model(x, s, y)
        return self.model(batch[0], batch[1])

    def train_step(self, batch) -> dict:
        """One optimizer step on one batch; returns the model's outputs (detached)."""
        batch = self._move(batch)
        self.optimizer.zero_grad(set_to_none=True)
        out = self._outputs(batch)
        loss = out["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at step "
                                     f"{self.global_step}; lower the learning rate or set "
                                     "grad_clip")
        loss.backward()
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.global_step += 1
        if isinstance(getattr(self.model, "n_train_steps", None), torch.Tensor):
            self.model.n_train_steps += 1
        return {k: v.detach() for k, v in out.items() if torch.is_tensor(v)}

    def train_epoch(self, loader: Iterable) -> dict:
        """One pass over ``loader`` with optimizer steps; returns the mean metrics."""
        self.model.train()
        sums: dict[str, float] = {}
        n = 0
        for batch in loader:
            out = self.train_step(batch)
            n += 1
            for key, value in out.items():
                if value.dim() == 0:
                    sums[key] = sums.get(key, 0.0) + value.item()
        if n == 0:
            raise ValueError("argument 'train_loader' yielded no batch")
        return {k: v / n for k, v in sums.items()}

    @torch.no_grad()
    def validate(self, loader: Iterable) -> dict:
        """Mean metrics over ``loader`` in eval mode (and the imputation RMSE when
        ``original_data_available``)."""
        was_training = self.model.training
        self.model.eval()
        try:
            sums: dict[str, float] = {}
            n = 0
            truth, imputed, masks = [], [], []
            for batch in loader:
                batch = self._move(batch)
                out = self._outputs(batch)
                n += 1
                for key, value in out.items():
                    if torch.is_tensor(value) and value.dim() == 0:
                        sums[key] = sums.get(key, 0.0) + value.item()
                if self.original_data_available and not self.supervised:
                    truth.append(batch[2].cpu())
                    imputed.append(self.model.impute(batch[0], batch[1],
                                                     n_samples=self.rmse_n_samples).cpu())
                    masks.append(batch[1].cpu())
            if n == 0:
                raise ValueError("argument 'val_loader' yielded no batch")
            metrics = {k: v / n for k, v in sums.items()}
            if truth:
                metrics["rmse"] = missing_rmse(torch.cat(truth), torch.cat(imputed),
                                               torch.cat(masks))
            return metrics
        finally:
            self.model.train(was_training)

    # -- the loop ---------------------------------------------------------------------------
    def train(self, train_loader: Iterable, val_loader: Optional[Iterable] = None,
              n_epochs: int = 100, early_stopping_patience: Optional[int] = None,
              save_best: bool = True, checkpoint_name: str = "best.pt",
              resume_from: Optional[Union[str, Path]] = None,
              log_interval: int = 0) -> dict:
        """Trains for ``n_epochs`` epochs (counting those of a resumed checkpoint).

        Early stopping and the best checkpoint follow the validation loss when
        ``val_loader`` is given, else the training loss. ``resume_from`` continues from a
        checkpoint written by this class (same epoch, step, optimizer state and RNG
        state). Returns the history: lists of per-epoch metrics (``train_loss``,
        ``val_loss``, ...). The model is left in the mode (train / eval) it was in.
        """
        if isinstance(n_epochs, bool) or not isinstance(n_epochs, int) or n_epochs < 1:
            raise ValueError(f"argument 'n_epochs' must be an int >= 1; got {n_epochs!r}")
        if resume_from is not None:
            self.load_checkpoint(resume_from)
        writer = self._tensorboard()
        was_training = self.model.training
        start = time.time()
        try:
            epochs = _progress(range(self.epoch, n_epochs), self.progress, desc="training",
                               initial=self.epoch, total=n_epochs)
            for epoch in epochs:
                metrics = {f"train_{k}": v for k, v in self.train_epoch(train_loader).items()}
                if val_loader is not None:
                    metrics.update({f"val_{k}": v for k, v in self.validate(val_loader).items()})
                for key, value in metrics.items():
                    self.history.setdefault(key, []).append(value)
                    if writer is not None:
                        writer.add_scalar(key.replace("_", "/", 1), value, epoch)
                self.epoch = epoch + 1
                monitored = metrics["val_loss" if val_loader is not None else "train_loss"]
                improved = monitored < self.best_loss
                if improved:
                    self.best_loss = monitored
                    self.epochs_without_improvement = 0
                else:
                    self.epochs_without_improvement += 1
                if self.checkpoint_dir is not None:
                    if improved and save_best:
                        self.save_checkpoint(self.checkpoint_dir / checkpoint_name)
                    self.save_checkpoint(self.checkpoint_dir / "last.pt")
                if hasattr(epochs, "set_postfix"):
                    epochs.set_postfix(loss=f"{metrics['train_loss']:.4f}")
                if log_interval and self.epoch % log_interval == 0:
                    print(f"epoch {self.epoch}/{n_epochs} " + " ".join(
                        f"{k} {v:.4f}" for k, v in metrics.items()))
                if (early_stopping_patience is not None
                        and self.epochs_without_improvement >= early_stopping_patience):
                    break
        finally:
            self.model.train(was_training)
            if writer is not None:
                writer.close()
        self.history["seconds"] = [time.time() - start]
        return self.history

    def _tensorboard(self):
        if self.log_dir is None:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            warnings.warn("Trainer: 'log_dir' was given but the tensorboard package is not "
                          "installed; TensorBoard logging is off (pip install tensorboard)",
                          stacklevel=3)
            return None
        return SummaryWriter(log_dir=str(self.log_dir))

    # -- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "epoch": self.epoch, "global_step": self.global_step,
                "best_loss": self.best_loss,
                "epochs_without_improvement": self.epochs_without_improvement,
                "history": self.history, "model_class": type(self.model).__name__,
                "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                        "python": random.getstate(),
                        "cuda": (torch.cuda.get_rng_state_all()
                                 if torch.cuda.is_available() else None)}}

    def save_checkpoint(self, path: Union[str, Path]) -> None:
        """Writes the training state to ``path`` atomically (temp file + rename)."""
        save_atomic(self.state_dict(), path)

    def load_checkpoint(self, path: Union[str, Path]) -> "Trainer":
        """Restores model, optimizer, counters, history and RNG state from ``path``."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"argument 'resume_from': no checkpoint at {path}")
        state = torch.load(path, map_location=self.device, weights_only=False)
        if state.get("model_class") != type(self.model).__name__:
            raise ValueError(f"checkpoint {path} holds a {state.get('model_class')}, not a "
                             f"{type(self.model).__name__}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.global_step = state["epoch"], state["global_step"]
        self.best_loss = state["best_loss"]
        self.epochs_without_improvement = state["epochs_without_improvement"]
        self.history = state["history"]
        rng = state["rng"]
        torch.set_rng_state(rng["torch"].cpu())
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        return self
