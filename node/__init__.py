"""swapmeet.node: everything that runs inside a node, one module per job.

Built by :mod:`.runtime` (the composition root), lowest first::

    home, config, identity_store   the home directory, its settings, the identity key file
    host/                          py-libp2p (the only package that imports it): connections, gossip, streams
    gossip                         VerifiedTopic: every topic's messages cross the trust boundary once
    peers                          connection changes as events; peers.json
    book                           the offer book (SQLite, FTS5): live listings, withdrawals, offers
    ingest                         the one way verified book objects enter the book
    bookgossip                     the listings and offers topics: verified in, batched and paced out
    booksync                       catch-up of the offer book with each peer (set reconciliation)
    replication                    our own chain's appends, other chains, fork proofs
    settlement                     the settlement machine's driver: direct stream, settle topic, timers
    events                         what just changed (book objects, trades, photos), fanned out to live views
    photos, imaging                listing photos by hash: re-encoded, kept, served and fetched (checked)
    ledgerview                     the ledger as the local user reads it: chains, reputations, the audit
    trading, market                the two halves of the contract, for the local user
    contract                       what the node offers its local users (the CLI imports it)
    http/                          the local API on 127.0.0.1 (FastAPI, hypercorn), jsonview its shapes
    ui/                            the web interface under /ui on the same server (session cookie, htmx, SSE)
    cookie                         api.cookie: the API's port and token
    runtime                        Node, run_node: build the rooms, run them in one nursery, stop cleanly

Nothing here imports :mod:`swapmeet.cli`; the demo, the launcher of local swarms and the CLI's HTTP client
live there.
"""
