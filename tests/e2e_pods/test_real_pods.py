"""The acceptance of real pods: the operator runs in its pod, and what it makes runs as real containers on the
local cluster's real node, with the isolation, budget and Pod Security that the design promises.

- The operator chart (its CRD, ServiceAccount, RBAC and Deployment) installed into `system`, as the guide's
  `kubectl get pods -n system` and `kubectl logs -n system -l control-plane=controller-manager` expect.
- The guide's example Tenant: Running with real containers; Redis answers PONG only with the password of its
  Secret; a key survives the Redis pod (the volume is a real directory); the server is healthy through the
  guide's `kubectl port-forward`; real logs; non-root processes with the chart's securityContext; Pod
  Security and the ResourceQuota refuse pods; `helm test` passes.
- Isolation, by real TCP connections with a short timeout (busybox `nc -w 3 ... -e true`) from probe pods
  and from debug containers in the tenant's own pods (the stand-in server image has no shell: `kubectl
  debug` adds a probe container that shares the server pod's network, so its connections are the server
  pod's).
- A missing secretKeyRef Secret: CreateContainerConfigError on the node, Degraded on the Tenant, Running once
  the Secret exists.

Tenants here are small (50m per container) except the guide's example, and each is deleted when its test or
class ends: all running pods' requests fit the real node's two cores.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from local_cluster.node import NODE_NAME
from tests.conftest import Kube
from tests.e2e.operator_process import Tenants, create_api_key_secret, sample_tenant, small_tenant, wait_until
from tests.e2e_pods.real_pods import (
    OPERATOR_IMAGE,
    OPERATOR_PODS,
    PROBE_RESOURCES,
    RELEASE,
    SYSTEM,
    Probe,
    apply,
    debug_container,
    effective,
    get,
    http_get,
    local_port,
    operator_pods,
    pod_ip,
    pod_names,
    port_forward,
    probe_pod,
    proc_status,
    secret_value,
    service_ip,
    wait_for_new_pod,
    wait_ready,
)
from tests.lab import lab_host

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("operator_pod")]

GUIDE, GUIDE_NAMESPACE = "sample-tenant", "tenant-sample-tenant"
SERVER_IMAGE = "docker.io/neurallog/server:latest"
REDIS_IMAGE = "docker.io/library/redis:7-alpine"
REDIS_PORT, SERVER_PORT = 6379, 3030
# Small enough that two tenants, their probes and the guide's example fit the real node's two cores.
SMALL = {"cpu": {"limit": "200m", "request": "50m"}, "memory": {"limit": "128Mi", "request": "64Mi"}}
NO_CAPABILITIES = "0000000000000000"
SECCOMP_FILTER = "2"  # /proc/<pid>/status Seccomp: 2 is a filter (RuntimeDefault), 0 none


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def small(name: str, server: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    """A Tenant of one server and one Redis of 50m each, ``spec`` over that."""
    return small_tenant(
        name,
        server={"replicas": 1, "resources": SMALL, **(server or {})},
        redis={"resources": SMALL, "config": {"maxmemory": "32mb"}},
        **spec,
    )


def is_ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def redis_cli(redis: Probe, password: str | None, *command: str) -> str:
    """redis-cli in the Redis container against its own Redis: with ``password`` (handed over on stdin, so it
    is in no command line), or with none at all. Its answer, errors included."""
    if password is None:
        script = 'exec env -u REDISCLI_AUTH redis-cli -h 127.0.0.1 -p 6379 "$@"'
        result = redis.run("sh", "-c", script, "sh", *command, check=False)
    else:
        script = 'read -r REDISCLI_AUTH && export REDISCLI_AUTH && exec redis-cli -h 127.0.0.1 -p 6379 "$@"'
        result = redis.run("sh", "-c", script, "sh", *command, input=password + "\n", check=False)
    return (result.stdout + result.stderr).strip()


def logs(kube: Kube, namespace: str, selector: str) -> str:
    """`kubectl logs -l <selector>`, every line of every pod, each line prefixed with its pod."""
    return kube.kubectl("logs", "-n", namespace, "-l", selector, "--tail=-1", "--prefix").stdout


def operator_logs(kube: Kube) -> str:
    return kube.kubectl("logs", "-n", SYSTEM, "-l", OPERATOR_PODS, "--tail=-1").stdout


# -- the operator --------------------------------------------------------------------------------------------


def test_the_operator_runs_in_its_pod_from_the_preloaded_image_as_the_charts_service_account(
    kube: Kube,
) -> None:
    table = kube.kubectl("get", "pods", "-n", SYSTEM).stdout  # the guide's "Verifying the Installation"
    assert re.search(r"^controller-manager-\S+\s+1/1\s+Running\s", table, re.MULTILINE), table
    pods = operator_pods(kube)
    assert [p["metadata"]["namespace"] for p in pods] == [SYSTEM], "exactly one operator, in system"
    (pod,) = pods
    assert pod["spec"]["nodeName"] == NODE_NAME
    (container,) = pod["spec"]["containers"]
    (state,) = pod["status"]["containerStatuses"]
    assert container["imagePullPolicy"] == "Never"
    assert state["image"] == OPERATOR_IMAGE
    assert state["ready"] and "running" in state["state"], state
    assert state["containerID"].startswith("containerd://"), state

    # The chart's ServiceAccount, bound to the chart's ClusterRole.
    (account,) = get(kube, "serviceaccounts", "-n", SYSTEM, "-l", f"app.kubernetes.io/instance={RELEASE}")[
        "items"
    ]
    name = account["metadata"]["name"]
    assert pod["spec"]["serviceAccountName"] == name
    bindings = get(kube, "clusterrolebindings", "-l", f"app.kubernetes.io/instance={RELEASE}")["items"]
    subjects = [(b["roleRef"]["name"], s) for b in bindings for s in b["subjects"]]
    assert any(s == {"kind": "ServiceAccount", "name": name, "namespace": SYSTEM} for _, s in subjects), (
        bindings
    )
    role = next(r for r, s in subjects if s["name"] == name)
    rules = get(kube, "clusterrole", role)["rules"]
    assert any("tenants" in r["resources"] and "neurallog.io" in r["apiGroups"] for r in rules), rules

    # The guide's troubleshooting command shows the operator's own log: its JSON records, from the start
    # (it logged in to the API server with the ServiceAccount's credentials).
    def records() -> list[dict[str, Any]] | None:
        lines = operator_logs(kube).splitlines()
        parsed = [json.loads(line) for line in lines if line.startswith("{")]
        return parsed if any("authentication has finished" in r.get("message", "") for r in parsed) else None

    logged = wait_until(records, timeout=60, what="the operator's log")
    assert all({"message", "timestamp", "severity"} <= record.keys() for record in logged), logged


# -- the guide's example -------------------------------------------------------------------------------------


@pytest.fixture(scope="class")
def guide(kube: Kube, operator_pod: None) -> Iterator[Tenants]:
    """The guide's example Tenant, Running; deleted when the class ends."""
    made = Tenants(kube)
    try:
        made.delete(GUIDE)  # left over from an interrupted run or the demo
        made.apply(sample_tenant())
        create_api_key_secret(kube, made, GUIDE_NAMESPACE)
        made.wait_for_phase(GUIDE, "Running", timeout=300)
    except BaseException:
        made.cleanup()
        raise
    yield made
    made.cleanup()


