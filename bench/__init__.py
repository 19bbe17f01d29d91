"""The benchmarks (``python bench/NAME.py``) and what they share with the tests.

A regular package, so that tests import ``bench.synthetic`` from the repository root
(pytest puts the root on ``sys.path``) whatever else is installed: an implicit
namespace package would lose to any installed package named ``bench``. The scripts
themselves run as files and import their neighbours by bare name (``benchkit``,
``synthetic``: the script's directory is first on ``sys.path``). Not installed with
swapmeet.
"""
