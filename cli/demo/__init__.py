"""``swapmeet demo``'s story, played on a local swarm of real nodes (the click command is :mod:`..demo_cmd`).

- :mod:`.play`: :class:`~.play.Demo` plays the story and reports each step as an event;
- :mod:`.story`: the cast and the script, data and pure functions (no I/O);
- :mod:`.cheater`: the demo's deliberately dishonest node, run as ``python -m swapmeet.cli.demo.cheater``.

Imported only when ``swapmeet demo`` runs (never by ``swapmeet --help``).
"""
