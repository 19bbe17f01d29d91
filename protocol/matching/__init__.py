"""swapmeet.protocol.matching: barter rings found in a want graph. Pure: no I/O, no clock.

- :mod:`.graph`: the want graph (items, their owners, who would accept what) and its limits;
- :mod:`.solve`: the rings that move the most items, uncapped (an assignment problem, as
  TradeMaximizer) or capped at K items a ring (kidney exchange, with CP-SAT);
- :mod:`.wantlist`: TradeMaximizer's official want-list format;
- :mod:`.book`: the want graph of an offer book's listings (explicit ``accepts``, implicit have/want).
"""
