"""Built-in models, user factories only where allowed (and pinned), and the strict numpy <->
state bridge."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fedledger.errors import ConfigError, FormatError, ModelNotAllowed, ModelPinMismatch
from fedledger.learning.models import (
    available_models,
    build_model,
    count_parameters,
    numpy_to_state,
    state_to_numpy,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom_model.py"


@pytest.mark.parametrize(
    ("name", "params"),
    [("mlp_digits", 4_810), ("mlp_wide", 4_349_962), ("logreg_breast_cancer", 62)],
)
def test_builtin_models_have_the_documented_parameter_counts(name: str, params: int) -> None:
    assert name in available_models()
    assert count_parameters(build_model(name)) == params


def test_width_is_configurable() -> None:
    assert count_parameters(build_model("mlp_digits", hidden=128)) == 64 * 128 + 128 + 128 * 10 + 10


def test_same_seed_gives_identical_weights_and_another_seed_different_ones() -> None:
    a = state_to_numpy(build_model("mlp_digits", seed=5))
    b = state_to_numpy(build_model("mlp_digits", seed=5))
    c = state_to_numpy(build_model("mlp_digits", seed=6))
    assert all(a[k].tobytes() == b[k].tobytes() for k in a)
    assert any(a[k].tobytes() != c[k].tobytes() for k in a)


def test_building_a_model_leaves_the_global_rng_untouched() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_model("mlp_digits", seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_state_to_numpy_is_float32_contiguous_in_state_dict_order() -> None:
    model = build_model("mlp_digits")
    tensors = state_to_numpy(model)
    assert list(tensors) == list(model.state_dict())
    for array in tensors.values():
        assert array.dtype == np.float32 and array.flags.c_contiguous


def test_state_to_numpy_copies_so_training_does_not_change_a_snapshot() -> None:
    model = build_model("mlp_digits")
    snapshot = state_to_numpy(model)
    before = {k: v.copy() for k, v in snapshot.items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert all(np.array_equal(before[k], snapshot[k]) for k in snapshot)


def test_numpy_to_state_round_trips_exactly() -> None:
    source = state_to_numpy(build_model("mlp_digits", seed=1))
    target = build_model("mlp_digits", seed=2)
    numpy_to_state(target, source)
    out = state_to_numpy(target)
    assert all(out[k].tobytes() == source[k].tobytes() for k in source)


def test_numpy_to_state_rejects_a_wrong_shape_without_loading_anything() -> None:
    model = build_model("mlp_digits", seed=0)
    before = state_to_numpy(model)
    bad = state_to_numpy(build_model("mlp_digits", seed=1))
    bad["net.2.weight"] = np.zeros((3, 3), dtype=np.float32)
    with pytest.raises(FormatError, match=r"net\.2\.weight: shape \(3, 3\)"):
        numpy_to_state(model, bad)
    after = state_to_numpy(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_numpy_to_state_rejects_missing_and_unexpected_names() -> None:
    model = build_model("mlp_digits")
    tensors = state_to_numpy(model)
    tensors["extra.weight"] = tensors.pop("net.0.bias")
    with pytest.raises(FormatError, match=r"missing \['net\.0\.bias'\].*unexpected \['extra"):
        numpy_to_state(model, tensors)


def test_numpy_to_state_rejects_non_numeric_arrays() -> None:
    model = build_model("logreg_breast_cancer")
    tensors: dict[str, np.ndarray] = dict(state_to_numpy(model))
    tensors["net.0.bias"] = np.array(["a", "b"])
    with pytest.raises(FormatError, match="not numeric"):
        numpy_to_state(model, tensors)


def test_buffers_are_included_and_restored() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    tensors = state_to_numpy(model)
    assert "1.running_mean" in tensors and "1.num_batches_tracked" in tensors
    tensors["1.num_batches_tracked"] = np.array(7.0, dtype=np.float32)
    tensors["1.running_mean"] = np.arange(3, dtype=np.float32)
    numpy_to_state(model, tensors)
    state = model.state_dict()
    assert int(state["1.num_batches_tracked"]) == 7
    assert state["1.num_batches_tracked"].dtype == torch.int64
    assert torch.equal(state["1.running_mean"], torch.arange(3, dtype=torch.float32))


@pytest.fixture
def examples_importable(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """examples/ on sys.path, so ``custom_model:make_model`` is importable (as an operator would
    install it); the module is forgotten before and after."""
    monkeypatch.syspath_prepend(str(EXAMPLE.parent))
    sys.modules.pop("custom_model", None)
    yield
    sys.modules.pop("custom_model", None)


ALLOW = ["custom_model:make_model"]


def test_an_allowed_user_factory_builds_reproducible_weights(examples_importable: None) -> None:
    model = build_model("custom_model:make_model", allow=ALLOW, seed=0, hidden=8)
    assert isinstance(model, nn.Module)
    assert count_parameters(model) == 64 * 8 + 8 + 8 * 10 + 10
    again = build_model("custom_model:make_model", allow=ALLOW, seed=0, hidden=8)
    a, b = state_to_numpy(model), state_to_numpy(again)
    assert all(a[k].tobytes() == b[k].tobytes() for k in a)
    assert model(torch.zeros(2, 64)).shape == (2, 10)


def test_a_user_factory_that_is_not_allowed_is_refused_before_it_is_imported(
    examples_importable: None,
) -> None:
    with pytest.raises(ModelNotAllowed, match="--allow-model custom_model:make_model"):
        build_model("custom_model:make_model")
    assert "custom_model" not in sys.modules


def test_an_allowed_factory_is_checked_against_its_pinned_source(
    examples_importable: None,
) -> None:
    source_pin = hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()
    build_model("custom_model:make_model", allow=ALLOW, pin=source_pin)
    with pytest.raises(ModelPinMismatch, match="pinned to source sha256"):
        build_model("custom_model:make_model", allow=ALLOW, pin="0" * 64)


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("no_such_module_xyz:make", "cannot find model module"),
        ("custom_model:missing_factory", "has no attribute 'missing_factory'"),
        ("custom_model:not_a_model", "returned str, not a torch.nn.Module"),
        (f"{EXAMPLE}:make_model", "names a file"),
        ("custom_model.py:make_model", "names a file"),
        ("not_registered", "unknown model"),
    ],
)
def test_bad_model_references_are_config_errors(
    ref: str, message: str, examples_importable: None
) -> None:
    with pytest.raises(ConfigError, match=message):
        allowed = [ref] if ref.partition(":")[0].isidentifier() and ":" in ref else []
        build_model(ref, allow=allowed)


def test_factory_rejecting_arguments_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="rejected"):
        build_model("mlp_digits", no_such_argument=1)


def test_an_architecture_is_built_without_initialising_its_weights() -> None:
    """build_architecture gives the same names and shapes as build_model (weights to be loaded
    next); a module with a non-persistent buffer, which loading would not set, is built
    normally."""
    import torch
    from torch import nn

    from fedledger.learning.models import build_architecture, build_model, state_to_numpy

    arch = state_to_numpy(build_architecture("mlp_digits"))
    full = state_to_numpy(build_model("mlp_digits", seed=0))
    assert [(k, v.shape) for k, v in arch.items()] == [(k, v.shape) for k, v in full.items()]

    class WithTable(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 2)
            self.register_buffer("table", torch.arange(4.0), persistent=False)

    import types

    mod = types.ModuleType("fedledger_test_models")
    mod.__file__ = __file__  # an imported module answers for its own source (pinned: this file)
    mod.factory = WithTable  # type: ignore[attr-defined]
    sys.modules["fedledger_test_models"] = mod
    try:
        m = build_architecture(
            "fedledger_test_models:factory", allow=["fedledger_test_models:factory"]
        )
        assert torch.equal(m.table, torch.arange(4.0))
    finally:
        del sys.modules["fedledger_test_models"]
