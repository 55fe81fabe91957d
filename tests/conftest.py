import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from latentedit.models.discriminator import Discriminator
from latentedit.models.stylegan2 import DiscriminatorConfig, Generator, GeneratorConfig

TINY = dict(resolution=16, channel_base=512, channel_max=32)
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name):
    """The script benchmarks/NAME.py as a module (benchmarks/ is no package; its scripts import each
    other by name, so the folder goes on sys.path)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def randomize(module, seed=0):
    """Random values for the tensors that start at zero/one (biases, noise strengths, w_avg), so
    that a conversion dropping or misplacing any of them changes the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if name.endswith(("bias", "noise_strength", "w_avg")):
                t.copy_(torch.randn(t.shape, generator=g) * 0.3)
    return module


@pytest.fixture
def tiny_G():
    torch.manual_seed(0)
    return randomize(Generator(GeneratorConfig(**TINY))).eval()


@pytest.fixture(scope="module")
def G():
    """The tiny random generator, built once per test module (tests that only read it)."""
    torch.manual_seed(0)
    return randomize(Generator(GeneratorConfig(**TINY))).eval()


@pytest.fixture
def tiny_D():
    torch.manual_seed(1)
    return randomize(Discriminator(DiscriminatorConfig(**TINY)), seed=1).eval()


def run(*args):
    """`latentedit ARGS...` in-process (click's CliRunner); exceptions propagate."""
    from latentedit.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def error_line(r):
    """The one `error:` line of a CLI result that exited 2 (asserts both)."""
    lines = [line for line in r.output.strip().splitlines() if line.startswith("error:")]
    assert r.exit_code == 2 and len(lines) == 1, r.output
    return lines[0]


def assert_gan_resumes_bit_exactly(cfg, run_dir, before=3, after=2):
    """A GAN run saved after `before` steps and resumed takes the next `after` steps exactly as the
    run that never stopped (step losses, then every G, D and G_ema tensor)."""
    from latentedit.train.gan import GANTrainer

    a = GANTrainer(cfg, run_dir)
    for _ in range(before):
        a.train_step()
    a.save()
    b = GANTrainer(cfg, run_dir)
    assert b.resume() and b.step == before
    for _ in range(after):
        assert a.train_step() == b.train_step()
    for name in ("G", "D", "G_ema"):
        for (k, p), q in zip(a.modules()[name].state_dict().items(), b.modules()[name].state_dict().values()):
            assert torch.equal(p, q), (name, k)