class TestTheGuidesExample:
    def test_it_runs_in_real_containers_made_by_the_operator_pod(self, kube: Kube, guide: Tenants) -> None:
        status = guide.status(GUIDE)
        assert status["phase"] == "Running"
        assert (status["serverStatus"]["readyReplicas"], status["redisStatus"]["readyReplicas"]) == (2, 1)
        pods = get(kube, "pods", "-n", GUIDE_NAMESPACE)["items"]
        images = {"neurallog-server": SERVER_IMAGE, "redis": REDIS_IMAGE}
        assert sorted(p["metadata"]["labels"]["app"] for p in pods) == [
            "neurallog-server",
            "neurallog-server",
            "redis",
        ]
        for pod in pods:
            assert pod["spec"]["nodeName"] == NODE_NAME, pod["metadata"]["name"]
            (state,) = pod["status"]["containerStatuses"]
            assert state["ready"] and "running" in state["state"], state
            assert state["containerID"].startswith("containerd://"), state
            assert state["image"] == images[pod["metadata"]["labels"]["app"]], state
        # The pod of the operator made it: its log tells of this tenant's release.
        assert re.search(rf"tenant {GUIDE}: Installed\b", operator_logs(kube)), operator_logs(kube)[-3000:]

    def test_redis_answers_only_with_the_password_of_its_secret(self, kube: Kube, guide: Tenants) -> None:
        password = secret_value(kube, GUIDE_NAMESPACE, "redis-auth", "password")
        redis = Probe(kube, GUIDE_NAMESPACE, "redis-0", "redis")
        assert redis_cli(redis, password, "PING") == "PONG"
        assert "NOAUTH" in redis_cli(redis, None, "PING")
        wrong = redis_cli(redis, password + "-wrong", "PING")
        assert wrong != "PONG" and "WRONGPASS" in wrong, wrong
        redis_log = logs(kube, GUIDE_NAMESPACE, "app=redis")
        assert "Ready to accept connections" in redis_log, redis_log
        leaked = password in redis_log or password in operator_logs(kube)
        assert not leaked, "the Redis password appears in a log"

    def test_the_server_is_healthy_through_the_guides_port_forward(self, kube: Kube, guide: Tenants) -> None:
        port = local_port(SERVER_PORT)
        url = f"http://127.0.0.1:{port}/health"
        # kubectl -n tenant-sample-tenant port-forward svc/neurallog-server 3030:3030
        with port_forward(kube, GUIDE_NAMESPACE, "svc/neurallog-server", f"{port}:{SERVER_PORT}") as forward:

            def answered() -> tuple[int, str] | None:
                if forward.poll() is not None:
                    raise AssertionError(f"kubectl port-forward exited: {forward.stdout.read()}")  # type: ignore[union-attr]
                code, body = http_get(url)
                return (code, body) if code else None

            code, body = wait_until(answered, timeout=30, what=f"an answer on {url}")
        assert code == 200, body
        assert json.loads(body) == {"status": "ok", "redis": "ok"}

        # The server's own log: each pod logs its configuration and listens on 3030; the pod that answered
        # logged in to Redis with the password that the chart's default REDIS_URL carries.
        server_log = logs(kube, GUIDE_NAMESPACE, "app=neurallog-server")
        for pod in pod_names(kube, GUIDE_NAMESPACE, "app=neurallog-server"):
            own = "\n".join(line for line in server_log.splitlines() if f"pod/{pod}/" in line)
            assert re.search(rf"listening on \S*:{SERVER_PORT}\b", own), own
            assert re.search(
                r'config: .*redis redis:6379 .*password from REDIS_URL.*LOG_LEVEL="debug"', own
            ), own
        assert "redis: connected to redis:6379 (db 0, password from REDIS_URL)" in server_log, server_log
        assert "health: 200 ok" in server_log, server_log
        leaked = secret_value(kube, GUIDE_NAMESPACE, "redis-auth", "password") in server_log
        assert not leaked, "the Redis password appears in the server's log"

    def test_its_pods_run_as_non_root_with_the_charts_security_context(
        self, kube: Kube, guide: Tenants
    ) -> None:
        users = {}
        for pod in get(kube, "pods", "-n", GUIDE_NAMESPACE)["items"]:
            for container in pod["spec"]["containers"]:
                where = f"{pod['metadata']['name']}/{container['name']}"
                security = container.get("securityContext", {})
                assert effective(pod, container, "runAsNonRoot") is True, where
                uid = effective(pod, container, "runAsUser")
                assert isinstance(uid, int) and uid > 0, where
                assert security.get("allowPrivilegeEscalation") is False, where
                assert security.get("readOnlyRootFilesystem") is True, where
                assert security.get("capabilities", {}).get("drop") == ["ALL"], where
                assert effective(pod, container, "seccompProfile") == {"type": "RuntimeDefault"}, where
                users[pod["metadata"]["labels"]["app"]] = uid

        # The processes themselves, as the kernel sees them.
        redis = Probe(kube, GUIDE_NAMESPACE, "redis-0", "redis")
        assert redis.run("id", "-u").stdout.strip() == str(users["redis"])
        server_pod = pod_names(kube, GUIDE_NAMESPACE, "app=neurallog-server")[0]
        server = debug_container(kube, GUIDE_NAMESPACE, server_pod, unique("inspect"), target="server")
        for probe, app in ((redis, "redis"), (server, "neurallog-server")):
            status = proc_status(probe)
            # The workload's own process, pid 1 of its container (redis-server, neurallog-server-standin).
            assert status["Name"].startswith(app.split("-")[0]), status
            assert status["Uid"].split() == [str(users[app])] * 4, status
            assert status["CapEff"] == NO_CAPABILITIES, status
            assert status["NoNewPrivs"] == "1", status
            assert status["Seccomp"] == SECCOMP_FILTER, status
        written = redis.run("touch", "/written-by-the-test", check=False)
        assert written.returncode != 0 and "Read-only file system" in written.stderr, written

    def test_pod_security_and_the_budget_refuse_pods(self, kube: Kube, guide: Tenants) -> None:
        quota = get(kube, "resourcequota", "tenant-quota", "-n", GUIDE_NAMESPACE)["status"]
        budget = quota["hard"]["requests.cpu"]
        fitting = probe_pod(unique("fits"), {"app": "budget-test"})
        over = probe_pod(unique("over"), {"app": "budget-test"})
        over["spec"]["containers"][0]["resources"] = {
            "requests": {"cpu": budget, "memory": "16Mi"},
            "limits": {"cpu": budget, "memory": "32Mi"},
        }
        root = probe_pod(unique("root"), {"app": "budget-test"}, restricted=False)
        root["spec"]["containers"][0]["resources"] = PROBE_RESOURCES
        del root["spec"]["containers"][0]["securityContext"]

        refused = kube.kubectl(
            "create", "-n", GUIDE_NAMESPACE, "-f", "-", input=json.dumps(root), check=False
        )
        assert refused.returncode != 0, "a pod that may run as root was admitted"
        assert 'violates PodSecurity "restricted' in refused.stderr, refused.stderr
        refused = kube.kubectl(
            "create", "-n", GUIDE_NAMESPACE, "-f", "-", input=json.dumps(over), check=False
        )
        assert refused.returncode != 0, (
            f"a pod requesting the whole budget ({budget} CPU) was admitted: {quota}"
        )
        assert "exceeded quota: tenant-quota" in refused.stderr and "requests.cpu" in refused.stderr, (
            refused.stderr
        )

        # The same kind of pod within the budget and compliant is admitted and runs.
        kube.kubectl("create", "-n", GUIDE_NAMESPACE, "-f", "-", input=json.dumps(fitting))
        try:
            wait_ready(kube, GUIDE_NAMESPACE, fitting["metadata"]["name"])
        finally:
            kube.kubectl("delete", "pod", fitting["metadata"]["name"], "-n", GUIDE_NAMESPACE, "--wait=false")

    def test_helm_test_passes_on_the_real_node(self, kube: Kube, guide: Tenants) -> None:
        hooks = kube.helm("get", "hooks", GUIDE, "-n", GUIDE_NAMESPACE).stdout
        tests = sorted(
            hook["metadata"]["name"]
            for hook in yaml.safe_load_all(hooks)
            if hook and "test" in hook["metadata"].get("annotations", {}).get("helm.sh/hook", "").split(",")
        )
        assert tests, f"the release has no test hooks (the chart in the operator image has none):\n{hooks}"
        result = kube.helm("test", GUIDE, "-n", GUIDE_NAMESPACE, "--logs", "--timeout", "180s", check=False)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        for name in tests:
            pod = get(kube, "pod", name, "-n", GUIDE_NAMESPACE)
            assert pod["status"]["phase"] == "Succeeded", (name, pod["status"], output)
            assert pod["spec"]["nodeName"] == NODE_NAME, name
        assert "PONG" in output and "healthy" in output, output

    def test_a_key_survives_deleting_the_redis_pod(self, kube: Kube, guide: Tenants) -> None:
        password = secret_value(kube, GUIDE_NAMESPACE, "redis-auth", "password")
        redis = Probe(kube, GUIDE_NAMESPACE, "redis-0", "redis")
        key, value = unique("e2e-key"), uuid.uuid4().hex
        assert redis_cli(redis, password, "SET", key, value) == "OK"
        old_uid = get(kube, "pod", "redis-0", "-n", GUIDE_NAMESPACE)["metadata"]["uid"]
        kube.kubectl("delete", "pod", "redis-0", "-n", GUIDE_NAMESPACE, "--wait=true", timeout=120)
        wait_for_new_pod(kube, GUIDE_NAMESPACE, "redis-0", old_uid)
        assert redis_cli(redis, password, "GET", key) == value
        # The volume is a directory of this machine, where Redis wrote its data.
        claim = get(kube, "pvc", "data-redis-0", "-n", GUIDE_NAMESPACE)
        assert claim["status"]["phase"] == "Bound"
        volume = get(kube, "pv", claim["spec"]["volumeName"])
        assert (Path(volume["spec"]["hostPath"]["path"]) / "dump.rdb").is_file(), volume["spec"]
        guide.wait_for_phase(GUIDE, "Running", timeout=180)


