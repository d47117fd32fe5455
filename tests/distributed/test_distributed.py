"""Two CPU processes with the gloo backend (torch.multiprocessing spawn on a local port):
data-parallel training, resuming from a rank-0 checkpoint, and sharded imputation."""

from __future__ import annotations

import math
import os
import socket
from unittest import mock

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import notmiwae_fast as nf
from notmiwae_fast import distributed, utils

pytestmark = pytest.mark.slow
D, N, BATCH = 4, 32, 8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g)
    s = (torch.rand(N, D, generator=g) > 0.3).float()
    return x * s, s


def new_model():
    torch.manual_seed(0)
    return nf.NotMIWAE(D, hidden_dim=16, n_samples=5)


def row_independent_noise():
    """Patches torch.randn / randn_like with noise that depends only on the sample and
    feature index, not on the row: a row's bound is then the same whichever batch or
    process it is in, so the loss over the union of the ranks' batches is comparable."""

    def fake(size):
        size = tuple(size)
        base = torch.sin(torch.arange(math.prod(size[1:]), dtype=torch.float32) * 0.37 + 0.1)
        return base.reshape(size[1:]).expand(size).clone()

    torch.randn = lambda *size, **kw: fake(
        size[0] if len(size) == 1 and not isinstance(size[0], int) else size
    ).to(kw.get("dtype") or torch.float32)
    torch.randn_like = lambda t, **kw: fake(t.shape).to(t.dtype)


def _setup(rank, world, port):
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)


def _train_worker(rank, world, port, out_dir, patched):
    _setup(rank, world, port)
    if patched:
        row_independent_noise()
    model = new_model()
    x, s = data()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, s), batch_size=BATCH, shuffle=False
    )
    trainer = nf.Trainer(model, progress=False)
    history = trainer.train(loader, n_epochs=1)
    torch.save(
        {
            "params": model.state_dict(),
            "loss": history["train_loss"][0],
            "steps": trainer.global_step,
        },
        os.path.join(out_dir, f"rank{rank}.pt"),
    )
    distributed.shutdown()


def run(fn, *args, world=2):
    mp.spawn(fn, args=(world, free_port(), *args), nprocs=world, join=True)


def test_ranks_agree_and_the_loss_is_the_union_loss(tmp_path):
    run(_train_worker, str(tmp_path), True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for key, value in ranks[0]["params"].items():
        torch.testing.assert_close(value, ranks[1]["params"][key], rtol=0, atol=0)
    assert ranks[0]["loss"] == ranks[1]["loss"] and ranks[0]["steps"] == 2

    # One process on the union of the two ranks' batches (DistributedSampler without
    # shuffle: rank r takes rows r, r + 2, ...; its j-th batch is the j-th 8 of those).
    saved_randn, saved_like = torch.randn, torch.randn_like
    try:
        row_independent_noise()
        model = new_model()
        x, s = data()
        rank_rows = [list(range(r, N, 2)) for r in range(2)]
        unions = [
            rank_rows[0][j : j + BATCH] + rank_rows[1][j : j + BATCH]
            for j in range(0, N // 2, BATCH)
        ]
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(x, s), batch_sampler=unions
        )
        history = nf.Trainer(model, progress=False).train(loader, n_epochs=1)
    finally:
        torch.randn, torch.randn_like = saved_randn, saved_like
    assert history["train_loss"][0] == pytest.approx(ranks[0]["loss"], rel=1e-5)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, ranks[0]["params"][key], rtol=1e-5, atol=1e-6)


def _resume_worker(rank, world, port, out_dir, interrupted):
    _setup(rank, world, port)
    x, s = data()

    def loader():
        return torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(x, s), batch_size=BATCH, shuffle=True
        )

    torch.manual_seed(1)
    model = new_model()
    if interrupted:
        nf.Trainer(model, progress=False, checkpoint_dir=out_dir).train(loader(), n_epochs=2)
        model = new_model()  # as after a restart
        torch.manual_seed(123)
        trainer = nf.Trainer(model, progress=False, checkpoint_dir=out_dir)
        trainer.train(loader(), n_epochs=4, resume_from=os.path.join(out_dir, "last.pt"))
    else:
        trainer = nf.Trainer(model, progress=False)
        trainer.train(loader(), n_epochs=4)
    name = "resumed" if interrupted else "straight"
    torch.save(
        {"params": model.state_dict(), "steps": trainer.global_step},
        os.path.join(out_dir, f"{name}{rank}.pt"),
    )
    distributed.shutdown()


