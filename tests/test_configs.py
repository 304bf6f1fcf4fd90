"""The deployment examples in configs/ are real: they parse, have what a cluster requires, use the
Secrets and ConfigMaps their instructions create, and the commands they run are mirror's own CLI, run
here against the test registries (and PostgreSQL, for the queue example) with their own arguments."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import yaml
from prometheus_client.parser import text_string_to_metric_families
from support.images import list_tags, push_image
from support.mirror_cli import ROOT, MirrorProcess, run_mirror
from support.postgres import Postgres
from support.pushgateway import start_pushgateway
from support.registry import Registry, wait_until

from mirror.cli.main import build_parser

KUBE = ROOT / "configs" / "kubernetes"
JOB = KUBE / "sync-indexed-job.yaml"
CRONJOB = KUBE / "sync-cronjob.yaml"
QUEUE = KUBE / "queue"
README = ROOT / "README.md"
#: The apiVersion of every kind the examples use.
API = {"Job": "batch/v1", "CronJob": "batch/v1", "Deployment": "apps/v1", "StatefulSet": "apps/v1", "Service": "v1",
       "PersistentVolumeClaim": "v1"}
#: The destination registry the examples write to (the tests substitute their own).
DEST_HOST = "registry.internal.example.com"
VAR_REF = re.compile(r"\$\((\w+)\)")  # Kubernetes expands $(NAME) in command and args from the container's env

Objects = dict[tuple[str, str], dict[str, str]]  # ("secret" | "configmap", name) -> key -> value


def _docs(path: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs and all(isinstance(d, dict) for d in docs), path
    return docs


def _load(path: Path) -> dict[str, Any]:
    docs = _docs(path)
    assert len(docs) == 1, path
    return docs[0]


def _manifests() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in sorted(KUBE.rglob("*.yaml")) for doc in _docs(path)]


def _find(kind: str, name: str) -> dict[str, Any]:
    [doc] = [d for _p, d in _manifests() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _pod_template(doc: dict[str, Any]) -> dict[str, Any] | None:
    match doc["kind"]:
        case "CronJob":
            return dict(doc["spec"]["jobTemplate"]["spec"]["template"])
        case "Job" | "Deployment" | "StatefulSet":
            return dict(doc["spec"]["template"])
    return None


def _pod(doc: dict[str, Any]) -> dict[str, Any]:
    template = _pod_template(doc)
    assert template is not None, doc["kind"]
    return dict(template["spec"])


def _mirror_container(doc: dict[str, Any]) -> dict[str, Any]:
    [container] = [c for c in _pod(doc)["containers"] if c.get("command") == ["mirror"]]
    return container


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod's init containers (native sidecars among them) and containers."""
    return [*pod.get("initContainers", []), *pod["containers"]]


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def _documented_objects() -> tuple[Objects, list[str]]:
    """Secrets and ConfigMaps created by the ``kubectl create`` commands of the examples' header
    comments and of README's "Running on many machines", and a list of objects two places create
    with different keys."""
    texts = ["\n".join(line.removeprefix("#").removeprefix(" ") for line in path.read_text().splitlines()
                       if line.startswith("#")) for path in sorted(KUBE.rglob("*.yaml"))]
    readme = README.read_text()
    start = readme.index("## Running on many machines")
    texts += re.findall(r"```sh\n(.*?)```", readme[start:readme.index("\n## ", start + 1)], re.S)
    created: Objects = {}
    conflicts = []
    for text in texts:
        for line in text.replace("\\\n", " ").splitlines():
            found = re.search(r"kubectl create (secret generic|configmap) (\S+)(.*)", line)
            if found is None:
                continue
            keys = {}
            for word in shlex.split(found.group(3), comments=True):
                flag, _, spec = word.partition("=")
                if flag == "--from-literal":
                    key, _, value = spec.partition("=")
                    keys[key] = value
                elif flag == "--from-file":
                    key, _, path = spec.rpartition("=")
                    keys[key or Path(path).name] = path
            kind = "secret" if found.group(1).startswith("secret") else "configmap"
            name = (kind, found.group(2))
            if name in created and created[name] != keys:
                conflicts.append(f"{name}: {sorted(created[name])} vs {sorted(keys)}")
            created.setdefault(name, keys)
    return created, conflicts


