"""mlcore's cross-backend benchmark suite: ``mlcore bench`` or ``python -m benchmarks``.

Not part of the installed wheel (a top-level package named ``benchmarks`` would collide
with other projects' in site-packages): ``mlcore bench`` finds this folder beside the
``mlcore`` package of a source checkout, which is what the README's editable install gives.

Modules: :mod:`~benchmarks.cases` (what is measured), :mod:`~benchmarks.reference_numpy`
and :mod:`~benchmarks.reference_torch` (the baselines), ``bench_*`` (one builder per
competitor family), :mod:`~benchmarks.timing` (interleaved rounds, medians, memory),
:mod:`~benchmarks.runner`, :mod:`~benchmarks.report` (table, targets, recommendation),
:mod:`~benchmarks.plot`, :mod:`~benchmarks.machine`. See docs/benchmarks.md.
"""
