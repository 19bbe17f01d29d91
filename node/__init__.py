"""swapmeet.node: the running node: home directory, identity file, libp2p host, gossip, sync, settlement, local API."""