def test_resume_from_a_rank0_checkpoint(tmp_path):
    run(_resume_worker, str(tmp_path), False)
    run(_resume_worker, str(tmp_path), True)
    assert sorted(p.name for p in tmp_path.glob("*.pt") if "last" in p.name) == ["last.pt"]
    for rank in range(2):
        straight = torch.load(tmp_path / f"straight{rank}.pt")
        resumed = torch.load(tmp_path / f"resumed{rank}.pt")
        assert straight["steps"] == resumed["steps"] == 4 * 2
        for key, value in straight["params"].items():
            torch.testing.assert_close(resumed["params"][key], value, rtol=0, atol=0)


def _impute_worker(rank, world, port, out_dir, fail_rank):
    _setup(rank, world, port)
    distributed.init_from_env()
    model = new_model()
    g = torch.Generator().manual_seed(5)
    x = torch.randn(50, D, generator=g)
    s = (torch.rand(50, D, generator=g) > 0.3).float()
    if rank == fail_rank:
        s = s[:, :2]  # a bad shard: this rank's imputation raises
    output = os.path.join(out_dir, "imputed.npy")
    try:
        distributed.impute_sharded(model, x, s, output, n_samples=30, batch_size=8, seed=11)
        message = "ok"
    except RuntimeError as exc:
        message = str(exc)
    with open(os.path.join(out_dir, f"status{rank}.txt"), "w") as f:
        f.write(message)
    distributed.shutdown()


def test_sharded_imputation_equals_a_single_process_run(tmp_path):
    run(_impute_worker, str(tmp_path), -1)
    assert [(tmp_path / f"status{r}.txt").read_text() for r in range(2)] == ["ok", "ok"]
    sharded = np.load(tmp_path / "imputed.npy")
    assert not list(tmp_path.glob("*.shard-*"))
    g = torch.Generator().manual_seed(5)
    x = torch.randn(50, D, generator=g)
    s = (torch.rand(50, D, generator=g) > 0.3).float()
    single = utils.impute(new_model(), x, s, n_samples=30, batch_size=8, seed=11)
    np.testing.assert_allclose(sharded, single, rtol=1e-5, atol=1e-6)


def test_a_failing_rank_fails_the_whole_job(tmp_path):
    run(_impute_worker, str(tmp_path), 1)
    for r in range(2):
        status = (tmp_path / f"status{r}.txt").read_text()
        assert status.startswith("sharded imputation failed on rank 1: ValueError")
        assert "was not written" in status
    assert not (tmp_path / "imputed.npy").exists()


