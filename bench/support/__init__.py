"""What the benchmarks share (none of these is a benchmark itself).

- :mod:`.benchkit`: percentiles, summaries, strict JSON and the run harness.
- :mod:`.synthetic`: synthetic market ledgers (many authors, every kind of entry, chosen defects),
  also used by the audit tests.
- :mod:`.gossip_peer`: one bare py-libp2p gossipsub peer process, the baseline of ``bench/swarm.py``.
"""
