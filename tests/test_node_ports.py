"""The node refuses to start on a port someone already listens on (py-libp2p would share it silently)."""

from __future__ import annotations

import socket

import pytest
from swapmeet.node.runtime import NodeConfig, PortInUse, check_ports_free


def listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as py-libp2p binds
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_a_taken_libp2p_port_is_refused_with_the_flag_to_change():
    with listening_socket() as taken:
        port = taken.getsockname()[1]
        with pytest.raises(PortInUse, match=f"127.0.0.1:{port}.*--listen"):
            check_ports_free(NodeConfig(listen=[f"/ip4/127.0.0.1/tcp/{port}"]))


def test_a_taken_api_port_is_refused_with_the_flag_to_change():
    with listening_socket() as taken:
        port = taken.getsockname()[1]
        with pytest.raises(PortInUse, match="--api-port"):
            check_ports_free(NodeConfig(listen=["/ip4/127.0.0.1/tcp/0"], api_port=port))


def test_free_and_any_ports_pass():
    with listening_socket() as taken:
        port = taken.getsockname()[1]
    check_ports_free(NodeConfig(listen=[f"/ip4/127.0.0.1/tcp/{port}"], api_port=0))  # released
    check_ports_free(NodeConfig(listen=["/ip4/127.0.0.1/tcp/0"], api_port=0))
