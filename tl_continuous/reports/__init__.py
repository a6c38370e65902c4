"""The package's programs: each ``tl-continuous`` command's options and body.

* :mod:`~tl_continuous.reports.demo`: the demo page (``tl-continuous demo``);
* :mod:`~tl_continuous.reports.lines_of_thought`, :mod:`~tl_continuous.reports.dynamics`
  (with :mod:`~tl_continuous.reports.dynamics_results`) and
  :mod:`~tl_continuous.reports.testbed`: the results files (``tl-continuous report ...``);
* :mod:`~tl_continuous.reports.collect`: a corpus's lines of thought into a shard folder;
* :mod:`~tl_continuous.reports.train_testbed`: the counting testbed's checkpoint;
* :mod:`~tl_continuous.reports.settings`: the run settings they share, defined once.

The analysis packages (``continuous``, ``experiments``, ``lines_of_thought``, ``testbed``,
``views``) never import this package; :mod:`tl_continuous.cli` is the one way in.
"""
