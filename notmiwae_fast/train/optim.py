"""The Trainer's optimizer step: Adam in its fused single-kernel form
(:class:`_FusedAdam`, :func:`_adam`) and :func:`_accumulate_grads`, which hands
gradients computed outside autograd to the parameters as ``backward`` would."""

from __future__ import annotations

from typing import Callable, Iterable, Optional

import torch

from .threads import GRAIN_SIZE, one_thread

__all__: list[str] = []


class _FusedAdam(torch.optim.Adam):
    """torch.optim.Adam(fused=True) whose step() calls the fused kernel
    (``torch._fused_adam_``, what ``Adam.step`` ends in) directly with the state's
    tensors when nothing else is asked of it: one parameter group without amsgrad,
    maximize, capturable, differentiable or a tensor lr, every state already made by a
    first step, and no closure; otherwise (and on a torch without ``_fused_adam_``) it is
    Adam.step. Same kernel, same state, same numbers: tests/test_trainer.py compares the
    two step by step, so a torch whose kernel takes other arguments fails there first.
    It leaves out Adam.step's per-step Python over the parameter list, a few percent of
    a small model's training step. zero_grad(set_to_none=True) likewise sets the
    gradients to None without torch.optim's profiling wrapper."""

    def zero_grad(self, set_to_none: bool = True) -> None:
        if not set_to_none:
            return super().zero_grad(set_to_none)
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    @torch.no_grad()
    def step(
        self,
        closure: Optional[Callable[[], float]] = None,  # type: ignore[override]
    ) -> Optional[float]:
        lists = self._kernel_arguments() if closure is None else None
        if lists is None:
            return super().step(closure)
        self._fused_step(lists, None)
        return None

    @torch.no_grad()
    def guarded_step(self, found_inf: torch.Tensor) -> bool:
        """The fused step, skipped on the device where ``found_inf`` (a float32 flag on
        the parameters' device) is 1: parameters, moments and step counts are then left
        as they were. No host sync, so a CUDA graph can hold it. False (nothing done)
        when this step would have to go through Adam.step (see the class docstring)."""
        lists = self._kernel_arguments()
        if lists is None:
            return False
        self._fused_step(lists, found_inf)
        return True

    def _fused_step(self, lists: tuple, found_inf: Optional[torch.Tensor]) -> None:
        """Adam.step's fused kernel on ``lists`` (see :meth:`_kernel_arguments`); with
        ``found_inf``, the kernel skips the update where it is 1 and the step counts
        are put back, as Adam does under a GradScaler. On the CPU, parameters that are
        all smaller than ATen's grain are updated on this thread alone, as ATen's own
        elementwise kernels would update each of them (torch's fused kernel opens a
        parallel region for every tensor whatever its size)."""
        params, grads, exp_avgs, exp_avg_sqs, steps = lists
        group = self.param_groups[0]
        beta1, beta2 = group["betas"]
        small = params[0].device.type == "cpu" and max(p.numel() for p in params) < GRAIN_SIZE
        torch._foreach_add_(steps, 1)
        with one_thread(small):
            torch._fused_adam_(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                [],
                steps,
                amsgrad=False,
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                maximize=False,
                grad_scale=None,
                found_inf=found_inf,
            )
        if found_inf is not None:
            torch._foreach_sub_(steps, [found_inf] * len(steps))

    def fusable(self) -> bool:
        """Whether the parameter groups allow the fused kernel called directly (one group
        without amsgrad, maximize, capturable, differentiable or a tensor lr)."""
        if len(self.param_groups) != 1 or not hasattr(torch, "_fused_adam_"):
            return False
        group = self.param_groups[0]
        return not (
            not group.get("fused")
            or group["amsgrad"]
            or group["maximize"]
            or group.get("capturable")
            or group.get("differentiable")
            or group.get("decoupled_weight_decay")
            or torch.is_tensor(group["lr"])
        )

    def _kernel_arguments(self) -> Optional[tuple]:
        """(params, grads, exp_avgs, exp_avg_sqs, steps) for the fused kernel, or None
        when this step must go through Adam.step (see the class docstring)."""
        if not self.fusable():
            return None
        group = self.param_groups[0]
        params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
        device = dtype = None
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue  # as Adam.step: no gradient, no update
            state = self.state.get(p)
            if (
                not state
                or grad.is_sparse
                or (device is not None and (p.device != device or p.dtype != dtype))
            ):
                return None
            device, dtype = p.device, p.dtype
            params.append(p)
            grads.append(grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        return (params, grads, exp_avgs, exp_avg_sqs, steps) if params else None


def _adam(params: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """Adam, in its fused single-kernel form where this torch and device have it."""
    params = list(params)
    try:
        return _FusedAdam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


def _accumulate_grads(pairs: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
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
