"""GAN training: exact resume, and DDP over 2 processes keeping every rank's weights identical."""
import json
import subprocess
import sys
import textwrap

import pytest
import torch

from latentedit.train.gan import GANConfig, GANTrainer

from conftest import assert_gan_resumes_bit_exactly

TINY = dict(resolution=16, channel_base=512, channel_max=32, batch=4)


def test_resume_continues_bit_exactly(tmp_path):
    # steps 3 and 4 resumed: step 4 holds a path-length regularisation pass
    assert_gan_resumes_bit_exactly(GANConfig(**TINY), tmp_path)
    assert (tmp_path / "bundle" / "bundle.json").exists()


def test_init_from_bundle_warm_starts(tmp_path):
    a = GANTrainer(GANConfig(**TINY), tmp_path / "a")
    a.train_step()
    a.nimg = 32_032  # kimg 32.032: 1000 * 32.032 is 32031.999... in floats
    a.export_bundle(tmp_path / "bundle")
    b = GANTrainer(GANConfig(**TINY), tmp_path / "b")
    b.init_from(tmp_path / "bundle")
    assert b.nimg == a.nimg  # the data stream continues where the bundle's run was
    for p, q in zip(a.G_ema.parameters(), b.G.parameters()):
        assert torch.equal(p, q)
    for p, q in zip(a.D.parameters(), b.D.parameters()):
        assert torch.equal(p, q)
    assert torch.isfinite(torch.tensor(b.train_step()["loss_G"]))


def test_optimiser_steps_invalidate_the_weights_caches(tmp_path):
    """The fused Adam step does not bump version counters by itself; caches keyed on them (the
    demodulation energies of a no-grad forward) would keep the old weights' values."""
    t = GANTrainer(GANConfig(**TINY), tmp_path)
    t.train_step()  # the optimisers hold state: fused steps from here on
    ws = t.G.mapping(torch.randn(2, t.G.z_dim), None, update_w_avg=False).detach()
    with torch.no_grad():
        t.G.synthesis(ws, noise_mode="const")  # fills the energy cache of the weights as they are
    before = {n: p._version for n, p in t.G.named_parameters()}
    for p in t.G.parameters():
        p.grad = torch.randn_like(p)
    t._opt_step(t.G, t.G_opt)
    assert all(p._version > before[n] for n, p in t.G.named_parameters())
    fresh = GANTrainer(GANConfig(**TINY), tmp_path / "fresh")
    fresh.G.load_state_dict(t.G.state_dict())
    with torch.no_grad():  # the stepped weights on t.G (cache refilled), computed afresh on the copy
        assert torch.equal(t.G.synthesis(ws, noise_mode="const"), fresh.G.synthesis(ws, noise_mode="const"))


@pytest.mark.parametrize("labels", [(), ("glasses",)])
def test_one_d_pass_over_fakes_and_reals_is_two_passes(tmp_path, labels):
    """The D step's single pass keeps every minibatch-std group to fakes or to reals alone."""
    t = GANTrainer(GANConfig(**{**TINY, "batch": 8}, labels=labels), tmp_path)
    fake, real = torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16) * 2 + 1
    fake_c, real_c = (torch.zeros(8, t.D.cfg.c_dim) for _ in range(2))
    if labels:
        fake_c[::2, 0], real_c[1::3, 1] = 1, 1
        t.D.project.weight.data.normal_()
    with torch.no_grad():
        one = t._d_fakes_and_reals(fake, fake_c, real, real_c)
        two = t.D(fake, fake_c), t.D(real, real_c)
        swapped = t._d_fakes_and_reals(real, real_c, fake, fake_c)
    for a, b in zip(one, two):
        assert a.shape == b.shape == (8, 1)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(swapped[0], two[1], rtol=1e-5, atol=1e-5)


def test_bf16_step_runs(tmp_path):
    t = GANTrainer(GANConfig(**TINY, bf16=True), tmp_path)
    stats = [t.train_step() for _ in range(2)]
    assert all(torch.isfinite(torch.tensor(v)) for s in stats for v in s.values())


