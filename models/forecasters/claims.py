"""What a comparison's test part supports: each model against the champion, per horizon.

* The **champion** is the model whose kept seed has the lowest validation RMSE (the rule
  of ``pipeline.model_dir.choose_champion``; the test part chooses nothing).
* **Significance**: per horizon, a Diebold-Mariano test with a HAC variance
  (:mod:`models.significance`) of each model's per-window loss against the champion's,
  over the same test windows. A neural model's per-window loss is the mean over its seeds,
  as its reported metrics are.
* **Family**: a report makes one test per model and horizon, and a reader scans them all
  for an "ahead", so the verdicts use Holm-Bonferroni adjusted p-values over that whole
  family (the chance of any false "ahead"/"behind" in the table is at most 5 %, whatever
  the tests' dependence; horizons are strongly dependent, which Holm does not need).
  ``metrics.json`` keeps the raw ``p_value`` and adds ``p_value_adjusted``.
* **Seeds**: the test pairs seed-averaged losses, so it cannot see seeds that disagree.
  A significant result counts only when every seed of the model has a mean test loss on
  the same side of the champion's seed-averaged loss, and every seed of the champion on
  the other side of the model's; otherwise the verdict is "no significant difference"
  with ``verdict_reason`` "seeds disagree" (how a different seed could reverse it).
* **Champion regret**: the champion's test RMSE over the best model's, per horizon (1.0
  when validation picked the model that is best on the test part).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from models.significance import PairedTest, diebold_mariano, holm_family


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


def seeds_agree(
    runs_a: Sequence[Mapping[str, np.ndarray]],
    runs_b: Sequence[Mapping[str, np.ndarray]],
    horizon: str,
) -> bool:
    """Whether every seed of a is on the side of b's seed-averaged mean loss that a's
    seed average is on, and every seed of b on the other side of a's (over the windows
    the paired test uses: those where both seed averages are defined)."""
    a = np.array([run[horizon] for run in runs_a], dtype=np.float64)  # [seed, window]
    b = np.array([run[horizon] for run in runs_b], dtype=np.float64)
    kept = np.isfinite(a.mean(axis=0)) & np.isfinite(b.mean(axis=0))
    if not kept.any():
        return True
    per_a, per_b = a[:, kept].mean(axis=1), b[:, kept].mean(axis=1)
    side = np.sign(per_a.mean() - per_b.mean())
    return bool(
        np.all(np.sign(per_a - per_b.mean()) == side)
        and np.all(np.sign(per_a.mean() - per_b) == side)
    )


def paired_test(
    runs_a: Sequence[Mapping[str, np.ndarray]],
    runs_b: Sequence[Mapping[str, np.ndarray]],
    horizon: str,
    window: int,
) -> PairedTest:
    """Model a against model b at ``horizon`` (unadjusted): the Diebold-Mariano test of
    their seed-averaged per-window losses, with whether their seeds agree."""
    test = diebold_mariano(
        mean_window_losses(runs_a, horizon),
        mean_window_losses(runs_b, horizon),
        lag=int(horizon) + window - 1,
    )
    return replace(test, seeds_agree=seeds_agree(runs_a, runs_b, horizon))


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

    Returns ``{"champion", "significance": {model: {h: test}}, "regret": {h: {...}}}``;
    the tests' p-values are Holm-adjusted over every model and horizon, and their
    verdicts need the seeds to agree (see the module docstring).
    """
    out: dict[str, Any] = {"champion": champion, "significance": {}, "regret": {}}
    if champion is None or champion not in losses:
        return out
    horizons = list(test_rmse[champion])
    tests = {
        (name, h): paired_test(runs, losses[champion], h, window)
        for name, runs in losses.items()
        if name != champion
        for h in horizons
    }
    adjusted = holm_family(tests)
    for (name, h), test in adjusted.items():
        out["significance"].setdefault(name, {})[h] = test.to_dict()
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
