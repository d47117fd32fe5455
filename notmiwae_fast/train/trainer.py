"""Training loop for the models: Adam, gradient clipping, validation, early stopping,
atomic best / last checkpoints, resuming, a progress bar and TensorBoard (when
installed). Its checkpoints live in :mod:`.checkpoint`, the optimizer step in
:mod:`.optim`, the data-parallel pieces in :mod:`.parallel`, the epoch metrics and
TensorBoard in :mod:`.metrics`, the health flags in :mod:`.health`."""

from __future__ import annotations

import contextlib
import itertools
import math
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sized, Union

import torch
from torch import nn
from torch.utils.data.distributed import DistributedSampler

from .. import distributed
from .._common import validate as _validate
from .._common.progress import progress
from ..nn.models import ImportanceWeightedModel, kept_modes
from ..utils import missing_rmse
from .checkpoint import _restore_checkpoint, _rng_states, _save_checkpoint
from .graphs import StepGraphs, check_finite
from .health import TrainingWarning, _check_trainer_health, _count_outside_01, loss_diverged
from .metrics import _RowWeightedSums, _tensorboard
from .optim import _accumulate_grads, _adam
from .parallel import _data_parallel, _shard_sampler, _sharded
from .threads import SERIAL_MULTIPLY_ADDS, one_thread, widest_linear

__all__ = ["Trainer", "TrainingWarning", "loss_diverged"]

# (Over 400 lines, a third of them docstrings: one class whose methods share its state;
# every part that stands alone lives in a sibling module, named in the docstring above.)

# What Trainer.train calls after every optimizer step: (step index, outputs).
StepCallback = Callable[[int, dict], None]


def _checked_counts(
    n_epochs: int, patience: Optional[int], max_steps: Optional[int]
) -> tuple[int, Optional[int], Optional[int]]:
    """Trainer.train's counts (n_epochs, early_stopping_patience, max_steps), each an
    int >= 1 (or None where None is allowed); ValueError naming the argument."""

    def optional(value: Optional[int], name: str) -> Optional[int]:
        return None if value is None else _validate.positive_int(value, name)

    return (
        _validate.positive_int(n_epochs, "n_epochs"),
        optional(patience, "early_stopping_patience"),
        optional(max_steps, "max_steps"),
    )


