"""The Trainer's checkpoints: the random states as plain data (:func:`_rng_states`,
:func:`_restore_rng`), writing a checkpoint (:func:`_save_checkpoint`), restoring one
(:func:`_restore_checkpoint`) and the checks it passes whole before anything is
restored (:func:`_checked_state`: its parts and their types, the model's and the
optimizer's state dicts, the random states tried on throwaway generators)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from torch import nn

from .._common.io import load_plain, remove_stale_temporaries, save_atomic
from ..distributed.group import Context

__all__: list[str] = []

# The parts of a checkpoint and their types.
_CHECKPOINT_PARTS: dict[str, Union[type, tuple[type, ...]]] = {
    "model": dict,
    "optimizer": dict,
    "epoch": int,
    "global_step": int,
    "best_loss": (int, float),
    "epochs_without_improvement": int,
    "history": dict,
    "model_class": str,
    "rng": list,
}


def _numpy_allow_list() -> list:
    """What checkpoints written before the random states were plain data need to load:
    NumPy's array reconstruction (it builds arrays from bytes, calling nothing else)."""
    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
    return [
        np.ndarray,
        np.dtype,
        type(np.dtype(np.uint32)),
        (reconstruct, "numpy.core.multiarray._reconstruct"),
        (reconstruct, "numpy._core.multiarray._reconstruct"),
    ]


# The allow-list torch.load(weights_only=True) reads checkpoints with.
_NUMPY_ARRAYS = _numpy_allow_list()


