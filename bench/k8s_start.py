"""Kubernetes start latency and API calls: the Kubernetes runner against the API server double.

The double (tests/k8s/apiserver.py) runs in a child process of its own, as an API server would,
and its kubelet runs every pod as real Docker containers. Measured in the same run, interleaved
round by round so that engine drift hits every case alike:

    raw docker            `docker run -d` of the image, then a TTY `docker exec` shell: the baseline
    raw pod-shaped        what the double's kubelet asks of the engine for one pod, without any API:
                          an emptyDir volume, a sandbox container, the main container in its network
                          and IPC namespaces with the pod's security settings, one startup-probe exec
    k8s runner            KubernetesRunner.start() until it returns (request → running), then
                          open_terminal() until the first byte of the shell (K8sTerminal); one runner
                          object for all rounds, so its API client and connections are warm
    fresh process         the same in a new process each time (imports, API client, TLS included), as
                          in the work horse the platform's RQ worker forks for every provisioning job
    ... starter files     both again for a lab with starter files (copied in through exec); the image
                          needs a /run directory and root (--starter-image, e.g. labs/python:3.11-slim)

Then, from the double's call log in RBAC terms (verb resource), the API calls per start, per
terminal, per reconcile pass (list_managed, with the session running) and per stop; the exec round
trips per start; and where the start's time goes inside the runner (create calls, the readiness
wait, the Events lists it makes on every pod change). Medians with min–max; figures, no verdicts.

    .venv/bin/python bench/k8s_start.py [--rounds 5] [--warmup 1] [--image labs/busybox:latest]
        [--starter-image IMAGE] [--busy-events 3000] [--step-delay 0] [--agent]

Everything it makes carries a label (labs.bench=<run>, labs.k8s-double=labsbench-<run>) and is
removed on the way out, after Ctrl-C or SIGTERM too; the double stops itself if this process dies.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import multiprocessing
import os
import select
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NAMESPACE = "labs-sessions"
BENCH_LABEL = "labs.bench"  # on every container and volume this script makes itself
DOUBLE_LABEL = "labs.k8s-double"  # tests/k8s/kubelet.py puts it on everything the double's kubelet makes
PROBE = ["/bin/sh", "-c", "true"]  # the runner's startup probe


# ---- the API server double, in a process of its own ---------------------------------------------------
def serve_double(conn: Connection, tls_dir: str, double_id: str, step_delay: float) -> None:
    """Child process: run the double and answer the parent's questions about its call log. Ends
    (removing every container and volume the double made) on "stop" or when the parent is gone."""
    # Ctrl-C, or `timeout`/`kill` of the process group, reach us too: the parent stops us in order, and
    # when the parent is gone the pipe closes and we clean up all the same.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    import docker

    from tests.k8s.apiserver import ApiServerDouble

    try:
        server = ApiServerDouble(namespaces=(NAMESPACE,), docker_client=docker.from_env(), tls_dir=Path(tls_dir),
                                 double_id=double_id, step_delay=step_delay).start()
    except Exception as exc:
        conn.send(("error", repr(exc)))
        return
    try:
        conn.send(("ready", server.kubeconfig(NAMESPACE)))
        while True:
            try:
                op, arg = conn.recv()
            except (EOFError, OSError):
                break  # the parent died: clean up all the same
            if op == "calls":
                conn.send([(c.verb, c.resource, c.code) for c in list(server.calls)[arg:]])
            elif op == "open-execs":
                conn.send(server.run(lambda: len(server._sockets)))
            elif op == "stop":
                break
    finally:
        server.stop()
        with contextlib.suppress(OSError, ValueError):
            conn.send(("stopped", server.failures + server.kubelet.failures))


class Double:
    def __init__(self, workdir: Path, double_id: str, step_delay: float) -> None:
        self.double_id = double_id
        context = multiprocessing.get_context("spawn")
        self.conn, child_conn = context.Pipe()
        self.process = context.Process(target=serve_double, name="k8s-api-double",
                                       args=(child_conn, str(workdir / "tls"), self.double_id, step_delay))
        self.process.start()
        child_conn.close()
        if not self.conn.poll(60):
            raise SystemExit("the API server double did not start within 60 s")
        kind, payload = self.conn.recv()
        if kind != "ready":
            raise SystemExit(f"the API server double did not start: {payload}")
        import yaml

        self.kubeconfig = workdir / "kubeconfig"
        self.kubeconfig.write_text(yaml.safe_dump(payload))
        self.kubeconfig.chmod(0o600)

    def _ask(self, op: str, arg: Any = None) -> Any:
        self.conn.send((op, arg))
        if not self.conn.poll(60):
            raise RuntimeError(f"the API server double did not answer {op!r}")
        return self.conn.recv()

    def settle(self) -> int:
        """The length of the call log once no exec is open any more (an exec is logged when it ends)."""
        deadline = time.monotonic() + 15
        while self._ask("open-execs") and time.monotonic() < deadline:
            time.sleep(0.01)
        return len(self._ask("calls", 0))

    def cpu_seconds(self) -> float:
        """User + system CPU time of the double's process (its loop, kubelet and Docker threads) so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def calls(self, since: int, until: int) -> list[tuple[str, str, int]]:
        return list(self._ask("calls", since)[: until - since])

    def stop(self) -> list[str]:
        failures: list[str] = []
        if self.process.is_alive():
            with contextlib.suppress(OSError, ValueError):
                self.conn.send(("stop", None))
                if self.conn.poll(90):
                    kind, payload = self.conn.recv()
                    if kind == "stopped":
                        failures = list(payload)
        self.process.join(30)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(10)
        return failures