def _as_tensors_report(device: torch.device) -> torch.device:
    """``device`` as its tensors report it ('cuda' -> 'cuda:<current>', 'cpu:0' ->
    'cpu'): the Trainer compares it with the batches' devices, and 'cuda' never equals
    'cuda:0'. Nothing is allocated (an allocation would open a CUDA context on the
    current GPU, in every process of a distributed run)."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    if device.type == "cpu":
        return torch.device("cpu")
    return device


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
        check_health: judge each run (:meth:`train`: warnings and ``history["health"]``
            flags, see there). False for callers that judge it themselves, as the
            imputers do from their per-step losses.
        cuda_graphs: replay the one-operator training step (below) as a CUDA graph,
            one per batch shape (see "CUDA graphs" below). Off by default: this path
            has been tested on the CPU only; turn it on after measuring it on your GPU.

    Batches are (x, s) for unsupervised models (or (x, s, x_true), see above) and
    (x, s, y) for supervised ones.

    Under ``torchrun`` (or in a process group you started) the Trainer runs data-parallel:
    the model is wrapped in DistributedDataParallel, each epoch's data are sharded with a
    DistributedSampler (from the DataLoader's dataset, batch size and shuffle setting;
    :meth:`shard_sampler`), metrics are averaged over ranks, rank 0 alone writes
    checkpoints, shows progress and logs to TensorBoard, every rank loads a checkpoint on
    resume, and the torch seed is offset by the rank so the importance samples differ
    across ranks.

    A training step of MIWAE or NotMIWAE whose forward computes the bound in one operator
    (the fused backend with the standard networks and a self-masking process or none:
    ``ops.gauss_bound``) takes its forward and backward from one call of
    ``ops.gauss_bound_grads``, with no autograd graph (the same numbers, less time per
    step), and hands the gradients to the parameters' ``.grad`` as ``backward`` would;
    other models, subclasses that override ``forward``, and data-parallel runs (which need
    DDP's gradient hooks) run forward and ``loss.backward()``. Gradient hooks registered
    on the parameters themselves (``Tensor.register_hook``) do not run on the one-operator
    path; clip with ``grad_clip``, which applies to both.

    On the CPU a small step runs on the calling thread alone (torch's thread count set
    to 1 for the step and put back): one whose largest product, rows × K samples × the
    widest linear layer, is under the 2^24 multiply-adds below which the operators
    multiply serially (a batch-16 step of the paper's networks is). Waking threads that
    sleep between parallel regions costs more than such a step's small operations
    save. Models with matrix parameters outside ``nn.Linear`` always use every thread.

    CUDA graphs (``cuda_graphs=True``, :mod:`.graphs`): on a CUDA device, each batch
    shape's one-operator step (the data check, the bound and its gradients, clipping,
    fused Adam, the step count) is captured once Adam's state exists (after the first
    step) and 3 uncaptured steps of that shape ran (on a side stream); it is then
    replayed with the batch copied into static buffers, so a step costs a few launches
    instead of dozens. The last short batch of an epoch is a shape of its own (its own
    graph; at most 4 shapes are captured, others run uncaptured). The replay reads the
    data check and the loss in one host sync, as the uncaptured step does; a bad batch
    or a non-finite loss skips the update on the device and raises the same error.
    Changing the learning rate or ``grad_clip`` captures again; so does loading a
    checkpoint. Steps that cannot be captured (other models or networks, autocast,
    data-parallel runs, an optimizer without its fused kernel) and any device but CUDA
    run the uncaptured step: on the CPU the switch changes nothing.
    """

    def __init__(
        self,
        model: nn.Module,
        lr: float = 1e-3,
        device: Optional[Union[str, torch.device]] = None,
        grad_clip: Optional[float] = None,
        checkpoint_dir: Optional[Union[str, Path]] = None,
        log_dir: Optional[Union[str, Path]] = None,
        progress: bool = True,
        original_data_available: bool = False,
        rmse_n_samples: int = 50,
        check_health: bool = True,
        cuda_graphs: bool = False,
    ) -> None:
        if not isinstance(cuda_graphs, bool):
            raise ValueError(f"argument 'cuda_graphs' must be True or False; got {cuda_graphs!r}")
        if not lr > 0:
            raise ValueError(f"argument 'lr' must be > 0; got {lr!r}")
        if grad_clip is not None and not grad_clip > 0:
            raise ValueError(f"argument 'grad_clip' must be > 0 or None; got {grad_clip!r}")
        self.device = (
            torch.device(device) if device is not None else next(model.parameters()).device
        )
        self.ctx = distributed.init_from_env(self.device)
        if self.ctx.distributed and self.device.type == "cuda":
            self.device = torch.device("cuda", self.ctx.local_rank)
            torch.cuda.set_device(self.device)
        self.device = _as_tensors_report(self.device)
        self.model = model.to(self.device)
        self.lr, self.grad_clip = lr, grad_clip
        self.optimizer = _adam(self.model.parameters(), lr)
        self._forward_module = _data_parallel(self.model, self.device, self.ctx)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.log_dir = log_dir
        self.progress = progress and self.ctx.is_main
        self.original_data_available = original_data_available
        self.rmse_n_samples = _validate.positive_int(rmse_n_samples, "rmse_n_samples")
        self.check_health = bool(check_health)
        self.supervised = bool(getattr(model, "supervised", False))
        self.epoch = 0
        self.global_step = 0
        self.best_loss = math.inf
        self.epochs_without_improvement = 0
        self.history: dict[str, list] = {}
        # Observed entries outside [0, 1] a Bernoulli model was trained on this run (a
        # device tensor, read once per run: no host sync per batch).
        self._outside_01: Optional[torch.Tensor] = None
        self.cuda_graphs = cuda_graphs
        capture = cuda_graphs and self.device.type == "cuda" and not self.ctx.distributed
        self._graphs: Optional[StepGraphs] = StepGraphs(self) if capture else None
        self._widest: Optional[int] = None  # see _small_step

    # -- one batch / one pass ---------------------------------------------------------------
    def _move(self, batch: Iterable) -> list:
        return [b.to(self.device) if torch.is_tensor(b) else b for b in batch]

    def _outputs(self, batch: list, module: Optional[nn.Module] = None) -> dict:
        module = self._forward_module if module is None else module
        if self.supervised:
            x, s, y = batch[:3]
            return module(x, s, y)
        return module(batch[0], batch[1])

    def _outputs_and_grads(self, batch: list) -> tuple[dict, Optional[list]]:
        """The model's outputs and, where one operator gives them (see the class
        docstring), the gradients of the loss; None for those: call backward."""
        model = self.model
        if (
            self.supervised
            or self._forward_module is not model
            or not torch.is_grad_enabled()
            or type(model).forward is not ImportanceWeightedModel.forward
        ):
            return self._outputs(batch), None
        return model._loss_and_grads(batch[0], batch[1])

    def shard_sampler(
        self, dataset: Sized, shuffle: bool = True, drop_last: bool = False
    ) -> DistributedSampler:
        """This rank's share of ``dataset`` ([N] items), the way the Trainer shards a
        DataLoader: a DistributedSampler seeded alike on every rank, so that each epoch
        (``set_epoch``, which :meth:`train` calls on a loader's ``sampler``) the ranks
        split one permutation, rank r taking its r-th, (r + world_size)-th, ... items.
        ``drop_last``: the last N mod world_size items of each permutation are left out
        (equal shares) instead of the first ones repeated."""
        return _shard_sampler(self.ctx, dataset, shuffle, drop_last)

    def train_step(self, batch: Iterable) -> dict:
        """One optimizer step on one batch (x [B, D], s [B, D], plus y for supervised
        models); returns the model's outputs (detached)."""
        batch = self._move(batch)
        if self._graphs is None:
            out = self._step(batch)
        else:
            out = self._graphs.step(batch, self.global_step, self._step)
        self.global_step += 1
        return out

    def _small_step(self, batch: list) -> bool:
        """Whether this batch's step is small CPU work, run on the calling thread alone
        (see :mod:`.threads`): the model's largest product on rows × K samples under
        the multiply-adds below which the operators run a product serially. Never for a
        model with a matrix parameter outside ``nn.Linear`` (see :func:`.widest_linear`)."""
        if self.device.type != "cpu" or not batch or not torch.is_tensor(batch[0]):
            return False
        if self._widest is None:
            self._widest = widest_linear(self.model)
        k = getattr(self.model, "n_samples", 1)
        k = k if isinstance(k, int) and k > 0 else 1
        return 0 < len(batch[0]) * k * self._widest < SERIAL_MULTIPLY_ADDS

    def _step(self, batch: list) -> dict:
        """:meth:`train_step` on a moved batch, uncaptured, ``global_step`` left as is;
        a small step on the calling thread alone (:meth:`_small_step`)."""
        with one_thread(self._small_step(batch)):
            return self._step_on_threads(batch)

    def _step_on_threads(self, batch: list) -> dict:
        """:meth:`_step`'s work, on whatever threads it set: zero the gradients, forward
        and backward (or the one-operator step), clip, Adam."""
        self.optimizer.zero_grad(set_to_none=True)
        out, grads = self._outputs_and_grads(batch)
        loss = out["loss"]
        check_finite(loss.item(), self.global_step)  # one host sync, as the check needs
        if grads is None:
            loss.backward()
        else:
            _accumulate_grads(grads)
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        steps = getattr(self.model, "n_train_steps", None)
        if isinstance(steps, torch.Tensor):
            steps.add_(1)
        return {
            k: v.detach() if v.requires_grad else v for k, v in out.items() if torch.is_tensor(v)
        }

    def train_epoch(
        self,
        loader: Iterable,
        max_batches: Optional[int] = None,
        on_step: Optional[StepCallback] = None,
    ) -> dict:
        """One pass over ``loader`` (batches (x [B, D], s [B, D]), plus y [B, ...] for
        supervised models), at most ``max_batches`` of them, with optimizer steps;
        ``on_step(step, outputs)`` after each (see :meth:`train`). Returns the metrics
        averaged over rows (a short last batch weighs by its rows)."""
        self.model.train()
        return self._train_pass(loader, max_batches, on_step)

    def _train_pass(
        self, loader: Iterable, max_batches: Optional[int], on_step: Optional[StepCallback]
    ) -> dict:
        """:meth:`train_epoch` with the model already in train mode."""
        batches = loader if max_batches is None else itertools.islice(loader, max_batches)
        sums = _RowWeightedSums()
        bernoulli = self.check_health and getattr(self.model, "out_dist", None) == "bern"
        for batch in batches:
            if bernoulli:
                self._outside_01 = _count_outside_01(batch, self._outside_01)
            out = self.train_step(batch)
            if on_step is not None:
                on_step(self.global_step - 1, out)
            sums.add(out, len(batch[0]))
        if sums.rows == 0:
            raise ValueError("argument 'train_loader' yielded no batch")
        return sums.means_over_ranks(self.device)

    @torch.no_grad()
    def validate(self, loader: Iterable) -> dict:
        """Metrics averaged over the rows of ``loader`` in eval mode (and the imputation
        RMSE when ``original_data_available``: batches (x, s, x_true), each [B, D])."""
        with kept_modes(self.model):
            self.model.eval()
            sums = _RowWeightedSums()
            truth, imputed, masks = [], [], []
            for batch in loader:
                batch = self._move(batch)
                sums.add(self._outputs(batch, self.model), len(batch[0]))
                if self.original_data_available and not self.supervised:
                    if len(batch) < 3:
                        raise ValueError(
                            "argument 'val_loader' must yield batches (x, s, "
                            "x_true) when original_data_available=True; got "
                            f"{len(batch)} tensors per batch"
                        )
                    truth.append(batch[2].cpu())
                    imputed.append(
                        self.model.impute(batch[0], batch[1], n_samples=self.rmse_n_samples).cpu()
                    )
                    masks.append(batch[1].cpu())
            if sums.rows == 0:
                raise ValueError("argument 'val_loader' yielded no batch")
            metrics = sums.means_over_ranks(self.device)
            if truth:
                metrics["rmse"] = missing_rmse(
                    torch.cat(truth), torch.cat(imputed), torch.cat(masks)
                )
            return metrics

    # -- the loop ---------------------------------------------------------------------------
    def train(
        self,
        train_loader: Iterable,
        val_loader: Optional[Iterable] = None,
        n_epochs: int = 100,
        early_stopping_patience: Optional[int] = None,
        save_best: bool = True,
        checkpoint_name: str = "best.pt",
        resume_from: Optional[Union[str, Path]] = None,
        log_interval: int = 0,
        max_steps: Optional[int] = None,
        on_step: Optional[StepCallback] = None,
    ) -> dict:
        """Trains until ``n_epochs`` epochs in all (counting those this Trainer already ran
        and those of a resumed checkpoint: a second ``train(n_epochs=2)`` after two
        epochs has nothing to do, and says so with a warning), or until ``max_steps``
        optimizer steps in all (counted likewise; the epoch that reaches them ends
        there).

        Early stopping and the best checkpoint follow the validation loss when
        ``val_loader`` is given, else the training loss. ``resume_from`` continues from a
        checkpoint written by this class (same epoch, step, optimizer state and RNG
        state). ``on_step(step, outputs)`` is called after every optimizer step with the
        step's index (``global_step`` before it) and the model's outputs (detached
        tensors on the device: reading them waits for the step). Returns the history:
        lists of per-epoch metrics (``train_loss``, ``val_loss``, ...). The model is left
        in the mode (train / eval) it was in.

        At the end (with ``check_health``) a :class:`TrainingWarning` is issued, and its
        flag added to ``history["health"]`` (its message to ``history["warnings"]``),
        when the per-epoch training loss ended far above its best (:func:`loss_diverged`:
        ``"diverged"``) or a model with ``out_dist="bern"`` was trained on observed
        values outside [0, 1] (``"bern_data_outside_01"``).
        """
        n_epochs, early_stopping_patience, max_steps = _checked_counts(
            n_epochs, early_stopping_patience, max_steps
        )
        if resume_from is not None:
            self.load_checkpoint(resume_from)
        self._warn_if_done(n_epochs, max_steps)
        train_loader = _sharded(train_loader, self.ctx)
        val_loader = _sharded(val_loader, self.ctx) if val_loader is not None else None
        writer = _tensorboard(self.log_dir) if self.ctx.is_main else None
        self._outside_01 = None
        start = time.time()
        with contextlib.ExitStack() as on_exit:  # whatever happens:
            on_exit.enter_context(kept_modes(self.model))  # every module's mode put back
            self.model.train()  # for every epoch: validate puts the modes back too
            if writer is not None:
                on_exit.callback(writer.close)
            epochs = progress(
                range(self.epoch, n_epochs),
                self.progress,
                desc="training",
                initial=self.epoch,
                total=n_epochs,
            )
            for epoch in epochs:
                if max_steps is not None and self.global_step >= max_steps:
                    break
                metrics = self._epoch(epoch, train_loader, val_loader, max_steps, on_step)
                self._log_epoch(metrics, epoch, writer, epochs, log_interval, n_epochs)
                improved = self._track_best(metrics, val_loader is not None)
                self._save_epoch(improved and save_best, checkpoint_name)
                if (
                    early_stopping_patience is not None
                    and self.epochs_without_improvement >= early_stopping_patience
                ):
                    break
        self.history["seconds"] = [time.time() - start]
        if self.check_health:
            self._check_health()
        return self.history

    def _warn_if_done(self, n_epochs: int, max_steps: Optional[int]) -> None:
        """Warns (at train's caller) when the epochs or steps asked for are done."""
        if self.epoch >= n_epochs:
            warnings.warn(
                f"Trainer.train: {self.epoch} epochs done already and n_epochs="
                f"{n_epochs} counts them; nothing to train (raise n_epochs)",
                stacklevel=3,
            )
        elif max_steps is not None and self.global_step >= max_steps:
            warnings.warn(
                f"Trainer.train: {self.global_step} steps done already and "
                f"max_steps={max_steps} counts them; nothing to train (raise "
                "max_steps)",
                stacklevel=3,
            )

    def _epoch(
        self,
        epoch: int,
        train_loader: Iterable,
        val_loader: Optional[Iterable],
        max_steps: Optional[int],
        on_step: Optional[StepCallback],
    ) -> dict:
        """Epoch ``epoch``'s training pass (up to ``max_steps`` steps in all) and
        validation; returns their metrics (``train_*``, ``val_*``)."""
        for loader in (train_loader, val_loader):
            sampler = getattr(loader, "sampler", None)
            if sampler is not None and hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
        left = None if max_steps is None else max_steps - self.global_step
        metrics = {
            f"train_{k}": v for k, v in self._train_pass(train_loader, left, on_step).items()
        }
        if val_loader is not None:
            metrics.update({f"val_{k}": v for k, v in self.validate(val_loader).items()})
        return metrics

    def _log_epoch(
        self,
        metrics: dict,
        epoch: int,
        writer: Any,
        epochs: Iterable,
        log_interval: int,
        n_epochs: int,
    ) -> None:
        """Appends an epoch's metrics to the history, TensorBoard, the progress bar and
        (every ``log_interval`` epochs, rank 0) a printed line; counts the epoch."""
        for key, value in metrics.items():
            self.history.setdefault(key, []).append(value)
            if writer is not None:
                writer.add_scalar(key.replace("_", "/", 1), value, epoch)
        self.epoch = epoch + 1
        if hasattr(epochs, "set_postfix"):
            epochs.set_postfix(loss=f"{metrics['train_loss']:.4f}")
        if log_interval and self.epoch % log_interval == 0 and self.ctx.is_main:
            print(
                f"epoch {self.epoch}/{n_epochs} "
                + " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            )

    def _track_best(self, metrics: dict, validated: bool) -> bool:
        """Whether the monitored loss (validation loss when ``validated``, else training
        loss) improved on the best; updates the best and the epochs without improvement."""
        monitored = metrics["val_loss" if validated else "train_loss"]
        if monitored < self.best_loss:
            self.best_loss = monitored
            self.epochs_without_improvement = 0
            return True
        self.epochs_without_improvement += 1
        return False

    def _save_epoch(self, best: bool, checkpoint_name: str) -> None:
        """With a checkpoint_dir: ``last.pt``, and ``checkpoint_name`` when ``best``."""
        if self.checkpoint_dir is None:
            return
        if best:
            self.save_checkpoint(self.checkpoint_dir / checkpoint_name)
        self.save_checkpoint(self.checkpoint_dir / "last.pt")

    def _check_health(self) -> None:
        """Warns and flags ``history`` as :meth:`train` says (see
        :func:`.health._check_trainer_health`)."""
        _check_trainer_health(self.history, self._outside_01, stacklevel=4)

    # -- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The training state, as tensors and plain data; ``rng`` holds one random state
        per rank (NumPy's as a tuple with its key array as a tensor)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "best_loss": self.best_loss,
            "epochs_without_improvement": self.epochs_without_improvement,
            "history": self.history,
            "model_class": type(self.model).__name__,
            "rng": _rng_states(self.ctx),
        }

    def save_checkpoint(self, path: Union[str, Path]) -> None:
        """Writes the training state to ``path`` atomically (temp file + rename), as
        tensors and plain data only (``torch.load(weights_only=True)`` reads it); removes
        temporary files an earlier, killed write of ``path`` left. In a distributed run
        every rank must call it (the random states are gathered) and rank 0 alone
        writes."""
        _save_checkpoint(self.state_dict(), path, self.ctx)

    def load_checkpoint(self, path: Union[str, Path]) -> "Trainer":
        """Restores model, optimizer, counters, history and RNG state from ``path``, a
        checkpoint :meth:`save_checkpoint` wrote.

        The file is read with ``torch.load(weights_only=True)`` (tensors and plain data;
        nothing in it runs as code) and checked whole before anything changes: a file
        that cannot be read, lacks a part, or whose state dicts do not fit this model and
        optimizer raises one ValueError naming the file and what is wrong, and leaves
        the Trainer and its model as they were. Temporary files left by a killed write
        of ``path`` are removed."""
        state = _restore_checkpoint(Path(path), self.model, self.optimizer, self.ctx, self.device)
        self.epoch, self.global_step = state["epoch"], state["global_step"]
        self.best_loss = float(state["best_loss"])
        self.epochs_without_improvement = state["epochs_without_improvement"]
        self.history = state["history"]
        return self
