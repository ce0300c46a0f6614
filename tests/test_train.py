"""Local training produces reproducible deltas that improve the global model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from fedledger.errors import ConfigError, FormatError
from fedledger.learning.data import TabularDataset, load_dataset
from fedledger.learning.models import build_model, state_to_numpy
from fedledger.learning.train import LocalTrainer, TrainProgress, evaluate, train_centralized

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom_model.py"


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    # Tiny models run fastest on one thread, and CI shares two cores with other jobs.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits() -> TabularDataset:
    return load_dataset("digits")


def _same_bytes(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return list(a) == list(b) and all(a[k].tobytes() == b[k].tobytes() for k in a)


def test_delta_is_trained_minus_global(digits: TabularDataset) -> None:
    model = build_model("mlp_digits", seed=0)
    global_tensors = state_to_numpy(model)
    result = LocalTrainer(model, digits.X_train, digits.y_train).train(global_tensors, epochs=1)
    trained = state_to_numpy(model)
    assert list(result.delta) == list(global_tensors)
    for k, d in result.delta.items():
        assert d.dtype == np.float32 and d.shape == global_tensors[k].shape
        np.testing.assert_array_equal(d, trained[k] - global_tensors[k])
    assert result.num_samples == digits.n_train
    assert np.isfinite(result.loss) and result.metrics["steps"] == np.ceil(digits.n_train / 32)


def test_local_training_improves_accuracy_well_above_chance(digits: TabularDataset) -> None:
    model = build_model("mlp_digits", seed=0)
    global_tensors = state_to_numpy(model)
    trainer = LocalTrainer(model, digits.X_train, digits.y_train)
    before, _ = trainer.evaluate(global_tensors, digits.X_test, digits.y_test)
    result = trainer.train(global_tensors, epochs=3, lr=0.05, momentum=0.9, seed=1)
    trained = {k: global_tensors[k] + result.delta[k] for k in global_tensors}
    after, loss = trainer.evaluate(trained, digits.X_test, digits.y_test)
    assert before < 0.2
    assert after > 0.8
    assert result.loss < result.metrics["first_epoch_loss"]


def test_same_seed_gives_identical_delta_bytes(digits: TabularDataset) -> None:
    global_tensors = state_to_numpy(build_model("mlp_digits", seed=0))
    trainer = LocalTrainer(build_model("mlp_digits"), digits.X_train, digits.y_train)
    a = trainer.train(global_tensors, epochs=2, seed=7, optimizer="adam", lr=0.01)
    b = trainer.train(global_tensors, epochs=2, seed=7, optimizer="adam", lr=0.01)
    c = trainer.train(global_tensors, epochs=2, seed=8, optimizer="adam", lr=0.01)
    assert _same_bytes(a.delta, b.delta)
    assert not _same_bytes(a.delta, c.delta)


def test_dropout_in_a_user_model_is_reproducible_and_leaves_global_rng_alone(
    digits: TabularDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLE.parent))  # the operator installs it, and allows it
    model = build_model("custom_model:make_model", seed=0, allow=["custom_model:make_model"])
    global_tensors = state_to_numpy(model)
    trainer = LocalTrainer(model, digits.X_train, digits.y_train)
    torch.manual_seed(99)
    expected = torch.rand(2)
    torch.manual_seed(99)
    a = trainer.train(global_tensors, epochs=1, seed=3)
    assert torch.equal(torch.rand(2), expected)
    b = trainer.train(global_tensors, epochs=1, seed=3)
    assert _same_bytes(a.delta, b.delta)


def test_torch_dataset_and_dataloader_are_accepted_and_deterministic(
    digits: TabularDataset,
) -> None:
    dataset = TensorDataset(torch.from_numpy(digits.X_train), torch.from_numpy(digits.y_train))
    global_tensors = state_to_numpy(build_model("mlp_digits", seed=0))
    by_dataset = LocalTrainer(build_model("mlp_digits"), dataset)
    a = by_dataset.train(global_tensors, epochs=1, batch_size=64, seed=2)
    b = by_dataset.train(global_tensors, epochs=1, batch_size=64, seed=2)
    assert _same_bytes(a.delta, b.delta) and a.num_samples == digits.n_train
    loader = DataLoader(dataset, batch_size=50, shuffle=True)
    by_loader = LocalTrainer(build_model("mlp_digits"), loader)
    c = by_loader.train(global_tensors, epochs=1, seed=2)
    d = by_loader.train(global_tensors, epochs=1, seed=2)
    assert _same_bytes(c.delta, d.delta)
    assert c.metrics["steps"] == len(loader)


def test_progress_callback_sees_every_step_and_epoch_end(digits: TabularDataset) -> None:
    model = build_model("mlp_digits")
    events: list[TrainProgress] = []
    trainer = LocalTrainer(
        model, digits.X_train[:100], digits.y_train[:100], progress=events.append
    )
    trainer.train(state_to_numpy(model), epochs=2, batch_size=30)
    assert [e.step for e in events] == list(range(1, 9))
    assert all(e.total_steps == 8 and e.epochs == 2 for e in events)
    assert [e.epoch for e in events if e.epoch_done] == [0, 1]


def test_label_transform_rewrites_training_labels(digits: TabularDataset) -> None:
    model = build_model("mlp_digits", seed=0)
    global_tensors = state_to_numpy(model)
    trainer = LocalTrainer(model, digits.X_train, digits.y_train, label_transform=lambda y: 9 - y)
    result = trainer.train(global_tensors, epochs=3, lr=0.05, momentum=0.9)
    trained = {k: global_tensors[k] + result.delta[k] for k in global_tensors}
    acc, _ = evaluate(model, trained, digits.X_test, digits.y_test)
    flipped_acc, _ = evaluate(model, trained, digits.X_test, 9 - digits.y_test)
    assert acc < 0.1 < 0.8 < flipped_acc


def test_mismatched_global_tensors_are_a_format_error(digits: TabularDataset) -> None:
    trainer = LocalTrainer(build_model("mlp_digits"), digits.X_train, digits.y_train)
    wrong = state_to_numpy(build_model("mlp_digits", hidden=8))
    with pytest.raises(FormatError):
        trainer.train(wrong)


def test_bad_training_settings_are_config_errors(digits: TabularDataset) -> None:
    model = build_model("mlp_digits")
    trainer = LocalTrainer(model, digits.X_train, digits.y_train)
    g = state_to_numpy(model)
    with pytest.raises(ConfigError, match="optimizer"):
        trainer.train(g, optimizer="rmsprop")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="epochs"):
        trainer.train(g, epochs=0)
    with pytest.raises(ConfigError, match="labels"):
        LocalTrainer(model, digits.X_train, digits.y_train[:-1])
    with pytest.raises(ConfigError, match="need labels"):
        LocalTrainer(model, digits.X_train)


def test_centralized_baseline_reaches_high_accuracy(digits: TabularDataset) -> None:
    result = train_centralized(
        build_model("mlp_digits", seed=0),
        digits.X_train,
        digits.y_train,
        digits.X_test,
        digits.y_test,
        epochs=8,
        lr=0.01,
        optimizer="adam",
    )
    assert len(result.history) == 8
    assert result.accuracy > 0.9


def test_logistic_regression_learns_breast_cancer() -> None:
    ds = load_dataset("breast_cancer")
    result = train_centralized(
        build_model("logreg_breast_cancer", seed=0),
        ds.X_train,
        ds.y_train,
        ds.X_test,
        ds.y_test,
        epochs=5,
        lr=0.05,
    )
    assert result.accuracy > 0.9
