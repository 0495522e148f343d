"""mlcore's cross-backend benchmark suite, the distribution ``mlcore-bench``: run it with
``mlcore bench`` or ``python -m mlcore_bench``.

Modules: :mod:`~mlcore_bench.cases` (what is measured), :mod:`~mlcore_bench.reference_numpy`
and :mod:`~mlcore_bench.reference_torch` (the baselines), ``bench_*`` (one builder per
competitor family; :data:`~mlcore_bench.bench_reference.REFERENCES` lists the references),
:mod:`~mlcore_bench.timing` (interleaved rounds, medians, memory), :mod:`~mlcore_bench.runner`,
:mod:`~mlcore_bench.validate` (options checked before anything runs),
:mod:`~mlcore_bench.report` (table, targets, recommendation), :mod:`~mlcore_bench.plot`,
:mod:`~mlcore_bench.markdown`, :mod:`~mlcore_bench.machine`. The mlcore repository's
docs/benchmarks.md says how to read the output and how to add a case or a reference.
"""
