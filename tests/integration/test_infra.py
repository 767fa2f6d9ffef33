"""The local Kafka broker and Redis server (ops.infra): start, stop, restart keeps data,
topic auto-creation off. Runs its own instances (tmp state dir, free ports), never the session
ones, so stopping them does not disturb other tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from feedpipe.settings import ROOT, Settings
from ops.infra import (
    InfraError,
    KafkaBroker,
    LocalStack,
    RedisServer,
    ensure_jars,
    pinned_version,
)
from ops.infra._proc import port_open

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

DEV_STATE_DIR = Settings().state_dir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _free_port_pair() -> int:
    """A free port p whose p + 1 is free too: LocalStack puts the KRaft controller on the
    broker port + 1."""
    for _ in range(100):
        p = _free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p + 1))
            except OSError:
                continue
        return p
    raise RuntimeError("no two adjacent free ports")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    b = KafkaBroker(
        tmp_path_factory.mktemp("infra"),
        port=_free_port(),
        controller_port=_free_port(),
        lib=ensure_jars(DEV_STATE_DIR),
    )
    b.start()
    try:
        yield b
    finally:
        b.stop()


def _produce(bootstrap: str, topic: str, key: bytes, value: bytes) -> KafkaError | None:
    """Produce one record; returns the delivery error (None when delivered)."""
    errors: list[KafkaError | None] = []
    p = Producer({"bootstrap.servers": bootstrap, "message.timeout.ms": 5000})
    p.produce(topic, key=key, value=value, on_delivery=lambda err, _msg: errors.append(err))
    p.flush(15)
    assert len(errors) == 1, "no delivery report within 15 s"
    return errors[0]


def _consume_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 30) -> list[bytes]:
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(values) < expected and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None or msg.error():
                continue
            value = msg.value()
            assert value is not None
            values.append(value)
    finally:
        c.close()
    return values


def test_restart_reuses_data(broker: KafkaBroker) -> None:
    pid = broker.pid()
    assert pid is not None and broker.is_running()
    t0 = time.monotonic()
    assert broker.start() == broker.bootstrap  # already running: returns at once
    assert time.monotonic() - t0 < 5 and broker.pid() == pid

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("keep.me", num_partitions=2, replication_factor=1)])[
        "keep.me"
    ].result(30)
    assert _produce(broker.bootstrap, "keep.me", b"k1", b"before-stop") is None
    meta = (broker.data_dir / "meta.properties").read_text()

    assert broker.stop() is True
    assert not broker.is_running()
    assert broker.pid() is None and not broker.pid_file.exists()
    assert not port_open("127.0.0.1", broker.port)
    assert broker.stop() is False  # idempotent

    broker.start()
    assert broker.pid() not in (None, pid)
    assert (broker.data_dir / "meta.properties").read_text() == meta  # not reformatted
    md = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10)
    assert "keep.me" in md.topics and len(md.topics["keep.me"].partitions) == 2
    assert _produce(broker.bootstrap, "keep.me", b"k1", b"after-restart") is None
    values = _consume_all(broker.bootstrap, "keep.me", expected=2)
    assert sorted(values) == [b"after-restart", b"before-stop"]
    assert (broker.log_dir / "server.log").stat().st_size > 0


def test_auto_create_is_off(broker: KafkaBroker) -> None:
    broker.start()
    topic = f"missing.{uuid.uuid4().hex[:8]}"
    err = _produce(broker.bootstrap, topic, b"k", b"v")
    assert err is not None
    md = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10)
    assert topic not in md.topics
    assert "auto.create.topics.enable=false" in broker.properties_file.read_text()


def test_port_taken_by_someone_else_is_an_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = int(s.getsockname()[1])
        with pytest.raises(InfraError, match="in use"):
            RedisServer(tmp_path, port=port).start()
        with pytest.raises(InfraError, match="in use"):
            KafkaBroker(tmp_path, port=port, controller_port=_free_port()).start()


def test_redis_restart_keeps_data(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, port=_free_port())
    try:
        url = server.start()
        assert url == f"redis://127.0.0.1:{server.port}/0" and server.is_running()
        pid = server.pid()
        assert server.start() == url and server.pid() == pid  # already running
        client = redis.Redis.from_url(url)
        client.set("fp:test:kept", "yes")
        client.zadd("fp:test:z", {"a": 1.5})
        client.close()

        assert server.stop() is True
        assert not server.is_running() and not port_open("127.0.0.1", server.port)

        server.start()
        assert server.pid() != pid
        client = redis.Redis.from_url(url)
        assert client.get("fp:test:kept") == b"yes"
        assert client.zscore("fp:test:z", "a") == 1.5
        client.close()
        assert (server.home / "redis.log").stat().st_size > 0
    finally:
        server.stop()
    server.wipe_data()
    assert not server.home.exists()


def test_ensure_jars_skips_when_marker_matches(tmp_path: Path) -> None:
    lib = ensure_jars(DEV_STATE_DIR)
    version = pinned_version()
    assert (lib / f"kafka_2.13-{version}.jar").is_file()
    # A lib dir whose marker matches is left alone (Maven would replace the stub jar).
    fake = tmp_path / "kafka" / "lib"
    fake.mkdir(parents=True)
    (fake / ".kafka-version").write_text((lib / ".kafka-version").read_text())
    (fake / f"kafka_2.13-{version}.jar").write_bytes(b"stub")
    t0 = time.monotonic()
    assert ensure_jars(tmp_path) == fake
    assert time.monotonic() - t0 < 1
    assert (fake / f"kafka_2.13-{version}.jar").read_bytes() == b"stub"


def test_local_stack_start_status_wipe(tmp_path: Path) -> None:
    lib = ensure_jars(DEV_STATE_DIR)
    (tmp_path / "kafka").mkdir()
    (tmp_path / "kafka" / "lib").symlink_to(lib)  # share the jars: no Maven run
    kport, rport = _free_port_pair(), _free_port()
    s = Settings(
        state_dir=tmp_path,
        kafka_bootstrap=f"127.0.0.1:{kport}",
        redis_url=f"redis://127.0.0.1:{rport}/0",
    )
    stack = LocalStack(s)
    try:
        assert stack.start() == (s.kafka_bootstrap, s.redis_url)
        status = stack.status()
        assert status.kafka_running and status.redis_running
        assert status.kafka_pid is not None and status.redis_pid is not None
        assert "running" in str(status)
        (tmp_path / "faust-tables").mkdir()  # anything else under the state dir goes too
    finally:
        stack.wipe()
    status = stack.status()
    assert not status.kafka_running and not status.redis_running and status.kafka_pid is None
    assert not port_open("127.0.0.1", kport) and not port_open("127.0.0.1", rport)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kafka"]
    assert [p.name for p in (tmp_path / "kafka").iterdir()] == ["lib"]
    assert (tmp_path / "kafka" / "lib").is_symlink()


def test_local_stack_refuses_remote_addresses(tmp_path: Path) -> None:
    with pytest.raises(InfraError, match="not a local address"):
        LocalStack(Settings(state_dir=tmp_path, kafka_bootstrap="kafka:9092"))
    with pytest.raises(InfraError, match="not a local redis"):
        LocalStack(Settings(state_dir=tmp_path, redis_url="redis://redis:6379/0"))


def _feedpipe(*args: str) -> list[str]:
    return [sys.executable, "-m", "ops.cli", *args]


def test_up_in_the_foreground_exits_when_down_stops_its_stack(tmp_path: Path) -> None:
    """`feedpipe up` (foreground) and `feedpipe down` from another process: `up` notices, prints
    one line and exits 0 within seconds, with no librdkafka reconnect lines left behind."""
    lib = ensure_jars(DEV_STATE_DIR)
    (tmp_path / "kafka").mkdir()
    (tmp_path / "kafka" / "lib").symlink_to(lib)
    offset = int(os.environ.get("FEEDPIPE_TEST_PORT_OFFSET", "0"))
    kport = 29192 + offset + 20  # controller on kport + 1; apart from the session and faults ports
    env = {
        **os.environ,
        "FEEDPIPE_STATE_DIR": str(tmp_path),
        "FEEDPIPE_KAFKA_BOOTSTRAP": f"127.0.0.1:{kport}",
        "FEEDPIPE_REDIS_URL": f"redis://127.0.0.1:{_free_port()}/0",
        "FEEDPIPE_API_PORT": str(_free_port()),
        "FEEDPIPE_WORKER_WEB_PORT": str(_free_port()),
        "COLUMNS": "120",
    }
    log = tmp_path / "up.out"
    with log.open("wb") as out:
        up = subprocess.Popen(
            _feedpipe("up", "--no-replay"), cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        while b"running; press Ctrl-C" not in log.read_bytes():
            assert up.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        down = subprocess.run(_feedpipe("down"), cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr
        t_down = time.monotonic()
        assert up.wait(30) == 0, log.read_text()
        assert time.monotonic() - t_down < 10
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait(10)
        subprocess.run(_feedpipe("down"), cwd=ROOT, env=env, capture_output=True, timeout=120)
    text = log.read_text()
    assert text.rstrip().endswith("stopped by feedpipe down; exiting"), text[-2000:]
    assert "Connection refused" not in text.split("running; press Ctrl-C")[-1]
