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

from models.significance import diebold_mariano


def validation_champion(valid_rmse: Mapping[str, Sequence[float]]) -> str | None:
    """The model whose best seed has the lowest validation RMSE (None when none has one)."""
    scores = {
        name: min((v for v in values if v is not None and math.isfinite(v)), default=math.inf)
        for name, values in valid_rmse.items()
    }
    ranked = sorted((s, n) for n, s in scores.items() if math.isfinite(s))
    return ranked[0][1] if ranked else None


def mean_window_losses(runs: Sequence[Mapping[str, np.ndarray]], horizon: str) -> np.ndarray:
    """Per-window loss over steps ``1..horizon`` averaged over runs (each run's
    :func:`models.significance.window_losses` per horizon, one model's seeds on the same
    windows): float64 ``[n]``."""
    return np.mean([run[horizon] for run in runs], axis=0)


def champion_claims(
    losses: Mapping[str, Sequence[Mapping[str, np.ndarray]]],
    test_rmse: Mapping[str, Mapping[str, float]],
    champion: str | None,
    *,
    window: int,
) -> dict[str, Any]:
    """Significance against the champion and the champion's regret.

    Parameters
    ----------
    losses : per model, its seeds' per-window losses per horizon (``"3"``...; at least
        those of ``test_rmse``) on the same test windows.
    test_rmse : per model, its pooled test RMSE keyed by horizon (``"3"``, ``"12"``...).
    champion : the validation champion (None: nothing to compare with).
    window : the protocol's input window (windows this close share inputs).

    Returns ``{"champion", "significance": {model: {h: test}}, "regret": {h: {...}}}``.
    """
    out: dict[str, Any] = {"champion": champion, "significance": {}, "regret": {}}
    if champion is None or champion not in losses:
        return out
    horizons = list(test_rmse[champion])
    reference = {h: mean_window_losses(losses[champion], h) for h in horizons}
    for name, runs in losses.items():
        if name == champion:
            continue
        out["significance"][name] = {
            h: diebold_mariano(
                mean_window_losses(runs, h), reference[h], lag=int(h) + window - 1
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
