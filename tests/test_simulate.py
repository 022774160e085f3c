"""The built-in road-network simulator: determinism, realism checks, labels, scale."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.data.graph import RoadGraph
from pipeline.data.simulate import LA_BOX, SimulationError, simulate_network


@pytest.fixture(scope="module")
def week():
    return simulate_network(200, 7.0, seed=3)


def test_shape_grid_and_contract(week):
    assert week.values.shape == (2016, 200)
    assert week.freq == pd.Timedelta("5min")
    assert str(week.timestamps.tz) == "UTC"
    assert week.timestamps[0].day_of_week == 0  # starts on a Monday
    assert len(set(week.sensor_ids)) == 200
    assert week.name == "simulated"


def test_same_seed_same_panel_other_seed_differs(week):
    again = simulate_network(200, 7.0, seed=3)
    np.testing.assert_array_equal(week.values, again.values)
    np.testing.assert_array_equal(week.mask, again.mask)
    assert week.events == again.events
    np.testing.assert_array_equal(week.graph.edge_index, again.graph.edge_index)
    other = simulate_network(200, 7.0, seed=4)
    assert not np.array_equal(np.nan_to_num(week.values), np.nan_to_num(other.values))


def test_speeds_are_plausible_mph(week):
    observed = week.values[week.mask]
    assert observed.min() >= 0.0 and observed.max() <= 85.0
    assert 58.0 < np.median(observed) < 70.0  # free flow most of the day


def test_weekday_peaks_and_quiet_weekend(week):
    ts = week.timestamps
    slow = np.nanmean(np.where(week.mask, week.values < 40.0, np.nan), axis=1)  # [time]
    share = pd.Series(slow, index=ts)
    weekday = share[ts.day_of_week < 5]
    by_hour = weekday.groupby(weekday.index.hour).mean()
    night = by_hour.loc[[1, 2, 3]].mean()
    assert by_hour.loc[[7, 8]].mean() > night + 0.05  # morning peak
    assert by_hour.loc[[17, 18]].mean() > night + 0.05  # evening peak
    weekend = share[ts.day_of_week >= 5]
    assert (
        weekend.groupby(weekend.index.hour).mean().loc[[7, 8, 17, 18]].mean()
        < by_hour.loc[[7, 8, 17, 18]].mean()
    )


def test_graph_links_corridors_with_distances(week):
    graph = week.graph
    assert isinstance(graph, RoadGraph)
    assert graph.has_distances and graph.is_symmetric
    assert graph.num_nodes == 200
    assert 0.3 < np.median(graph.distance_km) < 2.5
    (lat_lo, lat_hi), (lon_lo, lon_hi) = LA_BOX
    # Corridors start in the box and run at most ~50 km (25 sensors x 1.8 km) from it.
    assert np.all((week.coords[:, 0] > lat_lo - 0.5) & (week.coords[:, 0] < lat_hi + 0.5))
    assert np.all((week.coords[:, 1] > lon_lo - 0.6) & (week.coords[:, 1] < lon_hi + 0.6))
    # Corridors are joined by interchanges: one connected network, no isolated sensor.
    from scipy.sparse.csgraph import connected_components

    n_parts, _ = connected_components(graph.adjacency(), directed=False)
    assert n_parts < 200 / 25  # fewer pieces than corridors
    assert np.bincount(graph.edge_index[1], minlength=200).min() >= 1


def test_congestion_travels_upstream():
    """Upstream sensors of a corridor jam later than sensors near the bottleneck."""
    panel = simulate_network(
        25, 1.0, seed=7, noise_mph=0.0, incidents_per_day=0.0, faults_per_day=0.0, dropout=0.0
    )
    v = panel.values  # one corridor, sensor 0 most upstream
    drop = v.max(axis=0) - v.min(axis=0)
    jammed = np.flatnonzero(drop > 15.0)
    assert jammed.size >= 3
    onset = np.array([np.argmax(v[:, k] < v[:, k].max() - 10.0) for k in jammed])
    # Going upstream (smaller index) the jam starts no earlier, and strictly later overall.
    upstream_first = jammed.min()
    near_bottleneck = jammed.max()
    assert onset[jammed == upstream_first][0] > onset[jammed == near_bottleneck][0]


def test_incident_labels_match_slowdowns():
    panel = simulate_network(
        100, 2.0, seed=11, incidents_per_day=3.0, faults_per_day=0.0, dropout=0.0, noise_mph=0.0
    )
    calm = simulate_network(
        100, 2.0, seed=11, incidents_per_day=0.0, faults_per_day=0.0, dropout=0.0, noise_mph=0.0
    )
    incidents = [e for e in panel.events if e.kind == "incident"]
    assert incidents
    col = {s: k for k, s in enumerate(panel.sensor_ids)}
    labelled = np.zeros(panel.values.shape, dtype=bool)
    for event in incidents:
        assert event.start <= event.end and event.sensors
        rows = (panel.timestamps >= event.start) & (panel.timestamps <= event.end)
        labelled[np.ix_(rows, [col[s] for s in event.sensors])] = True
        first = col[event.sensors[0]]  # the incident's own sensor
        assert (panel.values[rows, first] < calm.values[rows, first] - 1.0).any()
    # Outside the labels the incident run equals the incident-free run.
    changed = panel.values < calm.values - 1e-3
    assert not (changed & ~labelled).any()


def test_faults_are_labelled_and_visible():
    panel = simulate_network(
        100, 3.0, seed=5, faults_per_day=20.0, incidents_per_day=0.0, dropout=0.0
    )
    faults = [e for e in panel.events if e.kind == "fault"]
    assert len(faults) > 20
    col = {s: k for k, s in enumerate(panel.sensor_ids)}
    kinds = set()
    for event in faults:
        assert len(event.sensors) == 1
        rows = (panel.timestamps >= event.start) & (panel.timestamps <= event.end)
        v, m = panel.values[rows, col[event.sensors[0]]], panel.mask[rows, col[event.sensors[0]]]
        if not m.any():
            kinds.add("missing")
            assert np.isnan(v).all()
        elif np.all(v[m] == 0.0):
            kinds.add("zeros")
        elif np.unique(v[m]).size == 1:
            kinds.add("stuck")
    assert kinds == {"missing", "zeros", "stuck"}
    # Missing readings are only ever NaN with mask False, never a silent number.
    assert np.isnan(panel.values[~panel.mask]).all()
    # Without faults and dropout nothing is missing.
    clean = simulate_network(50, 1.0, seed=5, faults_per_day=0.0, dropout=0.0)
    assert clean.mask.all()


def test_scales_to_20k_sensors_for_a_few_hours():
    panel = simulate_network(20_000, 3 / 24, seed=1)
    assert panel.values.shape == (36, 20_000)
    assert panel.graph.num_nodes == 20_000
    assert panel.values.dtype == np.float32


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sensors": 0}, "sensors"),
        ({"sensors": 2.5}, "sensors"),
        ({"days": 0}, "days"),
        ({"days": float("nan")}, "days"),
        ({"freq_minutes": 0}, "freq_minutes"),
        ({"incidents_per_day": -1}, "incidents_per_day"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(SimulationError, match=message):
        simulate_network(**kwargs)


# ---------------------------------------------------------------------- regimes


def test_counts_regime_has_a_strong_daily_cycle_of_whole_numbers():
    panel = simulate_network(40, 7.0, seed=2, kind="counts", coupling=0.3, faults_per_day=0.0)
    observed = panel.values[panel.mask]
    assert observed.min() >= 0 and np.all(observed == np.round(observed))
    hourly = pd.Series(np.nanmean(panel.values, axis=1), index=panel.timestamps)
    weekday = hourly[panel.timestamps.day_of_week < 5]
    by_hour = weekday.groupby(weekday.index.hour).mean()
    assert by_hour.loc[[8, 17]].min() > 2.5 * by_hour.loc[[2, 3]].mean()  # peaks vs night


def test_service_hours_cut_the_night_so_days_abut():
    panel = simulate_network(10, 3.0, seed=1, service_hours=(6.0, 23.0), faults_per_day=0.0)
    assert panel.n_time == 3 * 17 * 12  # 17 service hours a day, 5-minute steps
    assert panel.freq == pd.Timedelta("5min")  # a regular grid, as a CSV without times reads
    events = simulate_network(10, 3.0, seed=1, service_hours=(6.0, 23.0), incidents_per_day=30)
    assert all(events.timestamps[0] <= e.start <= e.end for e in events.events)


def test_coupling_makes_neighbours_move_together():
    from pipeline.data.simulate_regimes import coupled_field

    graph = simulate_network(50, 0.5, seed=3).graph
    src, dst = graph.edge_index

    def neighbour_corr(coupling: float) -> float:
        z = coupled_field(graph, 2000, coupling, np.random.default_rng(0), sd=2.0)
        assert abs(float(z.std()) - 2.0) < 1e-3  # rescaled to the asked sd
        pairs = zip(src, dst, strict=True)
        return float(np.mean([np.corrcoef(z[:, s], z[:, t])[0, 1] for s, t in pairs]))

    assert neighbour_corr(0.0) < 0.1 < 0.25 < neighbour_corr(0.9)


def test_random_and_plain_graphs_and_gaps():
    road = simulate_network(60, 2.0, seed=4)
    plain = simulate_network(60, 2.0, seed=4, graph="plain")
    assert not plain.graph.has_distances and plain.coords is None
    assert plain.graph.num_edges == road.graph.num_edges
    noise = simulate_network(60, 2.0, seed=4, graph="random")
    assert noise.graph.num_edges >= road.graph.num_edges - 2
    assert set(map(tuple, noise.graph.edge_index.T)) != set(map(tuple, road.graph.edge_index.T))
    linked = np.zeros(60, dtype=bool)
    linked[noise.graph.edge_index.ravel()] = True
    assert linked.all()  # no isolated sensor
    gappy = simulate_network(20, 10.0, seed=5, gaps=1.0, faults_per_day=0.0, dropout=0.0)
    outage = ~gappy.mask.any(axis=1)  # steps where every sensor is missing
    assert outage.sum() >= 10 * 2 * 12  # at least two hours a day


def test_spec_options_and_presets():
    from pipeline.data.simulate_spec import simulate_spec

    metro = simulate_spec("regime=metro,days=2")
    assert metro.n_nodes == 80 and metro.name == "simulated-metro"
    assert not metro.graph.has_distances and metro.n_time == 2 * 17 * 12
    plain = simulate_spec("sensors=5,hours=2")
    assert plain.timestamps[0].day_of_week == 2  # specs start on a Wednesday
    for bad, message in [
        ("regime=tram", "unknown regime"),
        ("coupling=2", "coupling"),
        ("service=23-6", "service hours"),
        ("service=abc", "FIRST-LAST"),
        ("kind=flow", "kind"),
        ("graph=full", "graph"),
        ("gaps=x", "not a number"),
    ]:
        with pytest.raises(SimulationError, match=message):
            simulate_spec(bad)
