"""Fixtures for the Serve tests: a tiny IDP pipeline output and the recommender app on a free loopback port."""
from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def idp_artifacts(idp_tiny: tuple[Path, dict]) -> Path:
    """The tiny IDP pipeline's directory (tests/conftest.py): its ``idp_zero_shot`` run is served."""
    return idp_tiny[0]


@pytest.fixture(scope="session")
def serve_port(ray_local):
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield port
    serve.shutdown()


def wait_healthy(url: str, timeout_s: float = 180.0) -> dict:
    t0 = time.time()
    while time.time() - t0 < timeout_s:
        try:
            r = requests.get(f"{url}/healthz", timeout=5)
            if r.status_code == 200:
                return r.json()
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not healthy after {timeout_s}s")


def deploy(name: str, port: int, args: dict) -> str:
    from ray import serve

    from raypipe.serve.app import build_app

    serve.run(build_app(args), name=name, route_prefix=f"/{name}")
    url = f"http://127.0.0.1:{port}/{name}"
    wait_healthy(url)
    return url


@pytest.fixture(scope="module")
def app_url(serve_port, idp_artifacts: Path, tmp_path_factory):
    from ray import serve

    url = deploy("rec", serve_port, {"artifacts": str(idp_artifacts),
                                     "state_dir": str(tmp_path_factory.mktemp("serve_state"))})
    yield url
    serve.delete("rec")
