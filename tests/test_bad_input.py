"""Bad input gives ValueError/TypeError naming the quantity and the expected value, before any kernel runs."""

from __future__ import annotations

import pytest
import torch

from conftest import CONFORMANCE
from helpers import inputs, tiny_dit, tiny_mdt
from mdtblocks import MDTConfig, load_official


@pytest.fixture
def model():
    return tiny_mdt()


def test_wrong_channel_count(model):
    x, t, y = inputs(model)
    with pytest.raises(ValueError, match="2 channels .* in_channels=3"):
        model(x[:, :2], t, y)


def test_wrong_spatial_size(model):
    x, t, y = inputs(model)
    with pytest.raises(ValueError, match="12x12 but the model was built for 8x8"):
        model(torch.randn(2, 3, 12, 12), t, y)
    with pytest.raises(ValueError, match="not divisible by patch_size 2"):
        model(torch.randn(2, 3, 7, 7), t, y)


def test_size_not_divisible_by_patch_at_build():
    with pytest.raises(ValueError, match="input_size 9 is not divisible by patch_size 2"):
        MDTConfig(input_size=9, patch_size=2)


@pytest.mark.parametrize("bad", [-1, 6])
def test_labels_out_of_range(model, bad):
    x, t, y = inputs(model)
    y[0] = bad
    with pytest.raises(ValueError, match=r"labels y span .* expected values in \[0, 5\]"):
        model(x, t, y)


def test_null_class_only_where_the_model_has_one():
    no_null = tiny_mdt(class_dropout_prob=0.0)
    x, t, y = inputs(no_null)
    y[:] = 5
    with pytest.raises(ValueError, match=r"\[0, 4\].*no null class"):
        no_null(x, t, y)


def test_float_labels_and_non_tensors(model):
    x, t, y = inputs(model)
    with pytest.raises(TypeError):
        model(x, t, y.float())
    with pytest.raises(TypeError):
        model(x.numpy(), t, y)


def test_negative_and_nonfinite_timesteps(model):
    x, t, y = inputs(model)
    with pytest.raises(ValueError, match="non-negative"):
        model(x, torch.tensor([-1, 3]), y)
    with pytest.raises(ValueError, match="non-finite"):
        model(x, torch.tensor([float("nan"), 3.0]), y)


def test_batch_mismatch(model):
    x, t, y = inputs(model)
    with pytest.raises((ValueError, TypeError), match="t|shape"):
        model(x, t[:1], y)


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (torch.tensor([[0, 0, 3], [1, 2, 3]]), "duplicate"),
        (torch.tensor([[0, 1, 16], [1, 2, 3]]), r"expected indices in \[0, 16\)"),
        (torch.tensor([[0, 1, -1], [1, 2, 3]]), r"expected indices in \[0, 16\)"),
        (torch.tensor([[0, 1, 2]]), "(?s)ids_keep.*(batch=2|b=2)"),
        (torch.tensor([[0.0, 1.0], [1.0, 2.0]]), "(?s)ids_keep.*(integer|Int)"),
    ],
)
def test_bad_ids_keep(model, ids, message):
    x, t, y = inputs(model)
    with pytest.raises((ValueError, TypeError), match=message):
        model(x, t, y, ids_keep=ids)


def test_dit_rejects_ids_keep():
    dit = tiny_dit()
    x, t, y = inputs(dit)
    with pytest.raises(ValueError, match="no masked pass"):
        dit(x, t, y, ids_keep=torch.tensor([[0], [1]]))


def test_truncated_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "cut.pt"
    path.write_bytes((CONFORMANCE / "mdtv2_official.pt").read_bytes()[:5000])
    with pytest.raises(ValueError, match="cut.pt"):
        load_official(path)


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_official(tmp_path / "nope.pt")


class _Exploit:
    def __reduce__(self):
        return (open, (str(_Exploit.target), "w"))


def test_pickle_that_would_run_code_is_refused_without_running(tmp_path):
    _Exploit.target = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"pos_embed": torch.zeros(1), "payload": _Exploit()}, path)
    with pytest.raises(ValueError, match="evil.pt"):
        load_official(path)
    assert not _Exploit.target.exists()


def test_missing_unexpected_and_misshaped_keys_are_named():
    state = torch.load(CONFORMANCE / "mdtv1_official.pt", weights_only=True)
    broken = dict(state)
    del broken["final_layer.linear.bias"]
    broken["extra.weight"] = torch.zeros(1)
    broken["blocks.0.mlp.fc2.bias"] = torch.zeros(3)
    with pytest.raises(ValueError) as err:
        load_official(broken)
    text = str(err.value)
    missing, rest = text.split("unexpected keys")
    unexpected, misshaped = rest.split("mis-shaped")
    assert "final_layer.linear.bias" in missing
    assert "extra.weight" in unexpected
    assert "encoder.0.mlp.fc2.bias: checkpoint (3,)" in misshaped


def test_contradicting_config_is_refused():
    with pytest.raises(ValueError, match="hidden_size=128 contradicts"):
        load_official(CONFORMANCE / "mdtv2_official.pt", hidden_size=128)


def test_not_a_model_checkpoint():
    with pytest.raises(ValueError, match="not an official"):
        load_official({"foo": torch.zeros(1)})
    with pytest.raises(TypeError, match="(?s)(int|source)"):
        load_official(3)
    with pytest.raises(ValueError, match="'pos_embed' is a str"):
        load_official({"pos_embed": "not a tensor", "blocks.0.x": torch.zeros(1)})
