"""``raypipe serve``: the recommender app (:mod:`raypipe.serve.app`) through Ray Serve's own ``serve run``,
with its arguments checked before Ray starts.

    raypipe serve                                          # serve run serve_apps/recommender.yaml
    raypipe serve --config my_recommender.yaml             # another Serve config file
    raypipe serve artifacts=runs/idp top_m=5               # serve run raypipe.serve.app:build_app ...

Either a Serve config file (default: the repository's ``serve_apps/recommender.yaml``, whose
``args.artifacts`` is ``runs/idp``) or builder arguments ``KEY=VALUE`` (the fields of
:class:`raypipe.serve.schemas.RecommenderArgs`), not both (``serve run`` ignores the arguments of a
config file).  The arguments of every app that runs the builder (``raypipe.serve.app:build_app``, or its
former path ``serve_apps.recommender:build_app``) are validated
and its artifacts resolved (:meth:`raypipe.serve.artifacts.ServingSpec.resolve`) first, and so are its
``deployments`` entries (which Ray Serve's schema reads leniently): each must name a deployment this app
builds, with only keys Ray Serve knows, and ``ray_actor_options`` only with the keys of Ray's
``RayActorOptionsSchema``, ``num_cpus`` included (Serve replaces the builder's options by them as a whole,
so an entry without ``num_cpus`` would reserve a whole CPU per replica).  A bad key or value, a missing run
directory or an unknown deployment exits with code 2, naming it.  Ray is the cluster at ``--address`` /
``$RAY_ADDRESS``, else a private local Ray on 127.0.0.1 (:func:`raypipe.runtime.init_ray`).  The app is
in the installed package; the default config file is the checkout's ``serve_apps/recommender.yaml`` (an
editable install), whose root also goes on the replicas' ``PYTHONPATH`` for configs that still name the
former path.  A config file's top-level ``logging_config`` is given to Serve's controller and proxies first
(:func:`start_serve_as_configured`; ``serve run`` alone gives it to the applications only).  Blocks until
Ctrl-C, which shuts the app down.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml

BUILDER = "raypipe.serve.app:build_app"
#: the builder's former import path (``serve_apps/recommender.py`` re-exports it; needs the checkout on the path)
FORMER_BUILDER = "serve_apps.recommender:build_app"


class ServeArgsError(ValueError):
    """A bad argument of ``raypipe serve``; the message names it."""


def repo_root() -> Path | None:
    """The checkout that holds ``serve_apps/`` beside the ``raypipe`` package (an editable install), if any."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "serve_apps" / "recommender.yaml").is_file() else None


def parse_builder_args(items: Sequence[str]) -> dict[str, str]:
    """``KEY=VALUE`` words → the builder's arguments (values as text, as ``serve run`` passes them)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ServeArgsError(f"builder argument {item!r} must look like key=value")
        out[key] = value
    return out


def app_deployments(onboarding: str, reranker: bool, colocate: bool = False) -> list[str]:
    """The deployments :func:`raypipe.serve.app.build_app` builds for a resolved spec (``colocate``: the
    encoder and retriever run inside the Recommender, not as deployments)."""
    matcher = "ContentOnboarder" if onboarding == "content" else "CDIMMatcher"
    hops = [] if colocate else ["SequenceEncoder", "ANNRetriever"]
    return ["Recommender", *hops, matcher] + (["Reranker"] if reranker else [])


def check_recommender_args(args: dict[str, Any], where: str) -> list[str]:
    """Validate the builder's arguments and resolve what they serve, without Ray; the names of the
    deployments the app will have."""
    from pydantic import ValidationError

    from raypipe.serve.schemas import RecommenderArgs

    try:
        a = RecommenderArgs.model_validate(args)
    except ValidationError as e:
        bad = "; ".join(f"{'.'.join(str(x) for x in err['loc']) or '<args>'}: {err['msg']}" for err in e.errors())
        raise ServeArgsError(f"{where}: {bad}") from None
    from raypipe.config import ConfigError
    from raypipe.data.schema import DataValidationError
    from raypipe.serve.artifacts import ServingSpec

    try:
        spec = ServingSpec.resolve(a.artifacts, variant=a.variant, cdim_dir=a.cdim_dir, cdim_index=a.cdim_index,
                                   state_dir=a.state_dir, dataset=a.dataset, onboarding=a.onboarding)
    except (FileNotFoundError, ValueError, ConfigError, DataValidationError) as e:
        raise ServeArgsError(f"{where}: {e}") from None
    if a.reranker_run is not None and not Path(a.reranker_run).exists():
        raise ServeArgsError(f"{where}: reranker_run: {a.reranker_run} does not exist")
    return app_deployments(spec.onboarding, a.reranker_run is not None or spec.reranker_run is not None, a.colocate)


def check_deployments(entries: Any, built: list[str], where: str) -> None:
    """A Serve config's ``deployments`` entries of the recommender app (raw YAML: Ray's schema ignores
    unknown keys): known deployment names, Ray Serve's deployment keys, Ray's actor-option keys with
    ``num_cpus``.  The problems, all named, in one :class:`ServeArgsError`."""
    from ray.serve.schema import DeploymentSchema, RayActorOptionsSchema

    problems = []
    for j, d in enumerate(entries or []):
        at = f"deployments[{j}]"
        if not isinstance(d, dict):
            continue  # ServeDeploySchema has rejected it already
        name = d.get("name")
        if name not in built:
            problems.append(f"{at}.name: {name!r} is not a deployment of this app (it builds {', '.join(built)})")
        else:
            at = f"deployments[{name}]"
        unknown = sorted(set(d) - set(DeploymentSchema.model_fields))
        if unknown:
            problems.append(f"{at}: unknown key(s) {unknown}")
        opts = d.get("ray_actor_options")
        if opts is None:
            continue
        if not isinstance(opts, dict):
            problems.append(f"{at}.ray_actor_options: expected a mapping, got {type(opts).__name__}")
            continue
        unknown = sorted(set(opts) - set(RayActorOptionsSchema.model_fields))
        if unknown:
            problems.append(f"{at}.ray_actor_options: unknown key(s) {unknown}; Ray accepts "
                            f"{sorted(RayActorOptionsSchema.model_fields)}")
        if "num_cpus" not in opts:
            problems.append(f"{at}.ray_actor_options: no num_cpus (these options replace the builder's as a "
                            "whole: Serve would reserve 1 CPU per replica)")
    if problems:
        raise ServeArgsError(f"{where}: " + "; ".join(problems))


def check_config_file(path: Path) -> None:
    """A Serve config file: readable, valid for Ray Serve, and the recommender's arguments valid."""
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ServeArgsError(f"--config: cannot read {path}: {e}") from None
    except yaml.YAMLError as e:
        raise ServeArgsError(f"--config: {path} is not valid YAML: {e}") from None
    try:
        schema = ServeDeploySchema.model_validate(raw)
    except ValidationError as e:
        bad = "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors())
        raise ServeArgsError(f"--config {path}: {bad}") from None
    for app, raw_app in zip(schema.applications, raw["applications"]):
        if app.import_path in (BUILDER, FORMER_BUILDER):
            built = check_recommender_args(dict(app.args or {}), f"--config {path}: application {app.name!r} args")
            check_deployments(raw_app.get("deployments"), built, f"--config {path}: application {app.name!r}")


