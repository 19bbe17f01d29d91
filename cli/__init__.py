"""swapmeet.cli: the `swapmeet` command, ``swapmeet demo``'s story, and the CLI's tools.

Besides the commands: :mod:`.client` (the HTTP client of a running node's local API) and
:mod:`.localswarm` (local swarms of real ``swapmeet node run`` processes), which the tests
and the benchmarks import too. Imports go ``cli -> node -> ledger -> protocol``: nothing in
swapmeet.node, swapmeet.ledger or swapmeet.protocol imports this package, not even by
running it in a subprocess.
"""
