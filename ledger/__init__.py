"""swapmeet.ledger: append-only per-author hash chains, their SQLite store, replication bookkeeping and the audit."""
