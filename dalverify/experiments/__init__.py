"""Reproducible sweeps of the DAL-Test on simulated images and on the bundled brain slices.

Modules: :mod:`~dalverify.experiments.config` (TOML/YAML experiment files and
their expansion into cells), :mod:`~dalverify.experiments.noise`
(standardized non-Gaussian noise at a given Wasserstein distance),
:mod:`~dalverify.experiments.brain` (real brain T1 slices, synthetic lesions
of known mask and the intensity-threshold baseline),
:mod:`~dalverify.experiments.runner` (seeded, resumable, optionally Dask
parallel sweeps) and :mod:`~dalverify.experiments.report` (rates with Wilson
intervals, tables and figures). The command line is ``dalverify experiment``.
"""
