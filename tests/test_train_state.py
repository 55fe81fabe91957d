"""The run folder's rules as library functions (latentedit.train.state): a saved state is resumed
or left alone, a resumed run keeps its config.json, a trained network is exported only into a
bundle of the generator it was trained through."""
import json
import shutil

import pytest
import torch

from latentedit.errors import FormatError, InputError
from latentedit.formats import Networks, bundle, load_generator, save_networks
from latentedit.formats.directions import generator_hash
from latentedit.models.discriminator import Discriminator
from latentedit.models.stylegan2 import DiscriminatorConfig, Generator, GeneratorConfig
from latentedit.train.encoder import EncoderTrainConfig
from latentedit.train.evaluators import EvalTrainConfig
from latentedit.train.gan import GANConfig
from latentedit.train.state import check_export, check_new_run, resume_config, run_config, start_run

SMALL = dict(resolution=16, channel_base=512, channel_max=32)


def _saved_run(tmp_path, config):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(config))
    return out


def test_a_saved_state_is_resumed_or_left_alone(tmp_path):
    check_new_run(tmp_path, resume=False)  # nothing saved yet
    (tmp_path / "state.json").write_text("{}")
    with pytest.raises(InputError, match="already holds a run: pass --resume"):
        check_new_run(tmp_path, resume=False)
    check_new_run(tmp_path, resume=True)


def test_a_resumed_run_keeps_its_config_and_refuses_a_conflict(tmp_path):
    out = _saved_run(tmp_path, GANConfig(**SMALL, batch=4).to_dict())
    given = dict(resolution=64, batch=8)  # the command line's defaults, not asked for
    assert run_config(GANConfig, out, given, resume=True) == GANConfig(**SMALL, batch=4)
    assert run_config(GANConfig, out, given, resume=False).resolution == 64  # a new run takes `given`
    with pytest.raises(InputError, match="--batch 8 conflicts with the run's saved 4"):
        run_config(GANConfig, out, given, explicit={"batch"}, resume=True)
    assert resume_config(out, {"batch": 4}, explicit={"batch"})["batch"] == 4  # asked for and agreeing
    assert resume_config(tmp_path / "new", given, explicit={"batch"}) is None


def test_settings_a_resume_may_change_take_the_given_values(tmp_path):
    out = _saved_run(tmp_path, EncoderTrainConfig(steps=10, batch=4, snapshot=5).to_dict())
    given = dict(steps=20, batch=4, snapshot=7)
    cfg = run_config(EncoderTrainConfig, out, given, explicit={"steps", "batch"}, resume=True,
                     changes=("steps", "snapshot"))
    assert (cfg.steps, cfg.batch, cfg.snapshot) == (20, 4, 5)  # snapshot not asked for: the saved one


@pytest.mark.parametrize("text,words", [("{", "not valid JSON"), ("[1, 2]", "holds no encoder"),
                                        ('{"flavour": 1}', "unknown EncoderTrainConfig keys"),
                                        ('{"truncation": 5}', "not a usable encoder"),   # tuple(5): a TypeError
                                        ('{"batch": 1}', "batch must be")])
def test_a_corrupt_saved_config_is_one_input_error(tmp_path, text, words):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(text)
    with pytest.raises((InputError, FormatError), match=words):  # FormatError: not JSON
        run_config(EncoderTrainConfig, out, {"steps": 3}, resume=True, what="encoder")


def test_every_training_config_refuses_unknown_missing_and_mistyped_keys():
    for cls, good in ((GANConfig, {}), (EncoderTrainConfig, {}), (EvalTrainConfig, {"kind": "attributes"})):
        assert cls.from_dict(good) == cls(**good)
        with pytest.raises(InputError, match="unknown"):
            cls.from_dict({**good, "flavour": 1})
    with pytest.raises(InputError, match="kind"):
        EvalTrainConfig.from_dict({})                      # a required key missing
    with pytest.raises(InputError, match="EncoderTrainConfig"):
        EncoderTrainConfig.from_dict({"betas": 0.9})       # not a pair


def _bundle(path, seed, with_d=False):
    torch.manual_seed(seed)
    G = Generator(GeneratorConfig(**SMALL)).eval()
    D = Discriminator(DiscriminatorConfig(**SMALL)).eval() if with_d else None
    save_networks(Networks("bundle", "test", G=G, D=D), path)
    return generator_hash(G)


def test_export_only_into_a_bundle_of_the_same_generator(tmp_path):
    source, other = tmp_path / "source", tmp_path / "other"
    generator = _bundle(source, 0, with_d=True)
    _bundle(other, 1)
    check_export(generator, source, source, "encoder")                # the training bundle itself
    check_export(generator, source, tmp_path / "new", "encoder")      # a new folder
    copy = tmp_path / "copy"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("D.*"))  # listed D file left out
    check_export(generator, source, copy, "encoder")
    assert torch.equal(load_generator(copy).mapping.w_avg, load_generator(source).mapping.w_avg)
    with pytest.raises(InputError, match="holds another generator than .*the offset network was trained through"):
        check_export(generator, source, other, "offset network")
    no_g = tmp_path / "evaluators_only"
    shutil.copytree(other, no_g)
    manifest = bundle.read_manifest(no_g)
    del manifest["networks"]["G"]
    (no_g / "bundle.json").write_text(json.dumps(manifest))
    check_export(generator, source, no_g, "encoder")                  # no generator yet


class _Trainer:
    def __init__(self, saved):
        self.saved, self.calls = saved, []

    def resume(self):
        self.calls.append("resume")
        return self.saved

    def init_from(self, path):
        self.calls.append(f"init_from {path}")


@pytest.mark.parametrize("saved,resume,init_from,resumed,calls", [
    (True, True, "b", True, ["resume"]),                       # a resumed run ignores the warm start
    (False, True, "b", False, ["resume", "init_from b"]),      # nothing saved yet: warm start
    (True, False, "b", False, ["init_from b"]),
    (True, False, None, False, [])])
def test_start_run_resumes_else_warm_starts(saved, resume, init_from, resumed, calls):
    t = _Trainer(saved)
    assert start_run(t, resume, init_from) is resumed and t.calls == calls