def _volume_source(volume: dict[str, Any]) -> tuple[str, str] | None:
    if "secret" in volume:
        return ("secret", volume["secret"]["secretName"])
    if "configMap" in volume:
        return ("configmap", volume["configMap"]["name"])
    return None


def test_every_kubernetes_example_has_what_a_cluster_requires() -> None:
    manifests = _manifests()
    assert {p for p, _d in manifests} >= {JOB, CRONJOB, QUEUE / "postgres.yaml", QUEUE / "workers.yaml",
                                          QUEUE / "sync-coordinator.yaml"}
    claims = {d["metadata"]["name"] for _p, d in manifests if d["kind"] == "PersistentVolumeClaim"}
    for path, doc in manifests:
        where = f"{path.name}: {doc.get('kind')} {doc.get('metadata', {}).get('name')}"
        assert doc.get("apiVersion") == API[doc["kind"]] and doc["metadata"].get("name"), where
        if doc["kind"] == "Service":
            assert doc["spec"]["ports"] and doc["spec"]["selector"], where
            continue
        if doc["kind"] == "PersistentVolumeClaim":
            assert doc["spec"]["accessModes"] and doc["spec"]["resources"]["requests"]["storage"], where
            continue
        template = _pod_template(doc)
        assert template is not None, where
        pod = template["spec"]
        if "selector" in doc["spec"]:  # the API server refuses a selector that misses its own pods
            assert doc["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items(), where
        if doc["kind"] in ("Job", "CronJob"):
            assert pod["restartPolicy"] in ("Never", "OnFailure"), where
        volumes = {v["name"] for v in pod.get("volumes", [])}
        volumes |= {c["metadata"]["name"] for c in doc["spec"].get("volumeClaimTemplates", [])}
        assert {v["persistentVolumeClaim"]["claimName"] for v in pod.get("volumes", [])
                if "persistentVolumeClaim" in v} <= claims, where  # a claim no example creates stays Pending
        assert pod["containers"], where
        for container in _containers(pod):
            assert container["name"] and container["image"], where
            assert {m["name"] for m in container.get("volumeMounts", [])} <= volumes, where
            words = [*container.get("command", []), *container.get("args", [])]
            refs = {ref for word in words for ref in VAR_REF.findall(word)}
            assert refs <= _env(container).keys(), f"{where}: $(...) of an undefined variable stays literal"
            if container.get("command") == ["mirror"]:
                args = build_parser().parse_args(container["args"])  # mirror's real CLI accepts them
                assert args.func is not None


def test_the_examples_use_the_secrets_and_config_maps_their_instructions_create() -> None:
    created, conflicts = _documented_objects()
    assert conflicts == [], "the same Secret or ConfigMap is created with different keys"
    assert {("secret", "mirror-auth"), ("secret", "mirror-queue"), ("configmap", "mirror-sync")} <= created.keys()
    for path, doc in _manifests():
        if _pod_template(doc) is None:
            continue
        pod = _pod(doc)
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for volume in volumes.values():
            source = _volume_source(volume)
            assert source is None or source in created, f"{path.name}: {source} is never created"
        for container in _containers(pod):
            for var in _env(container).values():
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref is not None:
                    assert ref["key"] in created[("secret", ref["name"])], f"{path.name}: {ref}"
            # A file the container names under a Secret's or ConfigMap's mount is one of its keys.
            words = [*container.get("args", []), *(v.get("value", "") for v in _env(container).values())]
            for mount in container.get("volumeMounts", []):
                source = _volume_source(volumes[mount["name"]]) if mount["name"] in volumes else None
                for word in words:
                    if source is not None and word.startswith(mount["mountPath"] + "/"):
                        assert word.removeprefix(mount["mountPath"] + "/") in created[source], \
                            f"{path.name}: {word} is not a key of {source}"


def test_the_queue_example_runs_workers_a_coordinator_and_the_postgres_they_share() -> None:
    service, postgres = _find("Service", "mirror-postgres"), _find("StatefulSet", "mirror-postgres")
    workers, coordinator = _find("Deployment", "mirror-worker"), _find("CronJob", "mirror-coordinator")
    # The URL the instructions store is the database postgres.yaml creates, behind its Service.
    created, _ = _documented_objects()
    queue = created[("secret", "mirror-queue")]
    url = urlsplit(queue["url"])
    pg = postgres["spec"]["template"]["spec"]["containers"][0]
    pg_env = {name: var.get("value") for name, var in _env(pg).items()}
    assert url.scheme == "postgresql" and url.hostname == service["metadata"]["name"]
    assert postgres["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["selector"] == postgres["spec"]["template"]["metadata"]["labels"]
    [port] = service["spec"]["ports"]
    assert url.port == port["port"] == next(p["containerPort"] for p in pg["ports"] if p["name"] == port["targetPort"])
    assert (url.username, url.path.lstrip("/")) == (pg_env["POSTGRES_USER"], pg_env["POSTGRES_DB"])
    assert _env(pg)["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "mirror-queue", "key": "password"}
    assert url.password == queue["password"]  # the same password (a shell variable) in both keys
    # initdb refuses a volume's root (lost+found): the data lives in a directory of the claim.
    [data] = pg["volumeMounts"]
    assert pg_env["PGDATA"].startswith(data["mountPath"] + "/")
    # Workers: the URL only in their environment, never on their command line; time to finish on SIGTERM.
    worker = _mirror_container(workers)
    worker_args = build_parser().parse_args(worker["args"])
    assert worker_args.queue is None
    assert _env(worker)["MIRROR_QUEUE"]["valueFrom"]["secretKeyRef"] == {"name": "mirror-queue", "key": "url"}
    assert _pod(workers)["terminationGracePeriodSeconds"] >= 300
    # The coordinator plans into the same queue (Kubernetes expands $(MIRROR_QUEUE)), one run at a time.
    sync = _mirror_container(coordinator)
    sync_args = build_parser().parse_args(sync["args"])
    assert (sync_args.queue, sync_args.dest) == ("$(MIRROR_QUEUE)", "docker")
    assert _env(sync)["MIRROR_QUEUE"] == _env(worker)["MIRROR_QUEUE"]
    assert coordinator["spec"]["concurrencyPolicy"] == "Forbid"
    # Connections (README): a worker holds up to 2 x --blob-jobs + --jobs + 10, the coordinator ~10.
    settings = dict(a.split("=", 1) for a in pg["args"] if "=" in a)
    per_worker = 2 * worker_args.blob_jobs + worker_args.jobs + 10
    assert int(settings["max_connections"]) >= workers["spec"]["replicas"] * per_worker + 10


def _as_kubelet_would(doc: dict[str, Any], objects: Objects, root: Path,
                      dest_host: str) -> tuple[list[str], dict[str, str]]:
    """The mirror container's arguments and environment as a kubelet would run them here: every
    volume a directory under ``root`` (a Secret's or ConfigMap's keys as files), paths under mounts
    moved there, env from Secrets, $(VAR) expanded, and the destination host swapped for ``dest_host``."""
    pod, container = _pod(doc), _mirror_container(doc)
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts: dict[str, Path] = {}
    for mount in container.get("volumeMounts", []):
        directory = root / mount["name"]
        directory.mkdir(parents=True)
        source = _volume_source(volumes[mount["name"]])
        for key, value in (objects[source] if source else {}).items():
            (directory / key).write_text(value)
        mounts[mount["mountPath"]] = directory

    def local(value: str) -> str:
        for path, directory in mounts.items():
            if value == path or value.startswith(path + "/"):
                return str(directory) + value.removeprefix(path)
        return value

    env = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = local(var["value"])
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = objects[("secret", ref["name"])][ref["key"]]
    args = [VAR_REF.sub(lambda m: env[m.group(1)], local(a)).replace(DEST_HOST, dest_host) for a in container["args"]]
    return args, env


def test_the_queue_example_syncs_with_its_own_arguments(registry: Registry, htpasswd_registry: Registry,
                                                         postgres: Postgres, queue_url: str, tmp_path: Path) -> None:
    """Two workers and the coordinator run the example's own arguments and environment against the
    test's registries and PostgreSQL. The destination needs auth.json's credentials, which both sides
    read from the mounted Secret and which never reach the queue."""
    repos = [f"team/svc{i}" for i in range(3)]
    for i, repo in enumerate(repos):
        push_image(registry, repo, "v1", seed=800 + i)
    dest = htpasswd_registry
    auth = base64.b64encode(f"{dest.username}:{dest.password}".encode()).decode()
    objects: Objects = {
        ("secret", "mirror-queue"): {"url": queue_url, "password": "not-used-by-mirror"},
        ("secret", "mirror-auth"): {"auth.json": json.dumps({"auths": {dest.host: {"auth": auth}}})},
        ("configmap", "mirror-sync"): {"sync.yaml": yaml.safe_dump(
            {registry.host: {"tls-verify": False, "images": {repo: [] for repo in repos}}})},
    }
    worker = _find("Deployment", "mirror-worker")
    worker_args, worker_env = _as_kubelet_would(worker, objects, tmp_path / "w", dest.host)
    sync_args, sync_env = _as_kubelet_would(_find("CronJob", "mirror-coordinator"), objects, tmp_path / "c", dest.host)
    assert "--queue" not in worker_args and queue_url in sync_args
    report = tmp_path / "report.jsonl"
    with contextlib.ExitStack() as stack:
        workers = [stack.enter_context(MirrorProcess(*worker_args, env={**os.environ, **worker_env},
                                                     log=tmp_path / f"worker{i}.log")) for i in range(2)]
        # The test registries speak plain HTTP: the run tells its workers so.
        run_mirror(*sync_args, "--dest-tls-verify=false", "--report", str(report), env={**os.environ, **sync_env},
                   timeout=90)
        assert [w.stop() for w in workers] == [0, 0], [w.output()[-2000:] for w in workers]  # SIGTERM: graceful
    records = [json.loads(line) for line in report.read_text().splitlines()]
    assert [r["outcome"] for r in records] == ["copied"] * 3, records
    assert sorted(r["destination"] for r in records) == [f"{dest.host}/mirror/svc{i}:v1" for i in range(3)]
    assert all(list_tags(dest, f"mirror/svc{i}") == ["v1"] for i in range(3))
    with psycopg.connect(queue_url) as conn:
        copiers = {row[0] for row in conn.execute("SELECT worker FROM mirror_units")}
    assert copiers <= {w.name for w in workers} and None not in copiers  # the workers copied, not the coordinator
    dump = postgres.dump(queue_url)
    assert "mirror_units" in dump and f"{dest.host}/mirror/svc0:v1" in dump
    assert dest.password is not None and dest.password not in dump and auth not in dump  # no secret in the queue


def test_the_indexed_job_shards_as_many_ways_as_it_has_completions() -> None:
    job = _load(JOB)
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["template"]["spec"]["restartPolicy"] == "Never"
    container = spec["template"]["spec"]["containers"][0]
    args = build_parser().parse_args(container["args"])
    assert args.shard_count == spec["completions"] == spec["parallelism"]
    env = {e["name"]: e["value"] for e in container["env"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    secret_volumes = {v["name"] for v in spec["template"]["spec"]["volumes"] if "secret" in v}
    assert mounts[str(Path(env["REGISTRY_AUTH_FILE"]).parent)] in secret_volumes  # credentials from a Secret


def test_the_indexed_job_command_syncs_the_catalog_once_over_its_pods(registry: Registry, registry2: Registry,
                                                                        tmp_path: Path) -> None:
    """Each completion index runs the Job's own arguments (paths and hosts swapped for the test's)."""
    repos = [f"team/svc{i}" for i in range(8)]
    for i, repo in enumerate(repos):
        push_image(registry, repo, "v1", seed=700 + i)
    sync_yaml = tmp_path / "sync.yaml"
    sync_yaml.write_text(yaml.safe_dump({registry.host: {"tls-verify": False, "images": {r: [] for r in repos}}}))
    job = _load(JOB)
    container = job["spec"]["template"]["spec"]["containers"][0]
    count = job["spec"]["completions"]
    copied: list[str] = []
    for index in range(count):
        work = tmp_path / f"pod{index}"
        work.mkdir()
        args = [a.replace("/config/sync.yaml", str(sync_yaml)).replace("/work", str(work))
                .replace(DEST_HOST, registry2.host) for a in container["args"]]
        env = {**os.environ, "JOB_COMPLETION_INDEX": str(index), "MIRROR_STATE": "none"}
        run_mirror(*args, "--dest-tls-verify=false", env=env)
        records = [json.loads(line) for line in (work / "report.jsonl").read_text().splitlines()]
        assert all(r["outcome"] == "copied" for r in records), records
        assert "mirror_sync_success 1" in (work / "mirror.prom").read_text()
        copied += [r["destination"] for r in records]
    assert sorted(copied) == sorted(f"{registry2.host}/mirror/{r.split('/')[1]}:v1" for r in repos)


def test_the_nightly_cronjob_keeps_its_state_on_a_claim_and_pushes_metrics_from_a_sidecar() -> None:
    cronjob, claim = _find("CronJob", "mirror-sync"), _find("PersistentVolumeClaim", "mirror-state")
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"  # one run at a time on the state file
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    pod, container = _pod(cronjob), _mirror_container(cronjob)
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    args = build_parser().parse_args(container["args"])
    state = Path(args.state)
    assert volumes[mounts[str(state.parent)]]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert args.metrics and args.keep_going and args.dest == "docker"
    # The sidecar starts before mirror, outlives it, and reads the metrics mirror writes.
    [sidecar] = pod["initContainers"]
    assert sidecar["restartPolicy"] == "Always"
    sidecar_mounts = {m["name"]: m for m in sidecar["volumeMounts"]}
    metrics_volume = mounts[str(Path(args.metrics).parent)]
    assert "emptyDir" in volumes[metrics_volume] and sidecar_mounts[metrics_volume]["readOnly"]
    assert args.metrics in sidecar["command"][-1]


def _traps_sigterm(pid: int) -> bool:
    """Whether the process has a handler for SIGTERM (a shell's ``trap ... TERM`` installs one)."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    status = dict(line.split(":\t", 1) for line in lines if ":\t" in line)
    return bool(int(status["SigCgt"], 16) >> (signal.SIGTERM - 1) & 1)


def test_the_nightly_cronjob_resyncs_and_its_sidecar_pushes_each_run(registry: Registry, htpasswd_registry: Registry,
                                                                      tmp_path: Path) -> None:
    """The CronJob's mirror container twice, as a kubelet would run it (volumes as directories, the
    claim's directory kept between runs), then its sidecar's own script, stopped by SIGTERM as
    Kubernetes stops a native sidecar, against a real Pushgateway; Prometheus' parser reads back what
    it serves."""
    repos = [f"team/svc{i}" for i in range(3)]
    for i, repo in enumerate(repos):
        push_image(registry, repo, "v1", seed=900 + i, layer_size=4096)
    dest = htpasswd_registry
    auth = base64.b64encode(f"{dest.username}:{dest.password}".encode()).decode()
    objects: Objects = {
        ("secret", "mirror-auth"): {"auth.json": json.dumps({"auths": {dest.host: {"auth": auth}}})},
        ("configmap", "mirror-sync"): {"sync.yaml": yaml.safe_dump(
            {registry.host: {"tls-verify": False, "images": {repo: [] for repo in repos}}})},
    }
    cronjob = _find("CronJob", "mirror-sync")
    outcomes = []
    for night in ("first", "second"):
        args, env = _as_kubelet_would(cronjob, objects, tmp_path / night, dest.host)
        if night == "second":  # the same claim, a new pod: its other volumes start empty
            shutil.rmtree(tmp_path / "second" / "state")
            shutil.copytree(tmp_path / "first" / "state", tmp_path / "second" / "state")
        run_mirror(*args, "--dest-tls-verify=false", env={**os.environ, **env})
        report = tmp_path / night / "state" / "report.jsonl"
        outcomes.append(sorted(json.loads(line)["outcome"] for line in report.read_text().splitlines()))
    assert outcomes == [["copied"] * 3, ["skipped"] * 3]
    assert (tmp_path / "second" / "state" / "state.sqlite").is_file()
    assert all(list_tags(dest, f"mirror/svc{i}") == ["v1"] for i in range(3))
    metrics = tmp_path / "second" / "metrics" / "mirror.prom"
    [sidecar] = _pod(cronjob)["initContainers"]
    [gateway_url] = [e["value"] for e in sidecar["env"] if e["name"] == "PUSHGATEWAY_URL"]
    assert sidecar["command"][:2] == ["/bin/sh", "-c"]
    script = sidecar["command"][2].replace("/metrics/mirror.prom", str(metrics))
    with start_pushgateway(tmp_path / "pushgateway") as gateway:
        assert gateway_url.startswith("http://")
        log = tmp_path / "sidecar.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(["/bin/sh", "-c", script], env={**os.environ, "PUSHGATEWAY_URL": gateway.url},
                                    stdout=out, stderr=subprocess.STDOUT)
        try:
            # Kubernetes stops a native sidecar with SIGTERM once mirror has exited: here, once the
            # script has set its trap.
            wait_until(lambda: proc.poll() is not None or _traps_sigterm(proc.pid), 10, "the sidecar's trap")
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err = log.read_text()
        assert proc.returncode == 0 and err == "", err
        pushed = {(s.name, s.labels.get("outcome", "")): (s.value, s.labels.get("job"))
                  for family in text_string_to_metric_families(gateway.metrics())
                  for s in family.samples if s.name.startswith("mirror_")}
    written = {(s.name, s.labels.get("outcome", "")): s.value
               for family in text_string_to_metric_families(metrics.read_text()) for s in family.samples}
    assert {key: value for key, (value, _job) in pushed.items()} == written
    assert {job for _value, job in pushed.values()} == {"mirror-sync"}
    assert pushed[("mirror_sync_success", "")][0] == 1 and pushed[("mirror_sync_images", "skipped")][0] == 3


def test_every_file_in_configs_is_tested_and_pointed_at_by_readme() -> None:
    """Each file under configs/ is named by a test of tests/test_configs*.py (or, for a directory the
    test globs, its directory and the file's name), and README's "Deploying" points at it."""
    tests = "\n".join(path.read_text() for path in sorted(Path(__file__).parent.glob("test_configs*.py")))
    readme = README.read_text()
    start = readme.index("\n## Deploying\n")
    deploying = readme[start:readme.index("\n## ", start + 1)]
    files = sorted(p.relative_to(ROOT) for p in (ROOT / "configs").rglob("*") if p.is_file())
    assert len(files) >= 16
    for path in files:
        assert f'"{path.name}"' in tests, f"{path}: no test names it"
        parents = [str(path), f"{path.parent}/*{path.suffix}", f"{path.parent}/", f"{path.parent}/{path.stem}"]
        assert any(f"`{p}" in deploying for p in parents) or f"+ `{path.name}`" in deploying, f"{path}: not in README"