def test_shard_bounds_cover_the_rows_in_order():
    for n, world, align in [(50, 2, 8), (7, 3, 1), (5, 4, 2), (0, 2, 8)]:
        bounds = [distributed.shard_bounds(n, world, r, align) for r in range(world)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
        assert all(start % align == 0 or start == n for start, _ in bounds)


def _imputer_worker(rank, world, port, out_dir):
    _setup(rank, world, port)
    from notmiwae_fast.impute import _training, imputer
    from notmiwae_fast.train import trainer

    seen = []
    real = trainer.Trainer.train_step

    def recording(self, batch):
        seen.append(batch[0][:, 0].clone())
        return real(self, batch)

    trainer.Trainer.train_step = recording
    g = np.random.default_rng(0)
    x = g.normal(size=(40, 3))
    x[:, 0] = np.arange(40.0)  # always observed, identifies the row
    x[:, 1:][g.random((40, 2)) < 0.3] = np.nan
    # 40 rows over 2 ranks: 20 each, batches of 5: 4 steps make one epoch
    # A named process: with "auto" the candidates' steps would see rows too.
    imp = imputer.NotMIWAEImputer(
        missing_process="selfmasking",
        max_iter=4,
        batch_size=5,
        hidden_dim=8,
        n_samples=3,
        random_state=0,
    ).fit(x)
    rows_seen = torch.cat(seen)
    # The bound that compares models ("auto"): each rank takes its share of the rows
    # and the sums are added over the ranks, so every rank gets the same value. Each
    # rank's own rows alone, for the test to add up.
    x_std = (x - imp.mean_) / imp.scale_
    bound = _training.mean_bound(imp.model_, x_std, ~np.isnan(x), torch.device("cpu"), 5)
    with mock.patch.object(_training, "all_reduce_sum", lambda values, device: list(values)):
        own = _training.mean_bound(imp.model_, x_std, ~np.isnan(x), torch.device("cpu"), 5)
    try:
        imputer.NotMIWAEImputer(max_iter=2, random_state=0).fit(x[:1])
        too_few = ""
    except ValueError as exc:
        too_few = str(exc)
    torch.save(
        {
            "params": imp.model_.state_dict(),
            "losses": imp.loss_curve_,
            "rows": rows_seen,
            "scale": imp.scale_[0],
            "mean": imp.mean_[0],
            "too_few": too_few,
            "bound": bound,
            "own_bound": own,
        },
        os.path.join(out_dir, f"imputer{rank}.pt"),
    )
    distributed.shutdown()


def test_the_imputer_trains_data_parallel(tmp_path):
    run(_imputer_worker, str(tmp_path))
    ranks = [torch.load(tmp_path / f"imputer{r}.pt", weights_only=False) for r in range(2)]
    for key, value in ranks[0]["params"].items():
        torch.testing.assert_close(value, ranks[1]["params"][key], rtol=0, atol=0)
    np.testing.assert_array_equal(ranks[0]["losses"], ranks[1]["losses"])
    # 40 rows: 20 per rank, so the agreed bound is the mean of the two ranks' own.
    assert ranks[0]["bound"] == ranks[1]["bound"] and np.isfinite(ranks[0]["bound"])
    assert ranks[0]["own_bound"] != ranks[1]["own_bound"]
    mean_of_own = (ranks[0]["own_bound"] + ranks[1]["own_bound"]) / 2
    assert ranks[0]["bound"] == pytest.approx(mean_of_own, rel=1e-12)
    rows = [np.rint(r["rows"].numpy() * r["scale"] + r["mean"]).astype(int) for r in ranks]
    assert len(rows[0]) == len(rows[1]) == 20  # disjoint halves of the rows, one epoch
    assert sorted(np.concatenate(rows).tolist()) == list(range(40))
    for r in ranks:
        assert r["too_few"] == (
            "argument 'X' has 1 row(s); training on 2 processes needs at least one row per process"
        )


def test_more_nccl_processes_than_gpus_is_named_before_the_group_starts(monkeypatch):
    """A CUDA run under torchrun whose LOCAL_RANK has no GPU of its own: a clear error
    before any process group is started (NCCL would fail later, less clearly)."""
    started = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda **kw: started.append(kw))
    with pytest.raises(ValueError, match="LOCAL_RANK is 1 but this machine has 1 CUDA GPU"):
        distributed.init_from_env(torch.device("cuda"))
    assert not started


def test_a_loader_sharded_for_its_rank_keeps_its_settings():
    """The Trainer's DataLoader rebuilt for one rank's share keeps batch size, shuffling,
    workers, prefetching, pinning and generator (only the sampler changes)."""
    from notmiwae_fast.train.parallel import _sharded

    dataset = torch.utils.data.TensorDataset(torch.randn(10, 2))
    generator = torch.Generator().manual_seed(0)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=4,
        shuffle=True,
        num_workers=2,
        prefetch_factor=3,
        persistent_workers=True,
        pin_memory=True,
        generator=generator,
    )
    mine = _sharded(loader, distributed.Context(1, 2, 1))
    assert isinstance(mine.sampler, torch.utils.data.DistributedSampler)
    assert len(list(mine.sampler)) == 5 and mine.sampler.shuffle
    kept = ("batch_size", "num_workers", "prefetch_factor", "persistent_workers", "pin_memory")
    assert all(getattr(mine, name) == getattr(loader, name) for name in kept)
    assert mine.generator is generator
