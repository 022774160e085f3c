"""The model registry: versions of every model bundle, the serving set, hot reload.

* :mod:`~pipeline.registry.versions` -- a version is a bundle copied into
  ``<bundles>/versions/<model>/<version>/`` under its content hash, with a label and the
  training run's id (``version.json``); registered atomically, never modified.
* :mod:`~pipeline.registry.serving` -- which version of each model is served
  (``serving.json``, replaced by rename), promotion, rollback, and the move of a folder of
  unversioned bundles into the registry.
* :mod:`~pipeline.registry.watch` -- what ``roadcast serve`` uses to notice a new serving
  set and load it off its loop.

Where the files lie is :mod:`pipeline.model_dir`'s business (the layout); this package
changes them.
"""
