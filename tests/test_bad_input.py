"""Bad input gives ValueError/TypeError naming the value and what was expected, before any kernel runs.

Every test matches the library's own message. The suite runs under the jaxtyping import hook, which
answers first for wrong dtypes, wrong batch sizes and wrong argument types; there (``hooked``) the
test checks that the hook's error names the parameter and its expected type instead, and
``tests/test_bad_input_no_hook.py`` runs this file again without the hook, as users run the library,
so that the library's messages are what is checked.
"""

from __future__ import annotations

import re

import pytest
import torch

from conftest import CONFORMANCE
from helpers import inputs, tiny_dit, tiny_mdt
from mdtblocks import MDTConfig, load_official


@pytest.fixture
def model():
    return tiny_mdt()


@pytest.fixture
def hooked(request) -> bool:
    """Whether the jaxtyping import hook instruments mdtblocks in this run (pyproject addopts)."""
    return bool(request.config.getoption("jaxtyping_packages", default=None))


def library_error(hooked: bool, exc: type[Exception], message: str, param: str, expected_type: str):
    """``pytest.raises`` for the library's own message, or for the hook's when the hook answers first."""
    if hooked:
        return pytest.raises(
            TypeError, match=rf"(?s)parameter '{param}'.*Expected type: .*{re.escape(expected_type)}"
        )
    return pytest.raises(exc, match=message)


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


def test_float_labels(model, hooked):
    x, t, y = inputs(model)
    with library_error(hooked, TypeError, r"y must hold integer class labels, got dtype torch\.float32", "y", "Int["):
        model(x, t, y.float())


def test_non_tensor_input(model, hooked):
    x, t, y = inputs(model)
    with library_error(hooked, TypeError, r"^x must be a torch\.Tensor, got ndarray$", "x", "Float[Tensor"):
        model(x.numpy(), t, y)


def test_any_finite_time_is_embedded_but_nonfinite_is_refused(model):
    """Each objective owns its time: negative and fractional times are embedded (EDM's log-sigma, flow's t)."""
    x, t, y = inputs(model)
    assert torch.isfinite(model(x, torch.tensor([-1.5, 0.25]), y)).all()
    assert torch.isfinite(model(x, torch.tensor([-1, 3]), y)).all()
    with pytest.raises(ValueError, match=r"timesteps t must be finite, got nan \(1 non-finite\)"):
        model(x, torch.tensor([float("nan"), 3.0]), y)
    with pytest.raises(ValueError, match=r"timesteps t must be finite, got inf \(2 non-finite\)"):
        model(x, torch.tensor([float("inf"), float("inf")]), y)


@pytest.mark.parametrize("name", ["t", "y"])
def test_batch_mismatch(model, hooked, name):
    x, t, y = inputs(model)
    args = {"t": t, "y": y}
    args[name] = args[name][:1]
    message = rf"^{name} must have shape \(2,\) to match x, got \(1,\)$"
    with library_error(hooked, ValueError, message, name, "Tensor, 'b'"):
        model(x, args["t"], args["y"])


def test_timesteps_with_an_extra_axis(model, hooked):
    x, t, y = inputs(model)
    with library_error(hooked, ValueError, r"^t must have shape \(2,\) to match x, got \(2, 1\)$", "t", "Tensor, 'b'"):
        model(x, t[:, None], y)


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (torch.tensor([[0, 0, 3], [1, 2, 3]]), r"duplicate indices within a row: row 0 holds index 0 more than once"),
        (torch.tensor([[0, 1, 2], [3, 5, 5]]), r"duplicate indices within a row: row 1 holds index 5 more than once"),
        (torch.tensor([[0, 1, 16], [1, 2, 3]]), r"ids_keep values span \[0, 16\], expected indices in \[0, 16\)"),
        (torch.tensor([[0, 1, -1], [1, 2, 3]]), r"ids_keep values span \[-1, 3\], expected indices in \[0, 16\)"),
    ],
)
def test_bad_ids_keep_values(model, ids, message):
    x, t, y = inputs(model)
    with pytest.raises(ValueError, match=message):
        model(x, t, y, ids_keep=ids)


def test_ids_keep_for_another_batch(model, hooked):
    x, t, y = inputs(model)
    message = r"^ids_keep has shape \(1, 3\), expected \(batch=2, k\)$"
    with library_error(hooked, ValueError, message, "ids_keep", "Int[Tensor, 'b k']"):
        model(x, t, y, ids_keep=torch.tensor([[0, 1, 2]]))


def test_float_ids_keep(model, hooked):
    x, t, y = inputs(model)
    message = r"^ids_keep must be an integer tensor \(int64\), got dtype torch\.float32$"
    with library_error(hooked, TypeError, message, "ids_keep", "Int[Tensor, 'b k']"):
        model(x, t, y, ids_keep=torch.tensor([[0.0, 1.0], [1.0, 2.0]]))


def test_ids_keep_keeping_too_many_tokens(model):
    x, t, y = inputs(model)
    with pytest.raises(ValueError, match=r"ids_keep keeps 17 tokens per sample, expected between 1 and 16"):
        model(x, t, y, ids_keep=torch.arange(17).repeat(2, 1))


def test_dit_rejects_ids_keep():
    dit = tiny_dit()
    x, t, y = inputs(dit)
    with pytest.raises(ValueError, match=r"^DiT has no masked pass; ids_keep must be None$"):
        dit(x, t, y, ids_keep=torch.tensor([[0], [1]]))


def test_truncated_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "cut.pt"
    path.write_bytes((CONFORMANCE / "mdtv2_official.pt").read_bytes()[:5000])
    with pytest.raises(ValueError, match=r"cannot read checkpoint .*cut\.pt: the file is truncated or corrupt"):
        load_official(path)


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"checkpoint .*nope\.pt does not exist"):
        load_official(tmp_path / "nope.pt")


class _Exploit:
    def __reduce__(self):
        return (open, (str(_Exploit.target), "w"))


def test_pickle_that_would_run_code_is_refused_without_running(tmp_path):
    _Exploit.target = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"pos_embed": torch.zeros(1), "payload": _Exploit()}, path)
    with pytest.raises(ValueError, match=r"refused to load .*evil\.pt: it is not a plain tensor checkpoint \(its pickle would run code\)"):
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
    with pytest.raises(ValueError, match=r"hidden_size=128 contradicts the checkpoint, whose weights say hidden_size=64"):
        load_official(CONFORMANCE / "mdtv2_official.pt", hidden_size=128)


def test_not_a_model_checkpoint(hooked):
    with pytest.raises(ValueError, match=r"not an official MDT, MDTv2 or DiT checkpoint: no 'blocks\.\*'"):
        load_official({"foo": torch.zeros(1)})
    with library_error(
        hooked, TypeError, r"^expected a checkpoint path or a state dict, got int$", "source", "str | os.PathLike"
    ):
        load_official(3)
    with pytest.raises(ValueError, match="entry 'pos_embed' is a str, expected a tensor"):
        load_official({"pos_embed": "not a tensor", "blocks.0.x": torch.zeros(1)})