def start_serve_as_configured(path: Path) -> bool:
    """Start (or join) Serve with the config file's top-level ``logging_config`` as its global one, so that
    the controller and the HTTP proxies use it too; then ``serve run FILE`` joins this instance.

    Ray 2.60's ``serve run FILE`` hands that section to the applications only (``serve deploy`` also gives
    it to the controller and the proxies), so without this the proxy's access log stays on whatever the
    file says (checked here: the controller's global config still had ``enable_access_log=True``).  The
    access log costs the proxy CPU on every request (docs/SERVING.md).  Returns whether the file had one."""
    import ray
    from ray import serve
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(yaml.safe_load(path.read_text()))
    if schema.logging_config is None:
        return False
    serve.start(proxy_location=schema.proxy_location, http_options=schema.http_options.model_dump(),
                grpc_options=schema.grpc_options.model_dump(), logging_config=schema.logging_config,
                controller_options=schema.controller_options)
    # a Serve instance that was already running keeps its own: apply it there too, as `serve deploy` does
    # (through the same controller method, waited for here: the proxies poll the controller for it)
    controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    ray.get(controller.reconfigure_global_logging_config.remote(schema.logging_config))
    return True


def parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("args", nargs="*", metavar="KEY=VALUE",
                   help=f"arguments of {BUILDER} (serves it without a config file's autoscaling settings)")
    p.add_argument("--config", type=Path,
                   help="Ray Serve config file (default: serve_apps/recommender.yaml of the repository)")
    p.add_argument("--address", help="Ray address (default: $RAY_ADDRESS, else a local Ray)")
    return p


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    p = parser(prog)
    ns = p.parse_args(argv)
    import raypipe.runtime  # noqa: F401 -- its environment defaults (Ray on loopback, offline hubs)

    try:
        root = repo_root()
        if ns.args and ns.config is not None:
            raise ServeArgsError("give either --config or builder arguments KEY=VALUE, not both "
                                 "(serve run ignores the arguments of a config file)")
        if ns.args:
            check_recommender_args(parse_builder_args(ns.args), "builder arguments")
            target = [BUILDER, *ns.args]
        else:
            if ns.config is None and root is None:
                raise ServeArgsError("no --config given and no checkout's serve_apps/recommender.yaml beside the "
                                     "installed package: pass --config FILE or builder arguments KEY=VALUE")
            config = ns.config or root / "serve_apps" / "recommender.yaml"  # type: ignore[operator]
            check_config_file(config)
            target = [str(config)]
    except ServeArgsError as e:
        p.error(str(e))
    # a config naming the former path makes replicas import serve_apps.recommender: the checkout on their
    # path, as `PYTHONPATH=$PWD`; Ray's workers inherit it from this process when it starts the local Ray
    if root is not None:
        path = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join([str(root), *([path] if path else [])])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from raypipe.runtime import init_ray

    # like every raypipe job: the cluster at --address / $RAY_ADDRESS, else a private local Ray on loopback
    # (serve run alone would join any `ray start` cluster of this machine); serve run then uses it as is
    init_ray(address=ns.address)
    if not ns.args:
        start_serve_as_configured(Path(target[0]))
    from ray.serve.scripts import cli

    app_dir = ["--app-dir", str(root)] if root is not None else []
    cli.main(args=["run", *target, *app_dir], prog_name="serve", standalone_mode=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
