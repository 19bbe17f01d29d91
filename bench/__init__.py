"""The benchmarks: each ``bench/NAME.py`` is one, run as ``python bench/NAME.py [--quick]``.

Every script here takes ``--quick`` (a short run) and prints a JSON object of its
figures as its last line. What they share, and what the tests share with them,
is in :mod:`bench.support` (a harness, the synthetic-ledger generator, the bare
gossip peer of the baseline): scripts import it as ``support.X`` (their own
directory is first on ``sys.path``), tests as ``bench.support.X`` (pytest puts
the repository root there). A regular package, so that no installed package
named ``bench`` can take its place. Not installed with swapmeet.
"""
