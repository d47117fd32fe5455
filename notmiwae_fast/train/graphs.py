"""The Trainer's step as a CUDA graph (``Trainer(cuda_graphs=True)``): the one-operator
step of MIWAE / NotMIWAE (the data check's arithmetic, ``ops.gauss_bound_grads``, the
gradients handed to the parameters, clipping, the fused Adam step and the step count)
captured once per batch shape and replayed with the batch copied into static buffers.

The replay reads its results once (one host sync, as the step without a graph): the data
check's counts and the loss. The Adam step inside the graph is skipped on the device
when either is bad, so a bad batch or a non-finite loss leaves the parameters as they
were and raises what the step without a graph raises."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

from .. import ops
from .._common.capture import Captured, capture_failed, side_stream, tensor_addresses
from ..nn.models import ImportanceWeightedModel
from .optim import _accumulate_grads, _FusedAdam

__all__: list[str] = []

# Uncaptured steps of a batch shape before its capture (lazy initialisation, the Adam
# state, the allocator's first blocks), and the most batch shapes captured at once.
WARMUP_STEPS = 3
MAX_GRAPHS = 4

Step = Callable[[list], dict]


def check_finite(value: float, step: int) -> None:
    """FloatingPointError naming the step when the loss ``value`` is not finite."""
    if not math.isfinite(value):
        raise FloatingPointError(
            f"non-finite loss {value} at step {step}; lower the learning rate or set grad_clip"
        )


class StepGraphs:
    """The captured training steps of one Trainer, one per batch shape.

    :meth:`step` runs a batch: through its shape's graph when it has one; uncaptured
    (``eager_step``) when the step cannot be captured (see :meth:`_key`), during the
    ``warmup`` steps of a new shape (on a side stream), or once ``max_graphs`` shapes
    are captured. ``stand_in`` replays by running the captured function again (the CPU
    tests' seam, see :class:`~notmiwae_fast._common.capture.Captured`)."""

    def __init__(
        self,
        trainer: Any,
        stand_in: bool = False,
        warmup: int = WARMUP_STEPS,
        max_graphs: int = MAX_GRAPHS,
    ) -> None:
        self.trainer, self.stand_in = trainer, stand_in
        self.warmup, self.max_graphs = warmup, max_graphs
        self.graphs: dict[tuple, _StepGraph] = {}
        self.seen: Counter = Counter()
        self.failed: set[tuple] = set()  # shapes whose capture failed: uncaptured
        self._addresses: Optional[tuple] = None
        self._one_op: dict[tuple, bool] = {}
        # One memory pool for all the shapes' graphs: a replay may overwrite another
        # graph's results, which is safe because each replay's results are copied out
        # (or, the gradients, handed to the parameters afresh) before the next replay.
        self._pool = None if stand_in else torch.cuda.graph_pool_handle()

    # The Trainer's, read at every step (a caller may change them between steps).
    model = property(lambda self: self.trainer.model)
    optimizer = property(lambda self: self.trainer.optimizer)
    grad_clip = property(lambda self: self.trainer.grad_clip)
    device = property(lambda self: self.trainer.device)

    def step(self, batch: list, index: int, eager_step: Step) -> dict:
        """Batch ``index`` (the global step, for error messages) through its graph, or
        ``eager_step(batch)``; returns the step's outputs."""
        key = self._key(batch)
        if key is None:
            return eager_step(batch)
        graph = self.graphs.get(key)
        if graph is None:
            if (
                self.seen[key] < self.warmup
                or len(self.graphs) >= self.max_graphs
                or key in self.failed
            ):
                self.seen[key] += 1
                with side_stream(self.device):
                    return eager_step(batch)
            try:
                graph = _StepGraph(self, batch)
            except RuntimeError as err:
                self.failed.add(key)
                capture_failed(f"Trainer: the training step of a batch of shape {key[0]}", err)
                return eager_step(batch)
            self.graphs[key] = graph
        return graph.run(batch, index)

    def _key(self, batch: list) -> Optional[tuple]:
        """The graph a batch replays: (shapes, dtypes, learning rate); None when this step
        cannot be captured: not the one-operator step (see the Trainer), not a fused
        Adam with its state made, or a batch that is not (x [B, D], s [B, D]) tensors."""
        model, optimizer = self.model, self.optimizer
        x, s = batch[0], batch[1]
        if not (torch.is_tensor(x) and torch.is_tensor(s)) or x.dim() != 2:
            return None
        if (
            not isinstance(optimizer, _FusedAdam)
            or not optimizer.fusable()
            or type(model).forward is not ImportanceWeightedModel.forward
            or getattr(model, "supervised", False)
            or not torch.is_grad_enabled()
            or not self._one_operator(x)
        ):
            return None
        if x.shape != s.shape or x.shape[0] == 0 or x.shape[1] != model.input_dim:
            return None
        if x.dtype != model._dtype or x.device != self.device or s.device != self.device:
            return None
        addresses = self._tensor_addresses()
        if addresses is None:
            return None
        if addresses != self._addresses:
            # New parameters or optimizer state (a loaded checkpoint, a moved model): the
            # graphs read the old ones, so they are dropped and captured again.
            self.graphs.clear()
            self.seen.clear()
            self.failed.clear()
            self._addresses = addresses
        lr = self.optimizer.param_groups[0]["lr"]
        return (tuple(x.shape), x.dtype, s.dtype, lr, self.grad_clip, model.n_samples)

    def _one_operator(self, x: Tensor) -> bool:
        """Whether the model's bound is one operator for x (backend, networks, process
        and autocast decide: see the model's _gauss_bound_networks); remembered per
        backend and autocast state, the rest being fixed once the model is built."""
        model = self.model
        key = (model.backend, torch.is_autocast_enabled(x.device.type))
        if key not in self._one_op:
            nets = model._gauss_bound_networks(x, *model._missing_model_and_selfmask())
            self._one_op[key] = nets is not None
        return self._one_op[key]

    def _tensor_addresses(self) -> Optional[tuple]:
        """Where the optimizer's parameters (and whether they are trained), their Adam
        state and the step count live; None until every trained parameter has its Adam
        state (the first, uncaptured, step makes it). The optimizer's parameter list,
        not model.parameters(): walking the modules would cost more than the replay."""
        found: list = []
        state = self.optimizer.state
        for p in self.optimizer.param_groups[0]["params"]:
            if not p.requires_grad:
                found += [p.data_ptr(), None]
                continue
            moments = state.get(p)
            if not moments:
                return None
            found += [p.data_ptr(), moments["exp_avg"].data_ptr()]
            found += [moments["exp_avg_sq"].data_ptr(), moments["step"].data_ptr()]
        found.append(tensor_addresses([getattr(self.model, "n_train_steps", None)]))
        return tuple(found)


class _StepGraph:
    """One batch shape's captured step: static x and s, and the graph writing the
    outputs (scalars packed in one tensor after the data check's two counts, log_w)."""

    def __init__(self, owner: StepGraphs, batch: list) -> None:
        self.owner = owner
        self.x, self.s = batch[0].clone(), batch[1].clone()
        self.keys: list[str] = []
        self.loss_at = 2
        self.grads: list[tuple[Tensor, Tensor]] = []
        owner.optimizer.zero_grad(set_to_none=True)
        self.captured = Captured(self._body, owner.device, owner.stand_in, owner._pool)

    def _body(self) -> dict:
        """The step's arithmetic on the static x and s (what the graph holds)."""
        owner, model = self.owner, self.owner.model
        owner.optimizer.zero_grad(set_to_none=True)
        # The data check's arithmetic without its host sync (read after the replay), then
        # the model's one-operator forward and gradients on the checked rows.
        x0, s, counts = ops.observed_data(self.x, self.s)
        outputs, pairs = model._checked_forward(x0, s, model.n_samples, with_grads=True)
        if pairs is None:
            raise RuntimeError("the training step is not one operator")
        loss = outputs["loss"]
        _accumulate_grads(pairs)
        if owner.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), owner.grad_clip)
        bad = (counts.sum() > 0) | ~torch.isfinite(loss)
        if not owner.optimizer.guarded_step(bad.to(torch.float32)):
            raise RuntimeError("the fused Adam step does not apply to these parameters")
        steps = getattr(model, "n_train_steps", None)
        if isinstance(steps, Tensor):
            steps.add_((~bad).to(steps.dtype))
        self.keys = [k for k, v in outputs.items() if torch.is_tensor(v)]
        self.grads = [(p, p.grad) for p in model.parameters() if p.grad is not None]
        scalar_keys = [k for k in self.keys if k != "log_w"]
        self.loss_at = 2 + scalar_keys.index("loss")
        scalars = [outputs[k].reshape(1) for k in scalar_keys]
        packed = torch.cat([counts.to(loss.dtype).reshape(-1), *scalars])
        return {"packed": packed, "log_w": outputs["log_w"]}

    def run(self, batch: list, index: int) -> dict:
        """Replays the step on ``batch``; its outputs as the step without a graph gives
        them (fresh tensors: the graph's own are overwritten by the next replay)."""
        self.x.copy_(batch[0])
        self.s.copy_(batch[1])
        results = self.captured.replay()
        packed, log_w = results["packed"].clone(), results["log_w"].clone()
        values = packed.tolist()  # the one host sync: the data check and the loss
        # The gradients are handed out only after a good step, as without a graph.
        for p, _ in self.grads:
            p.grad = None
        if values[0] or values[1]:
            # The data check failed (the graph skipped the update): the check itself
            # says what is wrong.
            self.owner.model._batch_inputs(batch[0], batch[1])
            raise ValueError("argument 's' or 'x' failed the data check")
        check_finite(values[self.loss_at], index)
        for p, grad in self.grads:
            p.grad = grad
        scalars = iter(packed[2:])
        return {k: log_w if k == "log_w" else next(scalars) for k in self.keys}
