"""cluster.yaml and scripts/fake_cluster.yaml against the Ray autoscaler's own config schema (cheap; CI)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def schema() -> dict:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def test_cluster_yaml_passes_rays_schema_and_ray_up_validation(schema: dict, cluster: dict) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    jsonschema.validate(cluster, schema)  # as written
    prepared = prepare_config(copy.deepcopy(cluster))  # what `ray up` does before it calls the cloud
    validate_config(prepared)
    assert prepared["provider"]["type"] == "aws"
    assert set(prepared["available_node_types"]) == {"head", "gpu_worker", "cpu_worker"}


def test_node_types_cpu_head_and_autoscaling_gpu_and_cpu_workers(cluster: dict) -> None:
    types = cluster["available_node_types"]
    assert cluster["head_node_type"] == "head"
    assert types["head"]["resources"].get("GPU", 0) == 0
    gpu, cpu = types["gpu_worker"], types["cpu_worker"]
    assert gpu["min_workers"] == 0 and gpu["max_workers"] >= 1 and gpu["resources"]["GPU"] >= 1
    assert cpu["min_workers"] == 0 and cpu["max_workers"] >= 1 and cpu["resources"].get("GPU", 0) == 0
    assert cpu["resources"]["CPU"] >= 1
    assert 0 < cluster["idle_timeout_minutes"] <= 60
    assert cluster["max_workers"] >= max(gpu["max_workers"], cpu["max_workers"])


# How nodes get the project (docker mode, the image built by docker/Dockerfile): tests/deploy/test_k8s.py
# (test_cluster_yaml_runs_the_same_image_in_docker_mode, test_dockerfile_installs_the_project_as_the_makefile_does).


def test_shared_storage_for_train_and_tune_results(cluster: dict) -> None:
    storage = cluster["metadata"]["raypipe_storage_path"]
    mount = "/" + storage.strip("/").split("/")[0]
    assert any(f" {mount}" in c and "mount" in c for c in cluster["initialization_commands"])
    assert any(storage in c for c in cluster["setup_commands"])
    data = cluster["metadata"]["raypipe_data"]
    for c in (cluster["head_start_ray_commands"][-1], cluster["worker_start_ray_commands"][-1]):
        assert f"RAYPIPE_DATA={data}" in c and "RAY_AUTH_MODE=token" in c


def test_schema_rejects_broken_configs(schema: dict, cluster: dict) -> None:
    bad = copy.deepcopy(cluster)
    bad["available_node_types"]["gpu_worker"]["resources"]["GPU"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    bad = copy.deepcopy(cluster)
    bad["idle_timeout"] = 5  # not a launcher field
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_fake_cluster_yaml_is_a_complete_valid_config(schema: dict) -> None:
    from ray.autoscaler._private.util import validate_config

    fake = yaml.safe_load((REPO / "scripts" / "fake_cluster.yaml").read_text())
    jsonschema.validate(fake, schema)
    validate_config(fake)  # complete as written: the fake provider has no defaults file to merge
    assert fake["provider"]["type"] == "fake_multinode"
    head = fake["available_node_types"][fake["head_node_type"]]
    assert fake["head_node_type"] == "ray.head.default" and head["resources"] == {"CPU": 0}
    worker = fake["available_node_types"]["ray.worker.cpu"]
    assert worker["min_workers"] == 0 and worker["resources"]["fake_worker"] == 1
    assert worker["resources"]["CPU"] == 1
