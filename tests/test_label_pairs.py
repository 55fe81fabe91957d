"""The label-pair term: a code with one accessory label switched should stay the same face."""
import pytest
import torch

from latentedit import world
from latentedit.errors import InputError
from latentedit.models.stylegan2 import label_spans
from latentedit.train.gan import GANConfig, GANTrainer
from latentedit.train.label_pairs import FREE_SHARE, pair_change, switched_labels
from latentedit.world.labels import face_labels, label_prior
from latentedit.world.params import sample_params

from conftest import assert_gan_resumes_bit_exactly, error_line, run

SMALL = dict(resolution=16, channel_base=256, channel_max=32, batch=4)
GROUPS = ["glasses", "mask", "hair_style", "beard"]


def test_the_worlds_accessory_switches_are_free_and_a_changed_face_is_not():
    p = sample_params(32, seed=3, p_glasses=0, p_sunglasses=0, p_mask=0, p_beard=0, p_hat=0)
    render = lambda q: world.render(q, resolution=64).image  # noqa: E731
    bare = render(p)
    for group, change in (("glasses", dict(glasses="frame")), ("glasses", dict(glasses="sun")),
                          ("mask", dict(mask=1)), ("hat", dict(hat=1)), ("beard", dict(beard=1.0))):
        assert pair_change(bare, render(p.replace(**change)), FREE_SHARE[group]).max() < 1e-3, change
    # the same faces with another face's skin: the change is the whole face, beyond any free share
    other_skin = pair_change(bare, render(p.replace(skin=p.skin.roll(1, 0))), FREE_SHARE["glasses"])
    assert (other_skin > 5e-3).float().mean() > 0.5


def test_switched_labels_switch_one_accessory_group_per_row():
    prior = label_prior(GROUPS)
    c = face_labels(sample_params(400, seed=1), GROUPS)
    spans = dict(zip(GROUPS, label_spans(prior)))
    c2, free = switched_labels(c, prior, GROUPS, torch.Generator().manual_seed(0))
    again, _ = switched_labels(c, prior, GROUPS, torch.Generator().manual_seed(0))
    assert torch.equal(c2, again)
    start, end = spans["hair_style"]
    assert torch.equal(c2[:, start:end], c[:, start:end])
    seen = set()
    for i in range(len(c)):
        changed = [g for g, (s, e) in spans.items() if not torch.equal(c[i, s:e], c2[i, s:e])]
        assert len(changed) == 1, (i, changed)
        (g,) = changed
        s, e = spans[g]
        assert c2[i, s:e].sum() == (0 if c[i, s:e].sum() else 1)  # on -> none, none -> one class
        assert free[i] == pytest.approx(FREE_SHARE[g])
        seen.add((g, int(c2[i, s:e].argmax()) if c2[i, s:e].sum() else -1))
    assert seen >= {("glasses", 0), ("glasses", 1), ("glasses", -1), ("mask", 0), ("mask", -1), ("beard", 0)}
    assert switched_labels(c[:, 3:10], label_prior(["hair_style"]), ["hair_style"], torch.Generator()) is None


def test_the_term_is_zero_without_label_offsets_and_pulls_on_them(tmp_path):
    t = GANTrainer(GANConfig(**SMALL, labels=["glasses", "mask"], label_pair_weight=1.0), tmp_path)
    assert float(t._label_pair_loss(4).detach()) == 0.0  # zero offsets: both labels map to the same W
    with torch.no_grad():
        t.G.mapping.label_offset.weight.normal_()
    loss = t._label_pair_loss(4)
    assert float(loss.detach()) > 1e-4
    loss.backward()
    assert t.G.mapping.label_offset.weight.grad.abs().sum() > 0
    t.G.zero_grad(set_to_none=True)
    assert "loss_pair" in t.train_step()  # step 0: a G regularisation step
    assert "loss_pair" not in t.train_step()


def test_a_resumed_run_with_the_term_continues_bit_exactly(tmp_path):
    # steps 3 and 4 resumed: step 4 holds the term
    assert_gan_resumes_bit_exactly(GANConfig(**SMALL, labels=["glasses", "mask"], label_pair_weight=0.5), tmp_path)


@pytest.mark.parametrize("cfg, message", [
    (dict(labels=["glasses"], label_pair_weight=-1.0), "label_pair_weight must be a number >= 0"),
    (dict(labels=["hair_style"], label_pair_weight=1.0), "needs one of glasses, mask, hat, beard"),
    (dict(label_pair_weight=1.0), "needs one of glasses, mask, hat, beard"),
])
def test_the_weight_is_checked(cfg, message):
    with pytest.raises(InputError, match=message):
        GANConfig(**SMALL, **cfg)


def test_cli_refuses_the_term_without_an_accessory_label(tmp_path):
    r = run("train", "gan", "--out", tmp_path / "r", "--label-pair-weight", "1", "--kimg", "0.004")
    assert "label_pair_weight switches an accessory label" in error_line(r)


def test_the_log_records_the_weight(tmp_path):
    import json

    t = GANTrainer(GANConfig(**SMALL, labels=["mask"], label_pair_weight=0.5), tmp_path)
    t.train(0.004, snapshot_kimg=0.004, progress=lambda *_: None)
    entry = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[-1])
    assert entry["label_pair_weight"] == 0.5 and "loss_pair" in entry
