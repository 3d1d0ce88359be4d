"""``raypipe serve --config``'s pre-flight check of the recommender's ``deployments`` entries (Ray Serve's own
schema ignores unknown keys): deployment names this app builds, Ray Serve's deployment keys, Ray's
``ray_actor_options`` keys with ``num_cpus``; exit 2 naming them before Ray starts.  And what Ray 2.60 does
with the entries: a config's ``ray_actor_options`` replace the builder's ``num_cpus`` for that deployment,
the deployments it does not list keep the builder's."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pandas as pd
import pytest
import yaml

from raypipe import commands
from raypipe.serve.launch import ServeArgsError, check_config_file

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A SASRec run directory as far as resolving a spec reads it (config, item index, a weights file)."""
    from raypipe.config import load_config
    from raypipe.data.sequences import ItemIndex

    run = tmp_path / "run"
    run.mkdir()
    load_config(None, ["model.name=sasrec", f"data.dataset={tmp_path / 'no-dataset'}"]).save(run / "config.yaml")
    ItemIndex.build(pd.Series(["a/1", "a/2", "b/1"]), pd.Series(["a", "a", "b"])).save(run / "item_index.parquet")
    (run / "model.pt").write_bytes(b"")
    return run


#: the shipped Serve configs: the composed app and the low-latency colocated one
CONFIGS = ("recommender.yaml", "recommender_colocated.yaml")


def repo_config(name: str = "recommender.yaml") -> dict[str, Any]:
    return yaml.safe_load((ROOT / "serve_apps" / name).read_text())


def write_config(tmp_path: Path, run: Path, edit: Callable[[list[dict]], None] = lambda d: None,
                 name: str = "recommender.yaml") -> Path:
    cfg = repo_config(name)
    cfg["applications"][0]["args"]["artifacts"] = str(run)
    edit(cfg["applications"][0]["deployments"])
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def by_name(deps: list[dict], name: str) -> dict:
    return next(d for d in deps if d["name"] == name)


@pytest.mark.parametrize("name", CONFIGS)
def test_every_deployment_of_the_repository_config_sets_its_resources(name: str) -> None:
    from ray.serve.schema import RayActorOptionsSchema

    app = repo_config(name)["applications"][0]
    deps = app["deployments"]
    built = {"Recommender", "CDIMMatcher"} if app["args"].get("colocate") else \
        {"Recommender", "SequenceEncoder", "ANNRetriever", "CDIMMatcher"}
    assert {d["name"] for d in deps} == built
    for d in deps:
        opts = d["ray_actor_options"]
        assert set(opts) <= set(RayActorOptionsSchema.model_fields), d["name"]
        assert 0 < opts["num_cpus"] < 1 and opts["memory"] >= 256 * 2**20, d["name"]  # fits a 2-CPU host
    # at most two replicas of each: their fractional CPUs leave room for the app's own work on 2 CPUs
    assert sum(d["ray_actor_options"]["num_cpus"] * d["autoscaling_config"]["max_replicas"] for d in deps) <= 1.0


@pytest.mark.parametrize("name", CONFIGS)
def test_the_repository_config_passes(name: str, run_dir: Path, tmp_path: Path) -> None:
    check_config_file(write_config(tmp_path, run_dir, name=name))


@pytest.mark.parametrize("name", CONFIGS)
def test_memory_reservations_cover_the_measured_peak_rss(name: str) -> None:
    """Each replica's ``memory`` is at least the peak RSS ``bench/bench_serve.py`` measured for that
    deployment in the same layout (composed or colocated) on the 150,000-item catalogue; the matcher's
    over every run, its 75,000-source-item one included."""
    import json

    results = ROOT / "bench" / "results"
    runs = {f: json.loads((results / f"serve_memory_{f}.json").read_text())
            for f in ("composed", "colocated", "matcher75k")}
    app = repo_config(name)["applications"][0]
    colocated = bool(app["args"].get("colocate"))
    for f, run in runs.items():
        assert run["catalogue_items"] == 150_000 and run["args"]["colocate"] == (f != "composed"), f

    def peak(deployment: str) -> int:
        use = runs.values() if deployment == "CDIMMatcher" else \
            [r for r in runs.values() if r["args"]["colocate"] == colocated]
        rss = [p["rss"] for r in use for snap in r["replica_memory"].values() for p in snap.get(deployment, [])]
        assert rss, (deployment, name)
        return max(rss)

    for d in app["deployments"]:
        assert d["ray_actor_options"]["memory"] >= peak(d["name"]), (name, d["name"])


def _rename(deps: list[dict]) -> None:
    by_name(deps, "SequenceEncoder")["name"] = "Encoder"


def _content(deps: list[dict]) -> None:
    deps.append({"name": "ContentOnboarder", "ray_actor_options": {"num_cpus": 0.1}})


def _bad_key(deps: list[dict]) -> None:
    by_name(deps, "ANNRetriever")["ray_actor_options"]["num_gpu"] = 0  # num_gpus


def _no_cpus(deps: list[dict]) -> None:
    del by_name(deps, "CDIMMatcher")["ray_actor_options"]["num_cpus"]


def _deployment_key(deps: list[dict]) -> None:
    by_name(deps, "Recommender")["max_ongoing_request"] = 8  # max_ongoing_requests