def test_training_moves_weights_and_ema_lags(tmp_path):
    t = GANTrainer(GANConfig(**TINY), tmp_path)
    g0 = [p.detach().clone() for p in t.G.parameters()]
    for _ in range(3):
        stats = t.train_step()
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())
    moved = sum(not torch.equal(p0, p) for p0, p in zip(g0, t.G.parameters()))
    assert moved > len(g0) // 2
    assert any(not torch.equal(p, q) for p, q in zip(t.G.parameters(), t.G_ema.parameters()))


def test_ddp_two_processes_keep_ranks_identical(tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(textwrap.dedent(f"""
        import hashlib, json, sys, torch
        from latentedit.train.distributed import init_distributed
        from latentedit.train.gan import GANConfig, GANTrainer
        torch.set_num_threads(1)
        rank, world, device = init_distributed()
        t = GANTrainer(GANConfig(**{TINY!r}), sys.argv[1], rank=rank, world_size=world)
        for _ in range(3):
            t.train_step()
        digest = {{name: hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in m.parameters())).hexdigest()
                  for name, m in t.modules().items()}}
        json.dump({{"world": world, "digest": digest, "nimg": t.nimg}}, open(f"{{sys.argv[1]}}/rank{{rank}}.json", "w"))
    """))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(script), str(tmp_path)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2)]
    assert ranks[0]["world"] == 2 and ranks[0]["nimg"] == 3 * TINY["batch"]
    assert ranks[0]["digest"] == ranks[1]["digest"]


def test_torn_state_pair_is_detected(tmp_path):
    from latentedit.errors import FormatError

    t = GANTrainer(GANConfig(**TINY), tmp_path)
    t.train_step()
    t.save()
    first = (tmp_path / "state.json").read_text()
    t.train_step()
    t.save()
    (tmp_path / "state.json").write_text(first)  # as if the save stopped between its two files
    with pytest.raises(FormatError, match="different saves"):
        GANTrainer(GANConfig(**TINY), tmp_path).resume()


def test_kept_snapshots_hold_the_ema_generator_at_their_kimg(tmp_path):
    from latentedit.formats import load_networks

    t = GANTrainer(GANConfig(**TINY), tmp_path)
    t.nimg = 49_992  # two steps of 4 before the 50 kimg mark
    t.train(50.000, snapshot_kimg=0.004, progress=lambda *_: None, keep_kimg=50)
    at_50 = {k: v.clone() for k, v in t.G_ema.state_dict().items()}
    t.train(50.008, snapshot_kimg=0.004, progress=lambda *_: None, keep_kimg=50)
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == ["000050k"]
    kept = load_networks(tmp_path / "snapshots" / "000050k").G.state_dict()
    assert all(torch.equal(kept[k], v) for k, v in at_50.items())
    latest = load_networks(tmp_path / "bundle").G.state_dict()  # moved on since
    assert any(not torch.equal(latest[k], v) for k, v in at_50.items())


def test_collective_timeout_outlasts_a_paused_run(monkeypatch):
    """A run paused with kill -STOP for longer than torch's 30 minutes must not time out on resume."""
    from datetime import timedelta

    from latentedit.errors import InputError
    from latentedit.train.distributed import collective_timeout

    monkeypatch.delenv("LATENTEDIT_DIST_TIMEOUT_MIN", raising=False)
    assert collective_timeout() >= timedelta(hours=2)
    monkeypatch.setenv("LATENTEDIT_DIST_TIMEOUT_MIN", "45")
    assert collective_timeout() == timedelta(minutes=45)
    for bad in ("0", "-5", "soon", "nan"):
        monkeypatch.setenv("LATENTEDIT_DIST_TIMEOUT_MIN", bad)
        with pytest.raises(InputError, match="LATENTEDIT_DIST_TIMEOUT_MIN"):
            collective_timeout()
