"""Ports picked in a row must differ, or a manifest can get the same port twice."""

from __future__ import annotations

import socket

from kitcore.net import free_port


def test_ports_picked_in_a_row_are_distinct_and_bindable() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[-1]))