@pytest.mark.parametrize("edit,named", [
    (_rename, "deployments[1].name: 'Encoder' is not a deployment of this app (it builds Recommender, "
              "SequenceEncoder, ANNRetriever, CDIMMatcher)"),
    (_content, "'ContentOnboarder' is not a deployment of this app"),  # a SASRec app onboards by CDIM
    (_bad_key, "deployments[ANNRetriever].ray_actor_options: unknown key(s) ['num_gpu']"),
    (_no_cpus, "deployments[CDIMMatcher].ray_actor_options: no num_cpus"),
    (_deployment_key, "deployments[Recommender]: unknown key(s) ['max_ongoing_request']"),
])
def test_bad_deployment_entries_are_named(edit, named: str, run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ServeArgsError) as e:
        check_config_file(write_config(tmp_path, run_dir, edit))
    assert named in str(e.value)


def test_a_colocated_config_lists_no_encoder_or_retriever(run_dir: Path, tmp_path: Path) -> None:
    """``colocate: true`` runs the encoder and retriever inside the Recommender: entries for them name
    deployments the app no longer builds; without them the config passes."""
    def colocated(drop: bool) -> Path:
        cfg = repo_config()
        app = cfg["applications"][0]
        app["args"].update(artifacts=str(run_dir), colocate=True)
        if drop:
            app["deployments"] = [d for d in app["deployments"] if d["name"] not in ("SequenceEncoder", "ANNRetriever")]
        path = tmp_path / f"colocated-{drop}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    with pytest.raises(ServeArgsError) as e:
        check_config_file(colocated(drop=False))
    assert "'SequenceEncoder' is not a deployment of this app (it builds Recommender, CDIMMatcher)" in str(e.value)
    check_config_file(colocated(drop=True))


def test_the_command_exits_2_naming_them_before_ray(run_dir: Path, tmp_path: Path, no_ray: None,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, run_dir, lambda deps: (_bad_key(deps), _rename(deps)))
    with pytest.raises(SystemExit) as e:
        commands.main(["serve", "--config", str(path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "'Encoder' is not a deployment" in err and "['num_gpu']" in err and "Traceback" not in err


def test_ray_applies_the_configs_actor_options_over_the_builders_num_cpus(ray_local, run_dir: Path) -> None:
    """Ray 2.60's own override (what ``serve run``/``serve deploy`` of a config do): the listed deployments
    get the YAML's options as a whole, the unlisted one the builder's ``num_cpus``."""
    from ray.serve._private.application_state import override_deployment_info
    from ray.serve._private.build_app import build_app as build_serve_app
    from ray.serve._private.deploy_utils import deploy_args_to_deployment_info, get_deploy_args
    from ray.serve.schema import ServeDeploySchema

    from raypipe.serve.app import build_app

    cfg = repo_config()
    app = cfg["applications"][0]
    app["args"].update(artifacts=str(run_dir), num_cpus=0.25)
    app["deployments"] = [d for d in app["deployments"] if d["name"] != "SequenceEncoder"]
    schema = ServeDeploySchema.model_validate(cfg).applications[0]
    built = build_serve_app(build_app(schema.args), name=schema.name)
    infos = {}
    for d in built.deployments:
        a = get_deploy_args(d.name, d._replica_config, deployment_config=d._deployment_config)
        infos[d.name] = deploy_args_to_deployment_info(d.name, a["deployment_config_proto_bytes"],
                                                       a["replica_config_proto_bytes"], deployer_job_id="test",
                                                       app_name=schema.name)
    assert {n: i.replica_config.ray_actor_options for n, i in infos.items()} == {
        n: {"num_cpus": 0.25} for n in ("Recommender", "SequenceEncoder", "ANNRetriever", "CDIMMatcher")}
    out = override_deployment_info(infos, schema)
    resources = {n: i.replica_config.resource_dict for n, i in out.items()}
    assert resources["SequenceEncoder"] == {"CPU": 0.25}  # not in the config: the builder's num_cpus
    for d in app["deployments"]:
        want = d["ray_actor_options"]
        assert resources[d["name"]] == {"CPU": want["num_cpus"], "memory": want["memory"]}, d["name"]


def test_the_configs_logging_config_reaches_serves_controller_and_proxies(serve_port, tmp_path: Path) -> None:
    """Ray 2.60's ``serve run FILE`` gives the file's top-level ``logging_config`` to the applications only;
    ``raypipe serve`` applies it to the running Serve instance first, so ``enable_access_log: false`` turns
    the proxy's access log off (the controller's global config is what the proxies poll)."""
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME

    from raypipe.serve.launch import start_serve_as_configured

    controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace="serve")
    before, _ = ray.get(controller._get_logging_config.remote())
    cfg = {"proxy_location": "HeadOnly", "http_options": {"host": "127.0.0.1", "port": serve_port},
           "logging_config": {"log_level": "WARNING", "enable_access_log": False}, "applications": []}
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(cfg))
    try:
        assert before.enable_access_log  # Serve's default
        assert start_serve_as_configured(path)
        after, _ = ray.get(controller._get_logging_config.remote())
        assert (after.enable_access_log, after.log_level) == (False, "WARNING")
        cfg.pop("logging_config")
        path.write_text(yaml.safe_dump(cfg))
        assert not start_serve_as_configured(path)  # no section: Serve's config is left as it is
        assert ray.get(controller._get_logging_config.remote())[0] == after
    finally:
        ray.get(controller.reconfigure_global_logging_config.remote(before))