# -- isolation ---------------------------------------------------------------------------------------------


SIDE_PORT = 8080  # a port the server pod listens on (in its debug container) that no rule opens
API_PORT, API_SIDE_PORT = 443, 8443  # the guide's egress rule port, and another one of the same peer


@dataclass(frozen=True)
class Network:
    """Tenant A (the guide's network policy shape) and B (defaults), and the pods around them."""

    a_namespace: str
    b_namespace: str
    allowed: str  # in A's allowedNamespaces
    other: str  # a namespace without policies that A does not allow
    a_server: Probe  # debug container in A's server pod, serving SIDE_PORT
    a_redis: Probe
    b_server: Probe
    b_redis: Probe
    prometheus: Probe  # A's namespace, matches A's ingress rule
    stranger: Probe  # A's namespace, matches no rule
    a_api: Probe  # A's namespace, matches A's egress rule, serves API_PORT and API_SIDE_PORT
    visitor: Probe  # the allowed namespace
    allowed_api: Probe  # the allowed namespace, matches A's egress rule, serves API_PORT
    outsider: Probe  # the other namespace, labelled like A's ingress rule's peers
    other_api: Probe  # the other namespace, matches A's egress rule's labels, serves API_PORT
    ip: dict[str, str]  # pod and Service addresses by name

    def dns(self, service: str, namespace: str) -> str:
        return f"{service}.{namespace}.svc.cluster.local"


