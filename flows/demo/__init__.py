"""The main job (``roadcast demo``, ``make demo``): the whole pipeline on one machine.

1. Load the data (``los-loop`` when the data directory has it, else ``simulated``).
2. Reuse the bundles in the model directory when they cover the data's sensors;
   otherwise train quick ones there (persistence, AR(p), LSTM, and TGC-LSTM when it
   is registered and the data has a road graph; one seed, at most ``epochs`` epochs,
   one CPU thread).
3. Calibrate the forecast-interval anomaly detector on the validation part of the data
   (the residuals of the AR(p) bundle's forecasts) and record the road graph's
   neighbours, next to the bundles, unless they are there.
4. Start the embedded broker, create the topics, start ``roadcast serve`` as a real
   process with its default alerting (JSON logs in ``OUT/service.log``, its store in
   ``OUT/store.sqlite``).
5. Replay the test part of the data (never trained on; the ``window`` steps before it
   are replayed first so the first forecasts have full inputs) at ``speedup`` times
   real time, showing live progress: ticks, forecasts, latency, rolling accuracy.
6. When every reading is consumed, stop the service with SIGTERM (it drains and
   exits 0), then write ``OUT/summary.json``, ``OUT/report.md`` (with the alerts the
   service published, matched against the data's labelled events when it has any)
   and an error-by-horizon plot.

``lost`` in the summary is readings produced minus valid minus dead-lettered (as
counted by the service, exactly once each even across restarts): it must be 0.

Modules: :mod:`~flows.demo.setup` (data, bundles, detector), :mod:`~flows.demo.run`
(broker, service process, replay: :func:`~flows.demo.run.run_demo`),
:mod:`~flows.demo.summary` (``summary.json``), :mod:`~flows.demo.report`
(``report.md``), :mod:`~flows.demo.console` (the live view and the final table).
"""
