"""Published results that reports and benchmarks show beside roadcast's own numbers.

Copied from ``../shared/data/README.md`` (the data sets' README); none is re-run here.
Each entry carries its source and caveats, which are shown wherever its numbers are.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PublishedForecasts:
    """Published forecast errors on one data set.

    ``rows[model][steps] = (RMSE, MAE)``: pooled over the predicted steps ``1..steps``,
    original scale.
    """

    dataset: str
    rows: dict[str, dict[int, tuple[float, float]]]
    source: str


# T-GCN's chronological 80/20 protocol, 12 input steps of 5 minutes.
LOS_LOOP = PublishedForecasts(
    dataset="los-loop",
    rows={
        "T-GCN (published)": {3: (5.1264, 3.1802), 12: (7.27, 4.60)},
        "A3T-GCN (published)": {3: (5.0904, 3.1365), 12: (7.0990, 4.2343)},
        "GRU (published, A3T-GCN paper)": {3: (5.2182, 3.0602), 12: (7.6621, 4.5186)},
    },
    source=(
        "published numbers as listed in shared/data/README.md: T-GCN (Zhao et al., IEEE T-ITS "
        "2019; 15-min row re-scored from the authors' saved predictions, 60-min row not "
        "verified), A3T-GCN and its GRU baseline (Zhu et al., ISPRS IJGI 2021). Not re-run "
        "here; they come from the authors' own training choices (e.g. how epochs were "
        "selected), which may differ from this validation-only protocol."
    ),
)

# Published forecast results by data set name (``metrics.json``'s ``dataset``).
FORECASTS: dict[str, PublishedForecasts] = {LOS_LOOP.dataset: LOS_LOOP}

# NAB's published detectors per category (standard profile), from ../shared/data/README.md.
NAB_CATEGORIES: dict[str, dict[str, float]] = {
    "realTraffic": {
        "contextOSE": 91.2,
        "ARTime": 88.3,
        "Numenta HTM": 83.2,
        "windowedGaussian": 82.0,
        "random": 24.4,
    },
    "realAWSCloudwatch": {
        "contextOSE": 72.1,
        "ARTime": 69.9,
        "Numenta HTM": 73.4,
        "windowedGaussian": 31.2,
        "random": 18.9,
    },
    "realAdExchange": {
        "contextOSE": 72.8,
        "ARTime": 75.2,
        "Numenta HTM": 76.9,
        "windowedGaussian": 61.2,
        "random": 0.9,
    },
    "realTweets": {
        "contextOSE": 74.5,
        "ARTime": 83.2,
        "Numenta HTM": 69.3,
        "windowedGaussian": 51.4,
        "random": 26.4,
    },
    "artificialWithAnomaly": {
        "contextOSE": 73.9,
        "ARTime": 70.3,
        "Numenta HTM": 77.8,
        "windowedGaussian": 8.0,
        "random": 74.3,
    },
}
NAB_CATEGORIES_MEAN: dict[str, float] = {
    "contextOSE": 76.9,
    "ARTime": 77.4,
    "Numenta HTM": 76.1,
    "windowedGaussian": 46.8,
    "random": 29.0,
}
NAB_CATEGORIES_SOURCE = (
    "../shared/data/README.md: published NAB detectors re-scored per category with NAB's own "
    "scorer, standard profile, each detector's threshold optimised on that category alone "
    "(which favours them: a threshold chosen leave-one-category-out is the stricter test); "
    "all use NAB's convention of handing every detector the file's minimum and maximum "
    "before it starts. Cited, not run here."
)
