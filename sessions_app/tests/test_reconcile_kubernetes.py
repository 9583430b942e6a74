"""Sessions on the Kubernetes runner, through the platform's own workflow (start, stop, reconcile)
against the API server double (tests/k8s/), whose pods are real Docker containers.

A worker that dies between its steps leaves the cluster and the database disagreeing; the
reconciler's pass, with one list call per kind, puts them right: a pod whose session has ended is
removed, a running session whose pod vanished is marked failed.
"""

from __future__ import annotations

import pytest

from runners import get_runner, reset_cache
from sessions_app import actions
from sessions_app.models import EndReason, Session, State
from sessions_app.reconcile import reconcile
from sessions_app.tests.test_reconcile import own_runners  # noqa: F401  (isolates the other runners)
from tests.k8s.fixtures import SESSIONS_NAMESPACE as NS
from tests.k8s.objects import RESOURCES

pytestmark = pytest.mark.docker


@pytest.fixture
def on_kubernetes(own_runners, settings, kubeconfig, lab):  # noqa: F811
    own_runners["kubernetes"] = {"BACKEND": "runners.kubernetes.KubernetesRunner",
                                 "OPTIONS": {"kubeconfig": str(kubeconfig), "namespace": NS,
                                             "instance": own_runners["docker"]["OPTIONS"]["instance"]}}
    settings.LAB_RUNNERS = own_runners
    reset_cache()
    lab.runner = "kubernetes"
    lab.image.reference = "labs/busybox:latest"
    lab.image.save()
    lab.save()
    return lab


@pytest.fixture
def running(owner, on_kubernetes, django_capture_on_commit_callbacks) -> Session:
    with django_capture_on_commit_callbacks(execute=True):
        session = actions.start_session(owner, on_kubernetes)
    session.refresh_from_db()
    assert session.state == State.RUNNING, session.error
    return session


def pods(k8s_api) -> list[str]:
    return [pod["metadata"]["name"] for pod in k8s_api.list("pods", NS)]


def test_a_session_starts_in_a_pod_and_stops_with_it(running, k8s_api, django_capture_on_commit_callbacks):
    assert running.runner_name == "kubernetes"
    assert pods(k8s_api) == [running.runner_state["pod"]]
    result = get_runner("kubernetes").exec(running.runner_state, ["sh", "-c", "echo $LAB_SESSION"])
    assert result.stdout.decode().strip() == str(running.pk)
    with django_capture_on_commit_callbacks(execute=True):
        actions.stop_session(running)
    running.refresh_from_db()
    assert running.state == State.STOPPED
    k8s_api.wait_for(lambda: not k8s_api.cluster.select("pods", NS), 30, "the pod to go")
    assert k8s_api.list("configmaps", NS) == []


def test_a_pod_left_by_a_worker_killed_before_its_teardown_is_removed(running, k8s_api):
    # The row says stopped, the teardown job never ran: the pod and its anchor are still there.
    Session.objects.filter(pk=running.pk).update(state=State.STOPPED, end_reason=EndReason.LEARNER)
    before = len(k8s_api.calls)
    report = reconcile()
    assert (report.orphans_removed, report.errors) == (1, [])
    k8s_api.wait_for(lambda: not k8s_api.cluster.select("pods", NS), 30, "the orphaned pod to go")
    assert k8s_api.list("configmaps", NS) == []
    # One list per kind for the whole pass, whatever the number of sessions (no call per session),
    # and the removal's own list-then-watch of the anchor it waits out.
    calls = [(call.verb, call.resource) for call in k8s_api.calls[before:] if call.verb in ("list", "watch")]
    assert sorted(calls[:2]) == [("list", "configmaps"), ("list", "pods")], calls
    # (no watch when the anchor is already gone by the time it is listed)
    assert calls[2:] in ([("list", "configmaps")], [("list", "configmaps"), ("watch", "configmaps")]), calls


def test_a_running_session_whose_pod_was_deleted_behind_its_back_is_marked_failed(running, k8s_api):
    k8s_api.run(lambda: k8s_api.cluster.delete(RESOURCES["configmaps"], NS, running.runner_state["anchor"],
                                               {"propagationPolicy": "Background"}))
    k8s_api.wait_for(lambda: not k8s_api.cluster.select("pods", NS), 30, "the pod to be collected")
    report = reconcile()
    running.refresh_from_db()
    assert report.sessions_failed == 1, report
    assert (running.state, running.end_reason) == (State.FAILED, EndReason.VANISHED)


def test_a_second_pass_finds_nothing_to_do(running, k8s_api):
    first, second = reconcile(), reconcile()
    assert (first.orphans_removed, first.sessions_failed, first.errors) == (0, 0, [])
    assert (second.orphans_removed, second.sessions_failed) == (0, 0)
    assert pods(k8s_api) == [running.runner_state["pod"]]
