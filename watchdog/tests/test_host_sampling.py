"""The host's figures from this machine's real /proc, disks and Docker engine; what cannot be read is
skipped with one log line (not one per pass), never an error."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest

from runners import reset_cache
from watchdog.sampling import HostSampler, Skips

pytestmark = pytest.mark.django_db


def by_kind(readings) -> dict[str, list]:
    found: dict[str, list] = {}
    for reading in readings:
        found.setdefault(reading.kind, []).append(reading)
    return found


def df_percent(path: Path) -> int:
    """What df says, as a second opinion (it rounds up)."""
    out = subprocess.run(["df", "-P", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.splitlines()[1].split()[4].rstrip("%"))


@pytest.mark.docker
def test_the_host_is_sampled_from_proc_its_data_directory_and_the_engines_storage(settings, tmp_path, engine):
    settings.DATA_DIR = tmp_path
    readings = by_kind(HostSampler(Skips()).sample())
    assert set(readings) == {"host_cpu", "host_memory", "host_disk_data", "host_disk_engine"}
    cpu, memory, data = readings["host_cpu"][0], readings["host_memory"][0], readings["host_disk_data"][0]
    assert 0 <= cpu.value <= 100 and "CPUs busy" in cpu.detail
    assert 0 < memory.value < 100 and "GiB in use" in memory.detail
    assert data.subject.endswith(f":{tmp_path}")
    assert df_percent(tmp_path) - 1 <= data.value <= df_percent(tmp_path)
    root = engine.info()["DockerRootDir"]
    (storage,) = readings["host_disk_engine"]  # the test runners share one engine: sampled once
    assert storage.subject.endswith(f":{root}")
    assert df_percent(Path(root)) - 1 <= storage.value <= df_percent(Path(root))


def test_cpu_is_the_use_since_the_last_pass(settings):
    sampler = HostSampler(Skips())
    first = sampler.cpu()
    busy = subprocess.Popen(["sh", "-c", "while :; do :; done"])  # one CPU kept busy between two passes
    try:
        subprocess.run(["sleep", "1"], check=True)
        second = sampler.cpu()
    finally:
        busy.kill()
        busy.wait()
    assert first is not None and second is not None
    cpus = int(second.detail.split(" of ")[1].split()[0])
    assert second.value >= 100 / cpus * 0.8, (second.value, cpus)


def test_without_a_docker_runner_the_engines_storage_is_skipped_with_one_log_line(settings, caplog):
    settings.LAB_RUNNERS = {"fake": {"BACKEND": "runners.fake.FakeRunner", "OPTIONS": {}}}
    settings.LAB_DEFAULT_RUNNER = "fake"
    reset_cache()
    sampler = HostSampler(Skips())
    with caplog.at_level(logging.INFO, logger="watchdog"):
        assert "host_disk_engine" not in by_kind(sampler.sample())
        assert "host_disk_engine" not in by_kind(sampler.sample())
    lines = [r.getMessage() for r in caplog.records]
    assert lines.count("watchdog: not sampling the engine's storage: no Docker runner is in use") == 1


@pytest.mark.parametrize(("base_url", "says"), [
    ("tcp://192.0.2.1:2376", "the engine is on another machine"),
    ("unix:///nonexistent/docker.sock", "Docker engine unreachable"),
])
def test_an_engine_that_cannot_be_measured_here_is_skipped(settings, caplog, base_url, says):
    settings.LAB_RUNNERS = {"elsewhere": {"BACKEND": "runners.docker.DockerRunner",
                                          "OPTIONS": {"base_url": base_url, "api_timeout": 2}}}
    settings.LAB_DEFAULT_RUNNER = "elsewhere"
    reset_cache()
    with caplog.at_level(logging.INFO, logger="watchdog"):
        readings = by_kind(HostSampler(Skips()).sample())
    assert "host_disk_engine" not in readings and "host_memory" in readings
    assert f"not sampling the storage of runner elsewhere's engine: {says}" in caplog.text


def test_a_machine_without_proc_is_skipped_not_fatal(settings, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="watchdog"):
        readings = by_kind(HostSampler(Skips(), proc=tmp_path).sample())
    assert "host_cpu" not in readings and "host_memory" not in readings and "host_disk_data" in readings
    assert f"not sampling host CPU: cannot read {tmp_path}/stat" in caplog.text
    assert f"not sampling host memory: cannot read {tmp_path}/meminfo" in caplog.text
