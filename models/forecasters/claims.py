"""What a comparison's test part supports: each model against the champion, per horizon.

* The **champion** is the model whose kept seed has the lowest validation RMSE (the rule
  of ``pipeline.model_dir.choose_champion``; the test part chooses nothing).
* **Significance**: per horizon, a Diebold-Mariano test with a HAC variance
  (:mod:`models.significance`) of each model's per-window loss against the champion's,
  over the same test windows. A neural model's per-window loss is the mean over its seeds,
  as its reported metrics are.
* **Champion regret**: the champion's test RMSE over the best model's, per horizon (1.0
  when validation picked the model that is best on the test part).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from models.significance import diebold_mariano, window_losses


def validation_champion(valid_rmse: Mapping[str, Sequence[float]]) -> str | None:
    """The model whose best seed has the lowest validation RMSE (None when none has one)."""
    scores = {
        name: min((v for v in values if v is not None and math.isfinite(v)), default=math.inf)
        for name, values in valid_rmse.items()
    }
    ranked = sorted((s, n) for n, s in scores.items() if math.isfinite(s))
    return ranked[0][1] if ranked else None


def mean_window_losses(
    backtests: Sequence[tuple[np.ndarray, np.ndarray]], steps: int
) -> np.ndarray:
    """Per-window loss over steps ``1..steps`` averaged over runs (``(actual, forecast)``
    pairs of one model's seeds on the same windows): float64 ``[n]``."""
    return np.mean([window_losses(a, f, steps) for a, f in backtests], axis=0)


def champion_claims(
    backtests: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]],
    test_rmse: Mapping[str, Mapping[str, float]],
    champion: str | None,
    *,
    window: int,
) -> dict[str, Any]:
    """Significance against the champion and the champion's regret.

    Parameters
    ----------
    backtests : per model, its seeds' ``(actual, forecast)`` ``[n, horizon, node]`` on the
        same test windows.
    test_rmse : per model, its pooled test RMSE keyed by horizon (``"3"``, ``"12"``...).
    champion : the validation champion (None: nothing to compare with).
    window : the protocol's input window (windows this close share inputs).

    Returns ``{"champion", "significance": {model: {h: test}}, "regret": {h: {...}}}``.
    """
    out: dict[str, Any] = {"champion": champion, "significance": {}, "regret": {}}
    if champion is None or champion not in backtests:
        return out
    horizons = list(test_rmse[champion])
    reference = {h: mean_window_losses(backtests[champion], int(h)) for h in horizons}
    for name, runs in backtests.items():
        if name == champion:
            continue
        out["significance"][name] = {
            h: diebold_mariano(
                mean_window_losses(runs, int(h)), reference[h], lag=int(h) + window - 1
            ).to_dict()
            for h in horizons
        }
    for h in horizons:
        scores = {
            n: float(r[h])
            for n, r in test_rmse.items()
            if r.get(h) is not None and math.isfinite(r[h])
        }
        if champion not in scores or not scores:
            continue
        best = min(scores, key=lambda n: (scores[n], n))
        out["regret"][h] = {
            "regret": scores[champion] / scores[best] if scores[best] > 0 else float("nan"),
            "champion_rmse": scores[champion],
            "best": best,
            "best_rmse": scores[best],
        }
    return out
