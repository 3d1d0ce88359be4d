"""A deployment's class run inside the caller's replica, called as if through a ``DeploymentHandle``.

``build_app(colocate=True)`` puts the ``SequenceEncoder`` and the ``ANNRetriever`` inside every ingress
replica: a ``/recommend`` then costs no deployment hop (no request serialisation, routing or gRPC
round trip in either process) — on 2 CPUs those hops are most of a request's CPU time
(docs/SERVING.md, load benchmark).  The ingress code stays the same: ``await h.method.remote(*args)``
works on a :class:`LocalHandle` as on a Serve handle.  The price: encoder and retriever scale with the
ingress replicas instead of on their own, and the model runs on the ingress's event loop.
"""
from __future__ import annotations

import inspect
from typing import Any


class LocalHandle:
    """``LocalHandle(obj).method.remote(*args)`` → an awaitable of ``obj.method(*args)`` (awaited if async)."""

    def __init__(self, obj: Any) -> None:
        self._obj = obj

    def __getattr__(self, name: str) -> "_LocalMethod":
        return _LocalMethod(getattr(self._obj, name), f"{type(self._obj).__name__}.{name}")

    def __repr__(self) -> str:
        return f"LocalHandle({type(self._obj).__name__})"


class _LocalMethod:
    def __init__(self, method: Any, name: str) -> None:
        self._method, self._name = method, name

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self._run(*args, **kwargs)

    async def _run(self, *args: Any, **kwargs: Any) -> Any:
        out = self._method(*args, **kwargs)
        return await out if inspect.isawaitable(out) else out

    def __repr__(self) -> str:
        return f"<local {self._name}>"


def local_instance(deployment: Any, *args: Any) -> LocalHandle:
    """An instance of ``deployment``'s own class (``@serve.deployment`` undone) built with ``args``."""
    return LocalHandle(deployment.func_or_class(*args))
