"""Fixtures for tests that need the Kubernetes API server double (tests/k8s/apiserver.py).

The root conftest.py loads this module as a plugin, so every test can ask for them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.k8s.apiserver import ApiServerDouble

SESSIONS_NAMESPACE = "labs-sessions"
# Debian's kubernetes-client (kubectl 1.20). Where another package owns /usr/bin/kubectl (the Google
# Cloud SDK's), deploy/scripts/test.sh unpacks the Debian package elsewhere and names it here.
KUBECTL_ENV = "LAB_TEST_KUBECTL"


def _docker_engine() -> Any:
    import docker

    try:
        client = docker.from_env()
        client.ping()
        client.images.get("labs/busybox:latest")
    except Exception as exc:  # a missing engine or image must fail the run, never skip it
        pytest.fail(f"the Kubernetes API double runs pods as Docker containers and needs the engine and "
                    f"labs/busybox:latest (deploy/scripts/build-images.sh): {exc}")
    return client


def _start(tmp_path: Path, docker_client: Any) -> ApiServerDouble:
    instance = os.environ.get("LAB_TEST_DOCKER_INSTANCE", "labs")
    return ApiServerDouble(namespaces=(SESSIONS_NAMESPACE,), docker_client=docker_client,
                           tls_dir=tmp_path / "apiserver-tls", double_id=f"{instance}-{uuid.uuid4().hex[:8]}").start()


def _finish(server: ApiServerDouble) -> None:
    server.stop()
    assert server.failures == [], f"the API server double failed on requests: {server.failures}"
    assert server.kubelet.failures == [], f"the double's kubelet failed: {server.kubelet.failures}"


@pytest.fixture
def k8s_api(tmp_path: Path) -> Iterator[ApiServerDouble]:
    """The double with a kubelet that runs every pod as real Docker containers (removed at teardown)."""
    server = _start(tmp_path, _docker_engine())
    yield server
    _finish(server)


@pytest.fixture
def k8s_api_light(tmp_path: Path) -> Iterator[ApiServerDouble]:
    """The double without containers: pods go Running with a made-up IP; exec is refused."""
    server = _start(tmp_path, None)
    yield server
    _finish(server)


@pytest.fixture
def kubeconfig(k8s_api: ApiServerDouble, tmp_path: Path) -> Path:
    return k8s_api.write_kubeconfig(tmp_path / "kubeconfig", SESSIONS_NAMESPACE)


@pytest.fixture
def kubeconfig_light(k8s_api_light: ApiServerDouble, tmp_path: Path) -> Path:
    return k8s_api_light.write_kubeconfig(tmp_path / "kubeconfig", SESSIONS_NAMESPACE)


REAL_OPTION = "--k8s-real"
REAL_NAMESPACE_ENV = "LAB_TEST_K8S_NAMESPACE"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(REAL_OPTION, action="store_true", default=False,
                     help="run the tests marked k8s_real against the cluster of $KUBECONFIG instead of the "
                          "Kubernetes API double (e.g. pytest -m k8s_real --k8s-real)")


@pytest.fixture
def cluster_kubeconfig(request: pytest.FixtureRequest) -> Path:
    """The kubeconfig runner tests talk to: the double's; with --k8s-real, for tests marked k8s_real,
    the real cluster of $KUBECONFIG (whose sessions namespace is $LAB_TEST_K8S_NAMESPACE, by default
    labs-sessions). A missing KUBECONFIG then fails the test; it never falls back to the double."""
    if request.config.getoption(REAL_OPTION) and request.node.get_closest_marker("k8s_real"):
        path = Path(os.environ.get("KUBECONFIG", ""))
        if not os.environ.get("KUBECONFIG") or not path.is_file():
            pytest.fail(f"{REAL_OPTION} needs KUBECONFIG naming a kubeconfig file of the cluster to test")
        return path
    kubeconfig: Path = request.getfixturevalue("kubeconfig")
    return kubeconfig


def cluster_namespace(config: pytest.Config) -> str:
    if config.getoption(REAL_OPTION):
        return os.environ.get(REAL_NAMESPACE_ENV, SESSIONS_NAMESPACE)
    return SESSIONS_NAMESPACE


def debian_kubectl() -> str:
    """Debian's kubectl 1.20 (package kubernetes-client); fails the test when it is missing."""
    path = os.environ.get(KUBECTL_ENV) or shutil.which("kubectl") or ""
    try:
        out = subprocess.run([path, "version", "--client", "-o", "json"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
        version = json.loads(out)["clientVersion"]["gitVersion"]
    except (OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
        pytest.fail(f"Debian's kubectl is required (apt-get install kubernetes-client, or set {KUBECTL_ENV}): {exc}")
    if not version.startswith("v1.20."):
        pytest.fail(f"{path} is kubectl {version}, not Debian's kubernetes-client 1.20: install that package, or "
                    f"unpack it (apt-get download kubernetes-client; dpkg -x ...) and set {KUBECTL_ENV}")
    return path