@pytest.fixture(scope="class")
def network(kube: Kube, operator_pod: None) -> Iterator[Network]:
    made = Tenants(kube)
    tag = uuid.uuid4().hex[:6]
    a, b = f"pods-a-{tag}", f"pods-b-{tag}"
    a_ns, b_ns, allowed, other = f"tenant-{a}", f"tenant-{b}", f"pods-allowed-{tag}", f"pods-other-{tag}"
    namespaces = (allowed, other)
    try:
        for namespace in namespaces:
            kube.kubectl("create", "namespace", namespace)
        policy = {
            "allowedNamespaces": [allowed],
            "ingressRules": [
                {
                    "description": "Allow monitoring tools",
                    "from": {"app": "prometheus"},
                    "ports": [{"protocol": "TCP", "port": SERVER_PORT}],
                }
            ],
            "egressRules": [
                {
                    "description": "Allow external API access",
                    "to": {"app": "external-api"},
                    "ports": [{"protocol": "TCP", "port": API_PORT}],
                }
            ],
        }
        made.apply(small(a, networkPolicy=policy), small(b))
        made.wait_for_phase(a, "Running", timeout=300)
        made.wait_for_phase(b, "Running", timeout=300)
        apply(
            kube,
            a_ns,
            probe_pod("prometheus", {"app": "prometheus"}),
            probe_pod("stranger", {"app": "stranger"}),
            probe_pod("external-api", {"app": "external-api"}, listen=(API_PORT, API_SIDE_PORT)),
        )
        apply(
            kube,
            allowed,
            probe_pod("visitor", {"app": "visitor"}, restricted=False),
            probe_pod("external-api", {"app": "external-api"}, listen=(API_PORT,), restricted=False),
        )
        apply(
            kube,
            other,
            probe_pod("outsider", {"app": "prometheus"}, restricted=False),
            probe_pod("external-api", {"app": "external-api"}, listen=(API_PORT,), restricted=False),
        )
        wait_ready(kube, a_ns, "prometheus", "stranger", "external-api")
        wait_ready(kube, allowed, "visitor", "external-api")
        wait_ready(kube, other, "outsider", "external-api")
        a_server_pod = pod_names(kube, a_ns, "app=neurallog-server")[0]
        b_server_pod = pod_names(kube, b_ns, "app=neurallog-server")[0]
        serve = f"mkdir -p /tmp/www && echo side > /tmp/www/index.html && httpd -p {SIDE_PORT} -h /tmp/www"
        ip = {
            "a-server": pod_ip(kube, a_ns, a_server_pod),
            "a-redis": pod_ip(kube, a_ns, "redis-0"),
            "a-redis-service": service_ip(kube, a_ns, "redis"),
            "a-api": pod_ip(kube, a_ns, "external-api"),
            "allowed-api": pod_ip(kube, allowed, "external-api"),
            "other-api": pod_ip(kube, other, "external-api"),
        }
        yield Network(
            a_namespace=a_ns,
            b_namespace=b_ns,
            allowed=allowed,
            other=other,
            a_server=debug_container(kube, a_ns, a_server_pod, unique("probe"), command=serve),
            a_redis=Probe(kube, a_ns, "redis-0", "redis"),
            b_server=debug_container(kube, b_ns, b_server_pod, unique("probe")),
            b_redis=Probe(kube, b_ns, "redis-0", "redis"),
            prometheus=Probe(kube, a_ns, "prometheus", "probe"),
            stranger=Probe(kube, a_ns, "stranger", "probe"),
            a_api=Probe(kube, a_ns, "external-api", "probe"),
            visitor=Probe(kube, allowed, "visitor", "probe"),
            allowed_api=Probe(kube, allowed, "external-api", "probe"),
            outsider=Probe(kube, other, "outsider", "probe"),
            other_api=Probe(kube, other, "external-api", "probe"),
            ip=ip,
        )
    finally:
        made.cleanup()
        for namespace in namespaces:
            kube.kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=false")


