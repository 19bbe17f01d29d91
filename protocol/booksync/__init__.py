"""Book sync, sans-IO: how two nodes bring their offer books level over one stream.

- :mod:`.reconcile`: range-based set reconciliation of ``(timestamp, id)`` sets
  (the ``rec`` rounds): which ids each side lacks, with traffic in proportion
  to the difference.
- :mod:`.frames`: the frames of the ``/swapmeet/<net>/book-sync/1.0.0`` stream
  (``rec``, ``get``, ``objs``, ``put``, ``end``).

The node side is :mod:`swapmeet.node.booksync`; the spec is PROTOCOL.md §14.
"""
