"""Training loop for the models: Adam, gradient clipping, validation, early stopping,
atomic best / last checkpoints, resuming, a progress bar and TensorBoard (when
installed)."""

from __future__ import annotations

import contextlib
import math
import random
import time
import warnings
from pathlib import Path
from typing import Iterable, Optional, Union

import numpy as np
import torch
from torch import nn

from .._common import validate as _validate
from .. import distributed
from ..nn.models import ImportanceWeightedModel, kept_modes
from .._common.io import load_plain, remove_stale_temporaries, save_atomic
from .._common.progress import progress
from ..utils import missing_rmse

__all__ = ["Trainer", "TrainingWarning", "loss_diverged"]


class TrainingWarning(UserWarning):
    """Training ended in a state whose results should not be trusted (the loss diverged
    or ended far above its best, Bernoulli data outside [0, 1], a column with too few
    observed values). :meth:`Trainer.train` and the imputers' ``fit`` issue it and
    record it in their history (``"health"``: short flags, ``"warnings"``: the
    messages)."""


def loss_diverged(losses, window: Optional[int] = None,
                  min_length: int = 2) -> Optional[str]:
    """Why the loss curve ``losses`` (per step or per epoch) looks diverged, or None.

    The curve is smoothed by a running mean over ``window`` values (default: a tenth of
    the curve, 1 to 100 values: mini-batch losses are noisy); it is diverged when a value
    is not finite or when its last smoothed value lies above its best (lowest) by more
    than max(|best|, 1): the loss at least doubled from its best, or rose by a whole
    nat per row from a best near 0. A curve shorter than ``min_length`` is only checked
    for non-finite values (a few mini-batch losses are too noisy to judge)."""
    values = np.asarray(losses, dtype=np.float64).ravel()
    if not np.isfinite(values).all():
        return "the training loss became NaN or infinite"
    if values.size < max(2, min_length):
        return None
    w = window if window is not None else max(1, min(100, values.size // 10))
    smooth = np.convolve(values, np.ones(w) / w, mode="valid")
    best, final = float(smooth.min()), float(smooth[-1])
    if final > best + max(abs(best), 1.0):
        return (f"the training loss ended at {final:.4g}, far above its best {best:.4g}: "
                "training diverged (lower the learning rate, standardise the data or set "
                "grad_clip)")
    return None


def _record(history: dict, flag: str, message: str, stacklevel: int = 3) -> None:
    """Adds ``flag`` to history["health"] and ``message`` to history["warnings"] (each
    once) and issues ``message`` as a TrainingWarning."""
    health = history.setdefault("health", [])
    if flag not in health:
        health.append(flag)
    messages = history.setdefault("warnings", [])
    if message not in messages:
        messages.append(message)
    warnings.warn(message, TrainingWarning, stacklevel=stacklevel + 1)


class _FusedAdam(torch.optim.Adam):
    """torch.optim.Adam(fused=True) whose step() calls the fused kernel
    (``torch._fused_adam_``, what ``Adam.step`` ends in) directly with the state's
    tensors when nothing else is asked of it: one parameter group without amsgrad,
    maximize, capturable, differentiable or a tensor lr, every state already made by a
    first step, and no closure; otherwise (and on a torch without ``_fused_adam_``) it is
    Adam.step. Same kernel, same state, same numbers: tests/test_trainer.py compares the
    two step by step, so a torch whose kernel takes other arguments fails there first. It
    saves ~45 µs of Python per step over 14 tensors, 4 % of a batch-16 training step of
    the paper's model. zero_grad(set_to_none=True) likewise
    sets the gradients to None without torch.optim's profiling wrapper."""

    def zero_grad(self, set_to_none: bool = True) -> None:
        if not set_to_none:
            return super().zero_grad(set_to_none)
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    @torch.no_grad()
    def step(self, closure=None):
        lists = self._kernel_arguments() if closure is None else None
        if lists is None:
            return super().step(closure)
        params, grads, exp_avgs, exp_avg_sqs, steps = lists
        group = self.param_groups[0]
        beta1, beta2 = group["betas"]
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False,
                           lr=group["lr"], beta1=beta1, beta2=beta2,
                           weight_decay=group["weight_decay"], eps=group["eps"],
                           maximize=False, grad_scale=None, found_inf=None)
        return None

    def _kernel_arguments(self) -> Optional[tuple]:
        if len(self.param_groups) != 1 or not hasattr(torch, "_fused_adam_"):
            return None
        group = self.param_groups[0]
        if (not group.get("fused") or group["amsgrad"] or group["maximize"]
                or group.get("capturable") or group.get("differentiable")
                or group.get("decoupled_weight_decay") or torch.is_tensor(group["lr"])):
            return None
        params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
        device = dtype = None
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue  # as Adam.step: no gradient, no update
            state = self.state.get(p)
            if not state or grad.is_sparse or (device is not None and (
                    p.device != device or p.dtype != dtype)):
                return None
            device, dtype = p.device, p.dtype
            params.append(p)
            grads.append(grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        return (params, grads, exp_avgs, exp_avg_sqs, steps) if params else None


def _adam(params, lr: float) -> torch.optim.Optimizer:
    """Adam, in its fused single-kernel form where this torch and device have it."""
    params = list(params)
    try:
        return _FusedAdam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


def _accumulate_grads(pairs) -> None:
    """What ``backward`` does with gradients computed elsewhere: added to each leaf's
    ``.grad`` (set where it is None), and propagated through tensors computed from
    parameters (e.g. the known-signs slope); tensors that do not require grad get none."""
    through, their_grads = [], []
    for tensor, grad in pairs:
        if not tensor.requires_grad:
            continue
        if tensor.is_leaf:
            if tensor.grad is None:
                tensor.grad = grad
            else:
                tensor.grad += grad
        else:
            through.append(tensor)
            their_grads.append(grad)
    if through:
        torch.autograd.backward(through, their_grads)


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

    Under ``torchrun`` (or in a process group you started) the Trainer runs data-parallel:
    the model is wrapped in DistributedDataParallel, each epoch's data are sharded with a
    DistributedSampler (from the DataLoader's dataset, batch size and shuffle setting),
    metrics are averaged over ranks, rank 0 alone writes checkpoints, shows progress and
    logs to TensorBoard, every rank loads a checkpoint on resume, and the torch seed is
    offset by the rank so the importance samples differ across ranks.

    A training step of MIWAE or NotMIWAE whose forward computes the bound in one operator
    (the fused backend with the standard networks and a self-masking process or none:
    ``ops.gauss_bound``) takes its forward and backward from one call of
    ``ops.gauss_bound_grads``, with no autograd graph (the same numbers; a batch-16 step of
    the paper's model went from 1.39 to 1.16 ms with it), and hands the gradients to the
    parameters' ``.grad`` as ``backward`` would;
    other models, subclasses that override ``forward``, and data-parallel runs (which need
    DDP's gradient hooks) run forward and ``loss.backward()``. Gradient hooks registered
    on the parameters themselves (``Tensor.register_hook``) do not run on the one-operator
    path; clip with ``grad_clip``, which applies to both.
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
        self.ctx = distributed.init_from_env(self.device)
        if self.ctx.distributed and self.device.type == "cuda":
            self.device = torch.device("cuda", self.ctx.local_rank)
            torch.cuda.set_device(self.device)
        self.model = model.to(self.device)
        self.lr, self.grad_clip = lr, grad_clip
        self.optimizer = _adam(self.model.parameters(), lr)
        self._forward_module: nn.Module = self.model
        if self.ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self._forward_module = DistributedDataParallel(self.model, device_ids=ids)
            torch.manual_seed(torch.initial_seed() + self.ctx.rank)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.log_dir = log_dir
        self.progress = progress and self.ctx.is_main
        self.original_data_available = original_data_available
        self.rmse_n_samples = _validate.positive_int(rmse_n_samples, "rmse_n_samples")
        self.supervised = bool(getattr(model, "supervised", False))
        self.epoch = 0
        self.global_step = 0
        self.best_loss = math.inf
        self.epochs_without_improvement = 0
        self.history: dict[str, list] = {}
        # Observed entries outside [0, 1] seen by train_epoch for a Bernoulli model (a
        # device tensor, read once per epoch: no host sync per batch).
        self._outside_01: Optional[torch.Tensor] = None

    # -- one batch / one pass ---------------------------------------------------------------
    def _move(self, batch) -> list:
        return [b.to(self.device) if torch.is_tensor(b) else b for b in batch]

    def _outputs(self, batch, module: Optional[nn.Module] = None) -> dict:
        module = self._forward_module if module is None else module
        if self.supervised:
            x, s, y = batch[:3]
            return module(x, s, y)
        return module(batch[0], batch[1])

    def _outputs_and_grads(self, batch) -> tuple[dict, Optional[list]]:
        """The model's outputs and, where one operator gives them (see the class
        docstring), the gradients of the loss; None for those: call backward."""
        model = self.model
        if (self.supervised or self._forward_module is not model
                or not torch.is_grad_enabled()
                or type(model).forward is not ImportanceWeightedModel.forward):
            return self._outputs(batch), None
        return model._loss_and_grads(batch[0], batch[1])

    def _shard(self, loader: Iterable) -> Iterable:
        """In a distributed run, the DataLoader rebuilt with a DistributedSampler."""
        if not self.ctx.distributed or not isinstance(loader, torch.utils.data.DataLoader):
            return loader
        if isinstance(loader.sampler, torch.utils.data.distributed.DistributedSampler):
            return loader
        shuffle = isinstance(loader.sampler, torch.utils.data.RandomSampler)
        sampler = torch.utils.data.distributed.DistributedSampler(
            loader.dataset, num_replicas=self.ctx.world_size, rank=self.ctx.rank,
            shuffle=shuffle, seed=torch.initial_seed() - self.ctx.rank)
        return torch.utils.data.DataLoader(loader.dataset, batch_size=loader.batch_size,
                                           sampler=sampler, drop_last=loader.drop_last,
                                           num_workers=loader.num_workers,
                                           collate_fn=loader.collate_fn)

    def _mean_over_ranks(self, sums: dict, n: int) -> dict:
        keys = sorted(sums)
        totals = distributed.all_reduce_sum([sums[k] for k in keys] + [float(n)], self.device)
        return {k: v / totals[-1] for k, v in zip(keys, totals[:-1])}

    def train_step(self, batch) -> dict:
        """One optimizer step on one batch (x [B, D], s [B, D], plus y for supervised
        models); returns the model's outputs (detached)."""
        batch = self._move(batch)
        self.optimizer.zero_grad(set_to_none=True)
        out, grads = self._outputs_and_grads(batch)
        loss = out["loss"]
        value = loss.item()  # one host sync, as the check itself needs
        if not math.isfinite(value):
            raise FloatingPointError(f"non-finite loss {value} at step "
                                     f"{self.global_step}; lower the learning rate or set "
                                     "grad_clip")
        if grads is None:
            loss.backward()
        else:
            _accumulate_grads(grads)
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.global_step += 1
        steps = getattr(self.model, "n_train_steps", None)
        if isinstance(steps, torch.Tensor):
            steps.add_(1)
        return {k: v.detach() if v.requires_grad else v for k, v in out.items()
                if torch.is_tensor(v)}

    def train_epoch(self, loader: Iterable) -> dict:
        """One pass over ``loader`` (batches (x [B, D], s [B, D]), plus y [B, ...] for
        supervised models) with optimizer steps; returns the metrics averaged over rows
        (a short last batch weighs by its rows)."""
        self.model.train()
        sums: dict[str, float] = {}
        n = 0
        bernoulli = getattr(self.model, "out_dist", None) == "bern"
        for batch in loader:
            if bernoulli and torch.is_tensor(batch[0]) and torch.is_tensor(batch[1]):
                outside = (((batch[0] < 0) | (batch[0] > 1)) & (batch[1] != 0)).sum()
                self._outside_01 = outside if self._outside_01 is None else \
                    self._outside_01 + outside
            out = self.train_step(batch)
            rows = len(batch[0])
            n += rows
            for key, value in out.items():
                if value.dim() == 0:
                    sums[key] = sums.get(key, 0.0) + value.item() * rows
        if n == 0:
            raise ValueError("argument 'train_loader' yielded no batch")
        return self._mean_over_ranks(sums, n)

    @torch.no_grad()
    def validate(self, loader: Iterable) -> dict:
        """Metrics averaged over the rows of ``loader`` in eval mode (and the imputation
        RMSE when ``original_data_available``: batches (x, s, x_true), each [B, D])."""
        with kept_modes(self.model):
            self.model.eval()
            sums: dict[str, float] = {}
            n = 0
            truth, imputed, masks = [], [], []
            for batch in loader:
                batch = self._move(batch)
                out = self._outputs(batch, self.model)
                rows = len(batch[0])
                n += rows
                for key, value in out.items():
                    if torch.is_tensor(value) and value.dim() == 0:
                        sums[key] = sums.get(key, 0.0) + value.item() * rows
                if self.original_data_available and not self.supervised:
                    if len(batch) < 3:
                        raise ValueError("argument 'val_loader' must yield batches (x, s, "
                                         "x_true) when original_data_available=True; got "
                                         f"{len(batch)} tensors per batch")
                    truth.append(batch[2].cpu())
                    imputed.append(self.model.impute(batch[0], batch[1],
                                                     n_samples=self.rmse_n_samples).cpu())
                    masks.append(batch[1].cpu())
            if n == 0:
                raise ValueError("argument 'val_loader' yielded no batch")
            metrics = self._mean_over_ranks(sums, n)
            if truth:
                metrics["rmse"] = missing_rmse(torch.cat(truth), torch.cat(imputed),
                                               torch.cat(masks))
            return metrics

    # -- the loop ---------------------------------------------------------------------------
    def train(self, train_loader: Iterable, val_loader: Optional[Iterable] = None,
              n_epochs: int = 100, early_stopping_patience: Optional[int] = None,
              save_best: bool = True, checkpoint_name: str = "best.pt",
              resume_from: Optional[Union[str, Path]] = None,
              log_interval: int = 0) -> dict:
        """Trains until ``n_epochs`` epochs in all (counting those this Trainer already ran
        and those of a resumed checkpoint: a second ``train(n_epochs=2)`` after two
        epochs has nothing to do, and says so with a warning).

        Early stopping and the best checkpoint follow the validation loss when
        ``val_loader`` is given, else the training loss. ``resume_from`` continues from a
        checkpoint written by this class (same epoch, step, optimizer state and RNG
        state). Returns the history: lists of per-epoch metrics (``train_loss``,
        ``val_loss``, ...). The model is left in the mode (train / eval) it was in.

        At the end a :class:`TrainingWarning` is issued, and its flag added to
        ``history["health"]`` (its message to ``history["warnings"]``), when the
        per-epoch training loss ended far above its best (:func:`loss_diverged`:
        ``"diverged"``) or a model with ``out_dist="bern"`` was trained on observed
        values outside [0, 1] (``"bern_data_outside_01"``).
        """
        n_epochs = _validate.positive_int(n_epochs, "n_epochs")
        if early_stopping_patience is not None:
            early_stopping_patience = _validate.positive_int(early_stopping_patience,
                                                             "early_stopping_patience")
        if resume_from is not None:
            self.load_checkpoint(resume_from)
        if self.epoch >= n_epochs:
            warnings.warn(f"Trainer.train: {self.epoch} epochs done already and n_epochs="
                          f"{n_epochs} counts them; nothing to train (raise n_epochs)",
                          stacklevel=2)
        train_loader = self._shard(train_loader)
        val_loader = self._shard(val_loader) if val_loader is not None else None
        writer = self._tensorboard()
        self._outside_01 = None
        start = time.time()
        with contextlib.ExitStack() as on_exit:  # whatever happens:
            on_exit.enter_context(kept_modes(self.model))  # every module's mode put back
            if writer is not None:
                on_exit.callback(writer.close)
            epochs = progress(range(self.epoch, n_epochs), self.progress, desc="training",
                               initial=self.epoch, total=n_epochs)
            for epoch in epochs:
                for loader in (train_loader, val_loader):
                    if hasattr(getattr(loader, "sampler", None), "set_epoch"):
                        loader.sampler.set_epoch(epoch)
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
                if log_interval and self.epoch % log_interval == 0 and self.ctx.is_main:
                    print(f"epoch {self.epoch}/{n_epochs} " + " ".join(
                        f"{k} {v:.4f}" for k, v in metrics.items()))
                if (early_stopping_patience is not None
                        and self.epochs_without_improvement >= early_stopping_patience):
                    break
        self.history["seconds"] = [time.time() - start]
        self._check_health()
        return self.history

    def _check_health(self) -> None:
        """Warns (TrainingWarning) and flags history["health"] when the training loss
        ended far above its best (:func:`loss_diverged`, per epoch: "diverged") or a
        Bernoulli model was trained on observed values outside [0, 1]
        ("bern_data_outside_01")."""
        reason = loss_diverged(self.history.get("train_loss", []), window=1)
        if reason is not None:
            _record(self.history, "diverged", f"Trainer.train: {reason}")
        if self._outside_01 is not None:
            count = int(self._outside_01.item())
            if count:
                _record(self.history, "bern_data_outside_01",
                        f"Trainer.train: the model's out_dist is 'bern' (data in [0, 1]) "
                        f"but {count} observed entries lie outside [0, 1]; rescale the data "
                        "to [0, 1] or use out_dist='gauss'")

    def _tensorboard(self):
        if self.log_dir is None or not self.ctx.is_main:
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
        """The training state, as tensors and plain data; ``rng`` holds one random state
        per rank (NumPy's as a tuple with its key array as a tensor)."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "epoch": self.epoch, "global_step": self.global_step,
                "best_loss": self.best_loss,
                "epochs_without_improvement": self.epochs_without_improvement,
                "history": self.history, "model_class": type(self.model).__name__,
                "rng": self._rng_states()}

    def _rng_states(self) -> list:
        mine = {"torch": torch.get_rng_state(), "numpy": _numpy_state_plain(),
                "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
        if not self.ctx.distributed:
            return [mine]
        states: list = [None] * self.ctx.world_size
        torch.distributed.all_gather_object(states, mine)
        return states

    def save_checkpoint(self, path: Union[str, Path]) -> None:
        """Writes the training state to ``path`` atomically (temp file + rename), as
        tensors and plain data only (``torch.load(weights_only=True)`` reads it); removes
        temporary files an earlier, killed write of ``path`` left. In a distributed run
        every rank must call it (the random states are gathered) and rank 0 alone
        writes."""
        state = self.state_dict()
        if self.ctx.is_main:
            remove_stale_temporaries(path)
            save_atomic(state, path)
        if self.ctx.distributed:
            torch.distributed.barrier()

    def load_checkpoint(self, path: Union[str, Path]) -> "Trainer":
        """Restores model, optimizer, counters, history and RNG state from ``path``, a
        checkpoint :meth:`save_checkpoint` wrote.

        The file is read with ``torch.load(weights_only=True)`` (tensors and plain data;
        nothing in it runs as code) and checked whole before anything changes: a file
        that cannot be read, lacks a part, or whose state dicts do not fit this model and
        optimizer raises one ValueError naming the file and what is wrong, and leaves
        the Trainer and its model as they were. Temporary files left by a killed write
        of ``path`` are removed."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"argument 'resume_from': no checkpoint at {path}")
        if self.ctx.is_main:
            remove_stale_temporaries(path)
        state = load_plain(path, "checkpoint", self.device, allowed=_NUMPY_ARRAYS)
        rng = self._checked_state(path, state)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.global_step = state["epoch"], state["global_step"]
        self.best_loss = float(state["best_loss"])
        self.epochs_without_improvement = state["epochs_without_improvement"]
        self.history = state["history"]
        same_world = len(state["rng"]) == self.ctx.world_size
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        if not same_world:  # another number of processes: keep the ranks' streams apart
            torch.manual_seed(torch.initial_seed() + self.ctx.rank)
        return self

    def _checked_state(self, path: Path, state) -> dict:
        """Checks a loaded checkpoint whole against this Trainer (parts, types, the model's
        and optimizer's state-dict keys and shapes, the random states); returns this
        rank's random states ready to set. ValueError naming the file otherwise."""
        def bad(what: str) -> ValueError:
            return ValueError(f"checkpoint {path} {what}")

        if not isinstance(state, dict):
            raise bad(f"is not a Trainer checkpoint (it holds a {type(state).__name__})")
        missing = [key for key in _CHECKPOINT_PARTS if key not in state]
        if missing:
            raise bad(f"is not a complete Trainer checkpoint: no {', '.join(map(repr, missing))}")
        for key, types in _CHECKPOINT_PARTS.items():
            if isinstance(state[key], bool) or not isinstance(state[key], types):
                raise bad(f"is damaged: {key!r} is a {type(state[key]).__name__}")
        if state["model_class"] != type(self.model).__name__:
            raise bad(f"holds a {state['model_class']}, not a {type(self.model).__name__}")
        if not all(isinstance(v, list) for v in state["history"].values()):
            raise bad("is damaged: 'history' is not a dict of lists")
        self._check_model_state(path, state["model"])
        self._check_optimizer_state(path, state["optimizer"])
        states = state["rng"]
        if not states or not all(isinstance(r, dict) for r in states):
            raise bad("is damaged: 'rng' is not a list of random states")
        rng = states[self.ctx.rank] if len(states) == self.ctx.world_size else states[0]
        try:
            return _checked_rng(rng)
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise bad(f"is damaged: its random states cannot be restored "
                      f"({' '.join(str(err).split())[:150]})") from None

    def _check_model_state(self, path: Path, saved: dict) -> None:
        """ValueError naming the file when ``saved`` is not a state dict of this model
        (keys and shapes; the standardisation buffers may be set or not)."""
        expected = self.model.state_dict()
        optional = {f"{prefix}.{name}".lstrip(".") for prefix, module in
                    self.model.named_modules() for name, buffer in module._buffers.items()
                    if buffer is None and name not in module._non_persistent_buffers_set}
        missing = [k for k in expected if k not in saved]
        unexpected = [k for k in saved if k not in expected and k not in optional]
        if missing or unexpected:
            raise ValueError(f"checkpoint {path} does not fit the model: "
                             + "; ".join(f"{what} {keys[:3]}" for what, keys in (
                                 ("missing keys", missing), ("unexpected keys", unexpected))
                                 if keys))
        for key, value in saved.items():
            if not torch.is_tensor(value):
                raise ValueError(f"checkpoint {path} does not fit the model: {key!r} is a "
                                 f"{type(value).__name__}, not a tensor")
            if key in expected and value.shape != expected[key].shape:
                raise ValueError(f"checkpoint {path} does not fit the model: {key!r} has "
                                 f"shape {list(value.shape)}, the model's "
                                 f"{list(expected[key].shape)}")

    def _check_optimizer_state(self, path: Path, saved: dict) -> None:
        """ValueError naming the file when ``saved`` is not an optimizer state dict for
        this model's parameters (groups, parameter counts, the shapes of per-parameter
        state such as Adam's moments)."""
        def bad(what: str) -> ValueError:
            return ValueError(f"checkpoint {path} does not fit the optimizer: {what}")

        groups, state = saved.get("param_groups"), saved.get("state")
        if not isinstance(groups, list) or not isinstance(state, dict) or not all(
                isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups):
            raise bad("it is not an optimizer state dict")
        mine = self.optimizer.param_groups
        if [len(g["params"]) for g in groups] != [len(g["params"]) for g in mine]:
            raise bad(f"parameters per group {[len(g['params']) for g in groups]}, the "
                      f"model's {[len(g['params']) for g in mine]}")
        params = {pid: p for saved_group, group in zip(groups, mine)
                  for pid, p in zip(saved_group["params"], group["params"])}
        for pid, values in state.items():
            if pid not in params or not isinstance(values, dict):
                raise bad(f"state of an unknown parameter {pid!r}")
            for key, value in values.items():
                if torch.is_tensor(value) and value.dim() > 0 and \
                        value.shape != params[pid].shape:
                    raise bad(f"{key!r} of parameter {pid} has shape {list(value.shape)}, "
                              f"the parameter's {list(params[pid].shape)}")


# The parts of a checkpoint and their types.
_CHECKPOINT_PARTS = {"model": dict, "optimizer": dict, "epoch": int, "global_step": int,
                     "best_loss": (int, float), "epochs_without_improvement": int,
                     "history": dict, "model_class": str, "rng": list}


def _numpy_allow_list() -> list:
    """What checkpoints written before the random states were plain data need to load:
    NumPy's array reconstruction (it builds arrays from bytes, calling nothing else)."""
    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
    return [np.ndarray, np.dtype, type(np.dtype(np.uint32)),
            (reconstruct, "numpy.core.multiarray._reconstruct"),
            (reconstruct, "numpy._core.multiarray._reconstruct")]


_NUMPY_ARRAYS = _numpy_allow_list()


def _numpy_state_plain() -> tuple:
    """``np.random.get_state()`` as plain data: the key array as an int64 tensor."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
            float(cached))


def _checked_rng(rng: dict) -> dict:
    """One rank's saved random states, converted to what the setters take and tried on
    throwaway generators (so a damaged state fails here, before anything is restored)."""
    torch_state = rng["torch"]
    if not torch.is_tensor(torch_state):
        raise TypeError("'torch' is not a tensor")
    torch_state = torch_state.cpu()
    torch.Generator().set_state(torch_state)
    name, keys, pos, has_gauss, cached = rng["numpy"]
    keys = keys.cpu().numpy() if torch.is_tensor(keys) else np.asarray(keys)
    numpy_state = (name, keys.astype(np.uint32), pos, has_gauss, cached)
    np.random.RandomState().set_state(numpy_state)
    python_state = rng["python"]
    random.Random().setstate(python_state)
    cuda = rng.get("cuda")
    if cuda is not None:
        if not isinstance(cuda, (list, tuple)) or not all(torch.is_tensor(t) for t in cuda):
            raise TypeError("'cuda' is not a list of tensors")
        cuda = [t.cpu() for t in cuda]
    return {"torch": torch_state, "numpy": numpy_state, "python": python_state,
            "cuda": cuda}
