"""A free TCP port on 127.0.0.1, for the servers and Ray nodes tests start: tests take it as the `free_port`
fixture (tests/conftest.py); helpers such as tests/ray_nodes.py call it directly."""

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