def _numpy_state_plain() -> tuple:
    """``np.random.get_state()`` as plain data: the key array as an int64 tensor."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))


def _rng_states(ctx: Context) -> list[dict]:
    """This process's random states (torch, NumPy, Python, CUDA) as plain data: a list
    of one per rank, gathered from every rank in a distributed run (every rank must
    call it)."""
    mine = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state_plain(),
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    if not ctx.distributed:
        return [mine]
    states: list = [None] * ctx.world_size
    torch.distributed.all_gather_object(states, mine)
    return states


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
        if not isinstance(cuda, (list, tuple)) or not all(
            torch.is_tensor(t) and t.dtype == torch.uint8 and t.dim() == 1 for t in cuda
        ):
            raise TypeError("'cuda' is not a list of generator states (1-D uint8 tensors)")
        cuda = [t.cpu() for t in cuda]
    return {"torch": torch_state, "numpy": numpy_state, "python": python_state, "cuda": cuda}


def _restore_rng(rng: dict, same_world: bool, ctx: Context) -> None:
    """Sets the random states ``rng`` (from :func:`_checked_rng`); a checkpoint written
    by another number of processes gives each rank the torch seed of its rank again, so
    that the ranks' streams stay apart."""
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        # Saved for every GPU the writing process saw; restored for the GPUs there are
        # (set_rng_state_all would fail half-way on a machine with fewer).
        for index, state in enumerate(rng["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, index)
    if not same_world:
        torch.manual_seed(torch.initial_seed() + ctx.rank)


def _save_checkpoint(state: dict, path: Union[str, Path], ctx: Context) -> None:
    """Writes ``state`` to ``path`` atomically on rank 0 (temporary files a killed
    write of ``path`` left removed first); every rank waits for it."""
    if ctx.is_main:
        remove_stale_temporaries(path)
        save_atomic(state, path)
    if ctx.distributed:
        torch.distributed.barrier()


def _restore_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    ctx: Context,
    device: torch.device,
) -> dict:
    """Reads the checkpoint at ``path`` and, once it has passed :func:`_checked_state`,
    loads its state dicts into ``model`` and ``optimizer`` and restores this rank's
    random states; returns the checkpoint (its counters and history are the Trainer's
    to set). Removes temporary files a killed write of ``path`` left."""
    if not path.is_file():
        raise FileNotFoundError(f"argument 'resume_from': no checkpoint at {path}")
    if ctx.is_main:
        remove_stale_temporaries(path)
    state: Any = load_plain(path, "checkpoint", device, allowed=_NUMPY_ARRAYS)
    rng = _checked_state(path, state, model, optimizer, ctx)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    _restore_rng(rng, len(state["rng"]) == ctx.world_size, ctx)
    return state


def _checked_state(
    path: Path, state: object, model: nn.Module, optimizer: torch.optim.Optimizer, ctx: Context
) -> dict:
    """Checks a loaded checkpoint whole against ``model`` and ``optimizer`` (parts,
    types, the state dicts' keys and shapes, the random states); returns this rank's
    random states ready to set. ValueError naming the file otherwise."""

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
    if state["model_class"] != type(model).__name__:
        raise bad(f"holds a {state['model_class']}, not a {type(model).__name__}")
    if not all(isinstance(v, list) for v in state["history"].values()):
        raise bad("is damaged: 'history' is not a dict of lists")
    _check_model_state(path, state["model"], model)
    _check_optimizer_state(path, state["optimizer"], optimizer)
    states = state["rng"]
    if not states or not all(isinstance(r, dict) for r in states):
        raise bad("is damaged: 'rng' is not a list of random states")
    rng = states[ctx.rank] if len(states) == ctx.world_size else states[0]
    try:
        return _checked_rng(rng)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise bad(
            f"is damaged: its random states cannot be restored ({' '.join(str(err).split())[:150]})"
        ) from None


def _check_model_state(path: Path, saved: dict, model: nn.Module) -> None:
    """ValueError naming the file when ``saved`` is not a state dict of ``model`` (keys
    and shapes; the standardisation buffers may be set or not)."""
    expected = model.state_dict()
    optional = {
        f"{prefix}.{name}".lstrip(".")
        for prefix, module in model.named_modules()
        for name, buffer in module._buffers.items()
        if buffer is None and name not in module._non_persistent_buffers_set
    }
    missing = [k for k in expected if k not in saved]
    unexpected = [k for k in saved if k not in expected and k not in optional]
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {path} does not fit the model: "
            + "; ".join(
                f"{what} {keys[:3]}"
                for what, keys in (("missing keys", missing), ("unexpected keys", unexpected))
                if keys
            )
        )
    for key, value in saved.items():
        if not torch.is_tensor(value):
            raise ValueError(
                f"checkpoint {path} does not fit the model: {key!r} is a "
                f"{type(value).__name__}, not a tensor"
            )
        if key in expected and value.shape != expected[key].shape:
            raise ValueError(
                f"checkpoint {path} does not fit the model: {key!r} has "
                f"shape {list(value.shape)}, the model's "
                f"{list(expected[key].shape)}"
            )


def _check_optimizer_state(path: Path, saved: dict, optimizer: torch.optim.Optimizer) -> None:
    """ValueError naming the file when ``saved`` is not a state dict of ``optimizer``
    (groups, parameter counts, the shapes of per-parameter state such as Adam's
    moments)."""

    def bad(what: str) -> ValueError:
        return ValueError(f"checkpoint {path} does not fit the optimizer: {what}")

    groups, state = saved.get("param_groups"), saved.get("state")
    if (
        not isinstance(groups, list)
        or not isinstance(state, dict)
        or not all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups)
    ):
        raise bad("it is not an optimizer state dict")
    mine = optimizer.param_groups
    if [len(g["params"]) for g in groups] != [len(g["params"]) for g in mine]:
        raise bad(
            f"parameters per group {[len(g['params']) for g in groups]}, the "
            f"model's {[len(g['params']) for g in mine]}"
        )
    params = {
        pid: p
        for saved_group, group in zip(groups, mine)
        for pid, p in zip(saved_group["params"], group["params"])
    }
    for pid, values in state.items():
        if pid not in params or not isinstance(values, dict):
            raise bad(f"state of an unknown parameter {pid!r}")
        for key, value in values.items():
            if torch.is_tensor(value) and value.dim() > 0 and value.shape != params[pid].shape:
                raise bad(
                    f"{key!r} of parameter {pid} has shape {list(value.shape)}, "
                    f"the parameter's {list(params[pid].shape)}"
                )