# ---- one sample ---------------------------------------------------------------------------------------
@dataclass
class Sample:
    running: float
    shell: float
    attach: float
    extra: dict[str, float] = field(default_factory=dict)  # other durations (s) and counts
    calls: dict[str, collections.Counter[str]] = field(default_factory=dict)  # phase -> "verb resource" -> n
    codes: collections.Counter[str] = field(default_factory=collections.Counter)  # non-2xx answers


def first_byte(fd: int, read: Callable[[], bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError("no shell output within 30 s")
        readable, _, _ = select.select([fd], [], [], left)
        if readable:
            if read():
                return
            raise RuntimeError("the shell ended before its first byte")


class RawDockerCase:
    """The baseline: `docker run -d` of the image and a TTY `docker exec` shell in it."""

    def __init__(self, client: Any, image: str, run_id: str) -> None:
        self.client, self.image, self.labels = client, image, {BENCH_LABEL: run_id}

    def _shell(self, container_id: str) -> Any:
        exec_id = self.client.api.exec_create(container_id, ["sh", "-i"], stdin=True, tty=True)["Id"]
        sock = self.client.api.exec_start(exec_id, socket=True, tty=True)
        raw = getattr(sock, "_sock", sock)
        return raw

    def once(self) -> Sample:
        began = time.perf_counter()
        container = self.client.containers.run(self.image, ["sleep", "3600"], detach=True, labels=self.labels)
        try:
            running = time.perf_counter()
            raw = self._shell(container.id)
            first_byte(raw.fileno(), lambda: raw.recv(1024))
            shell = time.perf_counter()
            raw.close()
        finally:
            container.remove(force=True)
        return Sample(running - began, shell - began, shell - running)


class PodShapedCase(RawDockerCase):
    """The engine's share of a pod, as the double's kubelet asks for it, with no API in between."""

    def __init__(self, client: Any, image: str, run_id: str, memory_mb: int, cpu: float) -> None:
        super().__init__(client, image, run_id)
        self.memory, self.nano_cpus = memory_mb * 2**20, int(cpu * 1e9)

    def once(self) -> Sample:
        import docker.types

        from runners.kubernetes import DEFAULT_CAPS, KEEPALIVE

        api, name = self.client.api, f"labsbench-{uuid.uuid4().hex[:10]}"
        made: list[str] = []
        began = time.perf_counter()
        volume = self.client.volumes.create(name=f"{name}-workspace", labels=self.labels)
        try:
            mount = docker.types.Mount("/workspace", volume.name, type="volume", no_copy=True)
            sandbox = self.client.containers.run(self.image, ["/bin/sh", "-c", "trap 'exit 0' TERM; sleep 3600"],
                                                 detach=True, labels=self.labels, hostname="lab",
                                                 name=f"{name}-sandbox", mem_limit="32m", ipc_mode="shareable")
            made.append(sandbox.id)
            host_config = api.create_host_config(
                network_mode=f"container:{sandbox.id}", ipc_mode=f"container:{sandbox.id}", cap_drop=["ALL"],
                cap_add=DEFAULT_CAPS, security_opt=["no-new-privileges:true"], mounts=[mount],
                mem_limit=self.memory, memswap_limit=self.memory, nano_cpus=self.nano_cpus)
            main = api.create_container(self.image, host_config=host_config, labels=self.labels, name=f"{name}-main",
                                        entrypoint=KEEPALIVE, command=[], working_dir="/workspace", detach=True)
            made.append(main["Id"])
            api.start(main["Id"])
            probe = api.exec_create(main["Id"], PROBE)["Id"]
            api.exec_start(probe)
            assert api.exec_inspect(probe)["ExitCode"] == 0
            running = time.perf_counter()
            raw = self._shell(main["Id"])
            first_byte(raw.fileno(), lambda: raw.recv(1024))
            shell = time.perf_counter()
            raw.close()
        finally:
            for container_id in reversed(made):
                with contextlib.suppress(Exception):
                    api.remove_container(container_id, force=True, v=True)
            with contextlib.suppress(Exception):
                volume.remove(force=True)
        return Sample(running - began, shell - began, shell - running)


def measured_runner(name: str, options: dict[str, Any]) -> Any:
    """The runner as it is, with clocks around the steps of its start path."""
    from runners.kubernetes import KubernetesRunner

    class MeasuredRunner(KubernetesRunner):
        def __init__(self) -> None:
            super().__init__(name, options)
            self.clock: collections.Counter[str] = collections.Counter()

        @contextlib.contextmanager
        def timed(self, what: str) -> Iterator[None]:
            began = time.perf_counter()
            try:
                yield
            finally:
                self.clock[what] += time.perf_counter() - began  # type: ignore[assignment]
                self.clock[what + " #"] += 1

        def _ensure(self, spec: Any, plural: str, *args: Any, **kwargs: Any) -> Any:
            with self.timed(f"create {plural}"):
                return super()._ensure(spec, plural, *args, **kwargs)

        def _wait_until_ready(self, *args: Any, **kwargs: Any) -> Any:
            with self.timed("readiness wait"):
                return super()._wait_until_ready(*args, **kwargs)

        def _report_events(self, *args: Any, **kwargs: Any) -> None:
            with self.timed("events lists"):
                super()._report_events(*args, **kwargs)

        def _copy_starter(self, *args: Any, **kwargs: Any) -> None:
            with self.timed("starter copy"):
                super()._copy_starter(*args, **kwargs)

    return MeasuredRunner()


def cold_start(conn: Connection, options: dict[str, Any], spec_fields: dict[str, Any]) -> None:
    """Child process: one start in a process that has not used the Kubernetes client yet, as in a
    work horse the platform's RQ worker forks for each provisioning job (the runner, its API client,
    its connections and the exec protocol it learned do not outlive the job). It waits for the parent
    between phases, so that the parent can cut the double's call log there."""
    began = time.perf_counter()
    import kubernetes.client
    import kubernetes.stream
    import kubernetes.watch  # what the runner imports on first use, timed apart

    kubernetes.client.CoreV1Api  # noqa: B018  (a lazy attribute: loads the API module and its models)
    imported = time.perf_counter()
    from runners.base import SessionSpec
    from runners.kubernetes import KubernetesRunner

    runner = KubernetesRunner("kubernetes-bench", options)
    try:
        result = runner.start(SessionSpec(**spec_fields), timeout=60)
    except Exception as exc:  # reported by the parent like a failure of the in-process runner
        conn.send(("failed", str(exc)))
        return
    try:
        running = time.perf_counter()
        conn.send("started")
        conn.recv()
        opened = time.perf_counter()
        terminal = runner.open_terminal(result.state, name="bench")
        try:
            first_byte(terminal.fileno(), lambda: terminal.read(1024))
            attach = time.perf_counter() - opened
        finally:
            terminal.close()
        conn.send("attached")
        conn.recv()
    finally:
        runner.stop(result.state)
    conn.send((running - began, attach, imported - began))


def count_calls(double: Double, marks: list[int], phases: tuple[str, ...], sample: Sample) -> None:
    """The double's call log between the marks, phase by phase, into the sample."""
    log = double.calls(marks[0], marks[-1])
    for phase, start, end in zip(phases, marks, marks[1:], strict=False):
        counter: collections.Counter[str] = collections.Counter()
        for verb, resource, code in log[start - marks[0]:end - marks[0]]:
            counter[f"{verb} {resource}"] += 1
            if not 200 <= code < 300 and code != 101:
                sample.codes[f"{phase}: {verb} {resource} → {code}"] += 1
        sample.calls[phase] = counter


class ColdKubernetesCase:
    """KubernetesRunner.start() and a terminal in a fresh process (imports and client set-up included)."""

    def __init__(self, double: Double, options: dict[str, Any], image: str, memory_mb: int, cpu: float,
                 starter_dir: str | None) -> None:
        self.double, self.options, self.image, self.memory_mb, self.cpu = double, options, image, memory_mb, cpu
        self.starter_dir = starter_dir
        self.context = multiprocessing.get_context("spawn")

    def once(self) -> Sample:
        from runners.base import RunnerError

        spec = {"session_id": str(uuid.uuid4()), "user_id": 1, "username": "bench", "lab_slug": "bench",
                "image": self.image, "cpu": self.cpu, "memory_mb": self.memory_mb, "disk_mb": 256,
                "network_mode": "none", "starter_dir": self.starter_dir}
        ours, theirs = self.context.Pipe()
        marks = [self.double.settle()]
        child = self.context.Process(target=cold_start, args=(theirs, self.options, spec), name="k8s-cold-start")
        child.start()
        theirs.close()

        def step() -> Any:
            if not ours.poll(120):
                raise RuntimeError("the cold-start process did not finish a step within 120 s")
            return ours.recv()

        try:
            for _phase in ("started", "attached"):
                answer = step()
                if isinstance(answer, tuple) and answer[0] == "failed":
                    raise RunnerError(answer[1])
                marks.append(self.double.settle())
                ours.send("go")
            running, attach, imported = step()
            marks.append(self.double.settle())
        except EOFError:
            child.join(30)
            raise RunnerError(f"the fresh process ended without an answer (exit code {child.exitcode})") from None
        finally:
            ours.close()  # a child still waiting for "go" sees end of file and stops its session
            child.join(30)
            if child.is_alive():
                child.terminate()
        sample = Sample(running, running + attach, attach, extra={"import": imported})
        count_calls(self.double, marks, ("start", "terminal", "stop"), sample)
        return sample


class KubernetesCase:
    """KubernetesRunner.start(), a terminal, a reconcile pass and stop(), each phase's API calls counted."""

    def __init__(self, runner: Any, double: Double, image: str, memory_mb: int, cpu: float,
                 starter_dir: str | None) -> None:
        self.runner, self.double, self.image = runner, double, image
        self.memory_mb, self.cpu, self.starter_dir = memory_mb, cpu, starter_dir
        self.live: list[dict[str, Any]] = []  # started and not yet stopped: stopped on the way out

    def once(self) -> Sample:
        from runners.base import SessionSpec

        spec = SessionSpec(session_id=str(uuid.uuid4()), user_id=1, username="bench", lab_slug="bench",
                           image=self.image, cpu=self.cpu, memory_mb=self.memory_mb, disk_mb=256,
                           network_mode="none", starter_dir=self.starter_dir)
        self.runner.clock.clear()
        marks = [self.double.settle()]
        cpu = (time.process_time(), self.double.cpu_seconds())
        began = time.perf_counter()
        result = self.runner.start(spec, timeout=60)
        self.live.append(result.state)
        running = time.perf_counter()
        cpu = (time.process_time() - cpu[0], self.double.cpu_seconds() - cpu[1])
        marks.append(self.double.settle())
        terminal = self.runner.open_terminal(result.state, name="bench")
        try:
            first_byte(terminal.fileno(), lambda: terminal.read(1024))
            shell = time.perf_counter()
        finally:
            terminal.close()
        marks.append(self.double.settle())
        reconcile_began = time.perf_counter()
        found = self.runner.list_managed()
        reconcile = time.perf_counter() - reconcile_began
        assert any(env.session_id == spec.session_id for env in found), "list_managed missed the session"
        marks.append(self.double.settle())
        stop_began = time.perf_counter()
        self.runner.stop(result.state)
        stopped = time.perf_counter() - stop_began
        self.live.remove(result.state)
        marks.append(self.double.settle())
        sample = Sample(running - began, shell - began, shell - running,
                        extra={"list_managed": reconcile, "stop": stopped, "cpu runner": cpu[0], "cpu double": cpu[1],
                               **self.runner.clock})
        count_calls(self.double, marks, ("start", "terminal", "reconcile", "stop"), sample)
        return sample

    def cleanup(self) -> None:
        for state in list(self.live):
            with contextlib.suppress(Exception):
                self.runner.stop(state, timeout=1)
        with contextlib.suppress(Exception):
            self.runner.remove_all_managed()
            deadline = time.monotonic() + 20  # let the pods go before the double stops, or it cuts them short
            while self.runner.list_managed() and time.monotonic() < deadline:
                time.sleep(0.2)


def seed_events(runner: Any, count: int) -> None:
    """Events of other pods in the sessions namespace, as a busy cluster keeps them (an hour by default)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for index in range(count):
        pod, uid = f"lab-other-{index // 6}", str(uuid.UUID(int=index // 6 + 1))
        runner.core.create_namespaced_event(NAMESPACE, {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{pod}.{index:x}{uuid.uuid4().hex[:8]}", "namespace": NAMESPACE},
            "involvedObject": {"kind": "Pod", "namespace": NAMESPACE, "name": pod, "uid": uid, "apiVersion": "v1"},
            "reason": "Pulled", "message": 'Container image "labs/busybox:latest" already present on machine',
            "type": "Normal", "source": {"component": "kubelet", "host": "double-node-1"},
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1}, _request_timeout=20)


# ---- report ---------------------------------------------------------------------------------------------
def spread(values: Sequence[float], scale: float = 1000.0, digits: int = 1) -> str:
    if not values:
        return "–"
    med, low, high = statistics.median(values) * scale, min(values) * scale, max(values) * scale
    if digits == 0:
        return f"{med:g} ({low:g}–{high:g})"
    return f"{med:.{digits}f} ({low:.{digits}f}–{high:.{digits}f})"


def ratio(values: Sequence[float], base: Sequence[float]) -> str:
    return f"{statistics.median(values) / statistics.median(base):.2f}×"


def report(args: argparse.Namespace, samples: dict[str, list[Sample]], warm: dict[str, list[Sample]],
           other_image: set[str]) -> None:
    raw, pod = samples["raw docker run -d + exec (baseline)"], samples["raw pod-shaped docker calls"]

    def col(rows: list[Sample], what: str) -> list[float]:
        return [getattr(s, what) for s in rows]

    print(f"kubernetes start, {args.rounds} rounds after {args.warmup} warm-up round(s), image {args.image}, "
          f"double step delay {args.step_delay:g} s, agent sidecar {'on' if args.agent else 'off'}, "
          f"{args.busy_events} Events of other pods in the namespace, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print("times in ms: median (min–max); ratios of medians against the raw docker baseline / the raw pod-shaped")
    print("calls; the in-process runner is one object for all rounds (its warm-up start made its API client); a")
    print("fresh process starts from nothing each time, as the RQ work horse forked for each provisioning job does")
    width = max(len(label) for label in samples) + 2
    print(f"  {'':<{width}} {'request → running':>24} {'request → first shell byte':>28} "
          f"{'attach (running → byte)':>26}")
    for label, rows in samples.items():
        cells = [spread(col(rows, what)) for what in ("running", "shell", "attach")]
        print(f"  {label:<{width}} {cells[0]:>24} {cells[1]:>28} {cells[2]:>26}")
        if rows is raw:
            continue
        if label in other_image:
            print(f"  {'  ratio':<{width}} {'(another image than the baselines: no ratio)':>24}")
            continue
        ratios = [f"{ratio(col(rows, w), col(raw, w))} / {ratio(col(rows, w), col(pod, w))}"
                  if rows is not pod else ratio(col(rows, w), col(raw, w)) for w in ("running", "shell", "attach")]
        print(f"  {'  ratio':<{width}} {ratios[0]:>24} {ratios[1]:>28} {ratios[2]:>26}")

    for label, rows in samples.items():
        if not rows[0].calls:
            continue
        print()
        if "import" in rows[0].extra:
            print(f"{label}: importing the kubernetes client took {spread([s.extra['import'] for s in rows])} ms "
                  "of request → running")
        if "readiness wait" in rows[0].extra:
            print(f"{label}: where the start goes (ms, median (min–max); # = calls of that step per start)")
            steps = [key for key in rows[0].extra if not key.endswith(" #") and key not in ("list_managed", "stop")
                     and not key.startswith("cpu ")]
            for key in steps:
                counts = [s.extra.get(key + " #", 0) for s in rows]
                print(f"  {key:<22} {spread([s.extra.get(key, 0.0) for s in rows]):>24}   # {spread(counts, 1, 0)}")
            each = [s.extra.get("events lists", 0.0) / max(1, s.extra.get("events lists #", 1)) for s in rows]
            print(f"  one events list           {spread(each):>20}   (with {args.busy_events} Events of other pods "
                  "in the namespace)")
            share = [s.extra.get("events lists", 0.0) / s.running for s in rows]
            print(f"  events lists take {spread(share, 100)} % of request → running")
            print(f"  CPU time during a start: this process (runner) {spread([s.extra['cpu runner'] for s in rows])} "
                  f"ms, the double's process {spread([s.extra['cpu double'] for s in rows])} ms")
            print(f"  reconcile pass (list_managed) {spread([s.extra['list_managed'] for s in rows])} ms, "
                  f"stop() {spread([s.extra['stop'] for s in rows])} ms")
        print(f"{label}: API calls per phase (median (min–max) per round)")
        for phase in rows[0].calls:
            keys = sorted({k for s in rows for k in s.calls[phase]})
            total = [sum(s.calls[phase].values()) for s in rows]
            print(f"  {phase:<10} total {spread(total, 1, 0):<12} " + ", ".join(
                f"{k} {spread([s.calls[phase][k] for s in rows], 1, 0)}" for k in keys))
        execs = [s.calls["start"]["get pods/exec"] + s.calls["start"]["create pods/exec"] for s in rows]
        print(f"  exec round trips per start: {spread(execs, 1, 0)}", end="")
        first = warm.get(label) or []
        if first:
            cold = first[0].calls["start"]["get pods/exec"] + first[0].calls["start"]["create pods/exec"]
            print(f" (warm-up round: {cold}, its request → running {first[0].running * 1000:.1f} ms)")
        else:
            print()
        codes = collections.Counter[str]()
        for s in rows:
            codes.update(s.codes)
        if codes:
            print("  answers other than 2xx over all rounds: "
                  + ", ".join(f"{k} ×{n}" for k, n in sorted(codes.items())))


# ---- main ---------------------------------------------------------------------------------------------------
def sweep(client: Any, run_id: str, double_id: str) -> list[str]:
    """Remove whatever still carries this run's labels; return what had to be removed."""
    left = []
    for label in (f"{BENCH_LABEL}={run_id}", f"{DOUBLE_LABEL}={double_id}"):
        for container in client.containers.list(all=True, filters={"label": label}):
            left.append(f"container {container.name}")
            with contextlib.suppress(Exception):
                container.remove(force=True, v=True)
        for volume in client.volumes.list(filters={"label": label}):
            left.append(f"volume {volume.name}")
            with contextlib.suppress(Exception):
                volume.remove(force=True)
    return left


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", "-n", type=int, default=5, help="measured rounds (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="rounds run first and not counted (default 1)")
    parser.add_argument("--image", default="labs/busybox:latest")
    parser.add_argument("--starter-image", default="",
                        help="image of the starter-files case (default: --image; it needs a /run directory)")
    parser.add_argument("--memory-mb", type=int, default=64)
    parser.add_argument("--cpu", type=float, default=0.5)
    parser.add_argument("--step-delay", type=float, default=0.0,
                        help="the double's scripted pause between kubelet steps (its tests use 0.02 s)")
    parser.add_argument("--busy-events", type=int, default=0,
                        help="first create this many Events of other pods in the namespace (a busy cluster)")
    parser.add_argument("--agent", action="store_true", help="with the trusted agent sidecar (agent_image = --image)")
    args = parser.parse_args()
    if args.rounds < 1 or args.warmup < 0:
        parser.error("--rounds must be at least 1 and --warmup at least 0")

    def terminated(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminated)  # `kill` cleans up like Ctrl-C
    import docker

    from runners.base import RunnerError

    client = docker.from_env()
    client.images.get(args.image)  # fails early (ImageNotFound) rather than timing a pull
    run_id = uuid.uuid4().hex[:10]
    double_id = f"labsbench-{run_id}"  # the label of everything the double's kubelet makes
    with tempfile.TemporaryDirectory(prefix="k8s-bench-") as tmp:
        workdir = Path(tmp)
        starter = workdir / "starter"
        (starter / "src").mkdir(parents=True)
        (starter / "README.md").write_text("# bench lab\n" * 20)
        (starter / "src" / "main.py").write_text("print('hello')\n" * 50)
        double: Double | None = None
        cases: dict[str, Any] = {}
        try:
            double = Double(workdir, double_id, args.step_delay)
            options: dict[str, Any] = {"kubeconfig": str(double.kubeconfig), "namespace": NAMESPACE,
                                       "instance": f"labsbench{run_id[:6]}", "api_timeout": 20}
            if args.agent:
                options["agent_image"] = args.image
            runner = measured_runner("kubernetes-bench", options)
            # Another runner seeds, so that the measured one starts cold in the warm-up round.
            seed_events(measured_runner("kubernetes-seed", options), args.busy_events)
            starter_label = "k8s runner, lab with starter files"
            if args.starter_image and args.starter_image != args.image:
                starter_label += f" ({args.starter_image})"
            cases = {
                "raw docker run -d + exec (baseline)": RawDockerCase(client, args.image, run_id),
                "raw pod-shaped docker calls": PodShapedCase(client, args.image, run_id, args.memory_mb, args.cpu),
                "k8s runner": KubernetesCase(runner, double, args.image, args.memory_mb, args.cpu, None),
                "k8s runner, fresh process (RQ work horse)": ColdKubernetesCase(double, options, args.image,
                                                                                args.memory_mb, args.cpu, None),
                starter_label: KubernetesCase(runner, double, args.starter_image or args.image, args.memory_mb,
                                              args.cpu, str(starter)),
                starter_label.replace("k8s runner", "k8s runner, fresh process"): ColdKubernetesCase(
                    double, options, args.starter_image or args.image, args.memory_mb, args.cpu, str(starter)),
            }
            samples: dict[str, list[Sample]] = {label: [] for label in cases}
            warm: dict[str, list[Sample]] = {label: [] for label in cases}
            broken: dict[str, str] = {}
            for round_number in range(args.warmup + args.rounds):
                for label, case in cases.items():
                    if label in broken:
                        continue
                    try:
                        sample = case.once()
                    except RunnerError as exc:  # the runner refused this case: report it, measure the rest
                        broken[label] = str(exc)
                        continue
                    (warm if round_number < args.warmup else samples)[label].append(sample)
            other_image = {label for label, case in cases.items() if case.image != args.image}
            report(args, {k: v for k, v in samples.items() if k not in broken}, warm, other_image)
            for label, reason in broken.items():
                print(f"\nnot measured: {label}: the runner failed: {reason}")
        finally:
            # A second Ctrl-C (or the group-wide SIGTERM `timeout` sends) must not cut the clean-up short.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            for case in cases.values():
                if isinstance(case, KubernetesCase):
                    case.cleanup()
            failures = double.stop() if double is not None else []
            left = sweep(client, run_id, double_id)
            if failures:
                print(f"the API server double reported failures: {failures}", file=sys.stderr)
            if left:
                print(f"removed after the run: {', '.join(left)}", file=sys.stderr)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted; everything the run made was removed", file=sys.stderr)
        sys.exit(130)
