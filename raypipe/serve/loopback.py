"""Keep a Serve replica's inter-deployment gRPC server off the network on a loopback-only Ray node.

Ray Serve 2.60 starts, in every replica, a gRPC server for calls between deployments and binds it to
``[::]:0``, i.e. every interface, whatever ``http_options.host`` says (``ray/serve/_private/replica.py``,
``_on_initialized``).  On a node whose Ray address is loopback (this project's local Ray, tests and
benchmarks: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, ``--node-ip-address 127.0.0.1``) nothing outside the
machine can be a peer, so :func:`pin_internal_grpc_to_loopback` (called first thing in each deployment's
constructor, which Serve runs before ``_on_initialized``) rebinds it to ``127.0.0.1``.  On a node with a
routable address it does nothing: replicas on other nodes must reach that server.
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def pin_internal_grpc_to_loopback() -> bool:
    """Patch this process's replica module so ``[::]:P`` becomes ``127.0.0.1:P``; True when patched."""
    import ray
    from ray.serve._private import replica

    if ray.util.get_node_ip_address() not in LOOPBACK:
        return False
    original = replica.add_port_to_grpc_server
    if getattr(original, "raypipe_loopback", False):
        return True

    def add_port(server, address: str):  # noqa: ANN001, ANN202 - Ray's signature
        if address.startswith("[::]:"):
            address = "127.0.0.1:" + address[len("[::]:"):]
        return original(server, address)

    add_port.raypipe_loopback = True  # type: ignore[attr-defined]
    replica.add_port_to_grpc_server = add_port
    log.info("Serve's inter-deployment gRPC server pinned to 127.0.0.1 (loopback-only node)")
    return True