def assert_reaches(source: Probe, host: str, port: int) -> None:
    assert source.reaches(host, port), f"{source} cannot reach {host}:{port}"


def assert_blocked(source: Probe, host: str, port: int) -> None:
    assert source.is_blocked(host, port), f"{source} reaches {host}:{port}"


class TestIsolationByRealConnections:
    def test_the_server_reaches_its_redis_and_the_cluster_dns(self, network: Network) -> None:
        # busybox nslookup applies no search domain: the Service's full name.
        looked_up = network.a_server.run("nslookup", network.dns("redis", network.a_namespace), check=False)
        assert looked_up.returncode == 0, looked_up.stdout + looked_up.stderr
        assert network.ip["a-redis-service"] in looked_up.stdout, looked_up.stdout
        assert_reaches(network.a_server, "redis", REDIS_PORT)
        assert_reaches(network.a_server, network.dns("redis", network.a_namespace), REDIS_PORT)
        assert_reaches(network.a_server, network.ip["a-redis"], REDIS_PORT)

    def test_tenant_b_reaches_neither_redis_nor_server_of_tenant_a(self, network: Network) -> None:
        # What B's pods try is there: A's own server reaches A's Redis, the allowed namespace A's server.
        assert_reaches(network.a_server, network.ip["a-redis"], REDIS_PORT)
        assert_reaches(network.visitor, network.ip["a-server"], SERVER_PORT)
        # And B's own path works, from the very container that tries A's.
        assert_reaches(network.b_server, network.dns("redis", network.b_namespace), REDIS_PORT)
        targets = (
            (network.ip["a-redis"], REDIS_PORT),
            (network.dns("redis", network.a_namespace), REDIS_PORT),
            (network.ip["a-server"], SERVER_PORT),
            (network.dns("neurallog-server", network.a_namespace), SERVER_PORT),
        )
        for source in (network.b_server, network.b_redis):
            for host, port in targets:
                assert_blocked(source, host, port)

    def test_an_allowed_namespace_reaches_the_server_on_its_port_and_no_other_namespace_does(
        self, network: Network
    ) -> None:
        assert_reaches(network.visitor, network.ip["a-server"], SERVER_PORT)
        assert_reaches(network.visitor, network.dns("neurallog-server", network.a_namespace), SERVER_PORT)
        # The side port listens (seen from the server pod itself) and Redis listens, but neither is open.
        assert network.a_server.connects("127.0.0.1", SIDE_PORT)
        assert_reaches(network.a_server, network.ip["a-redis"], REDIS_PORT)
        assert_blocked(network.visitor, network.ip["a-server"], SIDE_PORT)
        assert_blocked(network.visitor, network.ip["a-redis"], REDIS_PORT)
        # A namespace A did not allow: nothing, though its pod reaches what is not behind A's policies.
        assert_reaches(network.outsider, network.ip["other-api"], API_PORT)
        for host, port in (
            (network.ip["a-server"], SERVER_PORT),
            (network.dns("neurallog-server", network.a_namespace), SERVER_PORT),
            (network.ip["a-redis"], REDIS_PORT),
        ):
            assert_blocked(network.outsider, host, port)

    def test_an_ingress_rule_lets_its_pods_reach_the_server_on_its_port_only(self, network: Network) -> None:
        assert_reaches(network.prometheus, network.ip["a-server"], SERVER_PORT)
        assert_reaches(network.prometheus, network.dns("neurallog-server", network.a_namespace), SERVER_PORT)
        assert network.a_server.connects("127.0.0.1", SIDE_PORT)
        assert_blocked(network.prometheus, network.ip["a-server"], SIDE_PORT)
        assert_blocked(network.prometheus, network.ip["a-redis"], REDIS_PORT)
        # Pods of A's namespace that the rule does not name, and pods named so in a namespace A did not allow.
        assert_blocked(network.stranger, network.ip["a-server"], SERVER_PORT)
        assert_blocked(network.outsider, network.ip["a-server"], SERVER_PORT)

    def test_an_egress_rule_lets_the_server_reach_its_peers_on_its_port_only(self, network: Network) -> None:
        assert_reaches(network.a_server, network.ip["a-api"], API_PORT)  # a peer in A's own namespace
        assert_reaches(network.a_server, network.ip["allowed-api"], API_PORT)  # one in an allowed namespace
        # The peer's other port listens, and so does the peer of a namespace A did not allow: both closed.
        assert network.a_api.connects("127.0.0.1", API_SIDE_PORT)
        assert_blocked(network.a_server, network.ip["a-api"], API_SIDE_PORT)
        assert_reaches(network.outsider, network.ip["other-api"], API_PORT)
        assert_blocked(network.a_server, network.ip["other-api"], API_PORT)

    def test_nothing_in_a_tenant_reaches_a_host_outside_the_cluster(self, network: Network) -> None:
        # The outside host serves the egress rule's port: the rule opens it to its peers, not to the world.
        with lab_host(port=API_PORT) as outside:
            assert_reaches(network.outsider, outside.address, outside.port)  # a pod without policies does
            for source in (
                network.a_server,
                network.a_redis,
                network.prometheus,
                network.stranger,
                network.a_api,
                network.b_server,
                network.b_redis,
            ):
                assert_blocked(source, outside.address, outside.port)


