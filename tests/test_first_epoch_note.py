"""A network that kept its first epoch's weights because its validation loss only rose
after is noted by ``roadcast train`` (``models.forecasters.comparison.first_epoch_note``):
a level shift inside the validation part left an untrained LSTM champion unremarked."""

from __future__ import annotations

from models.forecasters.comparison import MIN_EPOCHS_FOR_NOTE, first_epoch_note
from models.nn.training import TrainHistory


def _history(best: int, epochs: int) -> TrainHistory:
    return TrainHistory(
        train_loss=[1.0 / (k + 1) for k in range(epochs)],
        valid_loss=[0.1 + 0.01 * abs(k + 1 - best) for k in range(epochs)],
        best_epoch=best,
    )


def test_a_first_epoch_kept_after_many_is_noted_naming_the_model_and_seed() -> None:
    note = first_epoch_note("lstm", 1, _history(1, 21))
    assert note is not None and "\n" not in note
    assert note.startswith("  note: lstm seed 1: its validation loss was lowest after the first")
    assert "of 21 epochs" in note and "level" in note


def test_a_later_best_epoch_a_short_run_or_no_history_is_not_noted() -> None:
    assert first_epoch_note("lstm", 0, _history(2, 21)) is None
    assert first_epoch_note("lstm", 0, _history(1, MIN_EPOCHS_FOR_NOTE - 1)) is None
    assert first_epoch_note("lstm", 0, _history(0, 21)) is None  # no validation: the last
    assert first_epoch_note("ar", 0, None) is None
