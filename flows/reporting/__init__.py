"""The forecast report of training runs and of live accuracy, and the text tables.

:mod:`~flows.reporting.build` assembles a report from a ``metrics.json``-shaped document
and backtests, using :mod:`~flows.reporting.tables` and :mod:`~flows.reporting.plots`;
:mod:`~flows.reporting.render` writes it as HTML, Markdown and Prefect artifacts;
:mod:`~flows.reporting.training` builds the report of a training run;
:mod:`~flows.reporting.text` renders any table as Markdown or on the terminal.
"""