# -- a missing Secret ----------------------------------------------------------------------------------------


def test_a_missing_secret_fails_the_container_on_the_node_until_it_exists(
    kube: Kube, tenants: Tenants
) -> None:
    name = unique("nosecret")
    namespace = f"tenant-{name}"
    api_key = {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "tenant-secrets", "key": "api-key"}}}
    tenants.apply(small(name, server={"env": [api_key]}))

    def config_error() -> dict[str, Any] | None:
        result = kube.kubectl(
            "get", "pods", "-n", namespace, "-l", "app=neurallog-server", "-o", "json", check=False
        )
        for pod in json.loads(result.stdout)["items"] if result.returncode == 0 else []:
            for state in pod["status"].get("containerStatuses", []):
                waiting = state["state"].get("waiting", {})
                if waiting.get("reason") == "CreateContainerConfigError":
                    return {"pod": pod, "waiting": waiting}
        return None

    found = wait_until(
        config_error, timeout=180, every=1, what="the server container's CreateContainerConfigError"
    )
    assert found["pod"]["spec"]["nodeName"] == NODE_NAME
    assert 'secret "tenant-secrets" not found' in found["waiting"].get("message", ""), found["waiting"]
    status = tenants.wait_for_phase(name, "Degraded", timeout=120)
    degraded = tenants.condition(name, "Degraded")
    assert degraded["status"] == "True", status
    assert "tenant-secrets" in degraded["message"], degraded

    create_api_key_secret(kube, tenants, namespace)
    tenants.wait_for_phase(name, "Running", timeout=180)
    pods = [
        p for p in get(kube, "pods", "-n", namespace, "-l", "app=neurallog-server")["items"] if is_ready(p)
    ]
    assert pods, "no server pod is Ready"
    assert all("running" in s["state"] for p in pods for s in p["status"]["containerStatuses"]), pods


def test_the_guides_debug_argument_gives_debug_logs(kube: Kube, operator_pod: None) -> None:
    """The guide's "Debugging the Operator": `--zap-log-level=debug` in the Deployment's args (what
    `kubectl edit deployment -n system controller-manager` does) restarts the operator with debug logs. Runs
    last in this module: the operator restarts."""
    info = kube.kubectl("logs", "-n", SYSTEM, "-l", OPERATOR_PODS, "--tail=-1").stdout
    assert '"severity": "debug"' not in info
    patch = [
        {"op": "replace", "path": "/spec/template/spec/containers/0/args", "value": ["--zap-log-level=debug"]}
    ]
    kube.kubectl(
        "patch", "deployment", "controller-manager", "-n", SYSTEM, "--type=json", "-p", json.dumps(patch)
    )
    kube.kubectl("rollout", "status", "deployment/controller-manager", "-n", SYSTEM, "--timeout=180s")

    def debug_lines() -> bool:
        logs = kube.kubectl("logs", "-n", SYSTEM, "-l", OPERATOR_PODS, "--tail=-1", check=False).stdout
        return '"severity": "debug"' in logs

    wait_until(debug_lines, timeout=60, what="debug records in the operator's log")
