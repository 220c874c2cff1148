"""A private RabbitMQ node for the tests, the chaos run and the benches: Debian's ``rabbitmq-server``
started on free ports with its data, logs and Erlang cookie in a folder of its own, so it can be
stopped and restarted at will and never touches the machine's shared node (or its queues). Where
the server is not installed, ``available()`` says so and the callers skip, naming the package."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pika

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
CTL = Path("/usr/lib/rabbitmq/bin/rabbitmqctl")
MISSING = "RabbitMQ is not installed (apt-get install rabbitmq-server): the RabbitMQ broker tests skip"
START_TIMEOUT_S = 90
START_ATTEMPTS = 3


class NodeExited(RuntimeError):
    """The server stopped while booting (most often: a port it was given was taken meanwhile)."""


def available() -> bool:
    return SERVER.exists() and CTL.exists() and shutil.which("erl") is not None


class RabbitNode:
    """One node; ``url`` stays the same across ``restart``, and so do its durable queues."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.name = f"fleetpay-test-{uuid.uuid4().hex[:8]}@localhost"
        self.started = False
        (folder / "home").mkdir(parents=True, exist_ok=True)
        (folder / "enabled_plugins").write_text("[].\n")
        (folder / "rabbitmq.conf").write_text("loopback_users = none\n")
        self.env = {
            **os.environ,
            "HOME": str(folder / "home"),  # its own Erlang cookie
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": str(folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(folder / "log"),
            "RABBITMQ_CONFIG_FILE": str(folder / "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(folder / "rabbitmq.pid"),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self._choose_ports()

    def _choose_ports(self) -> None:
        self.port, self.dist_port = _two_free_ports()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        self.env |= {"RABBITMQ_NODE_PORT": str(self.port), "RABBITMQ_DIST_PORT": str(self.dist_port)}

    def start(self) -> RabbitNode:
        """Start the node and wait until it answers. A port taken meanwhile by another process makes
        it exit at boot: on a first start it tries other ports; on a restart the same ones again
        (its URL must not change)."""
        for attempt in range(START_ATTEMPTS):
            try:
                return self._start_once()
            except NodeExited:
                if attempt == START_ATTEMPTS - 1:
                    raise
                if not self.started:
                    self._choose_ports()
                time.sleep(1)
        raise AssertionError("unreachable")

    def _start_once(self) -> RabbitNode:
        log = (self.folder / "server.out").open("ab")
        self.process = subprocess.Popen([str(SERVER)], env=self.env, cwd=self.folder, start_new_session=True,
                                        stdout=log, stderr=log)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise NodeExited(f"rabbitmq-server exited; see {self.folder / 'server.out'}")
            try:
                pika.BlockingConnection(pika.URLParameters(self.url)).close()
                self.started = True
                return self
            except pika.exceptions.AMQPError:
                time.sleep(0.3)
        raise TimeoutError(f"rabbitmq-server did not answer within {START_TIMEOUT_S} s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def restart(self, down_s: float = 2.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()

    def add_vhost(self, vhost: str, *, queue_type: str = "quorum") -> str:
        """A virtual host of its own, guest allowed, whose queues are ``queue_type`` (dramatiq
        declares no type, so the vhost's default applies: quorum, as docs/operations.md advises);
        returns its URL."""
        for args in (["add_vhost", vhost, "--default-queue-type", queue_type],
                     ["set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"]):
            subprocess.run([str(CTL), "-n", self.name, *args], env=self.env, check=True, capture_output=True,
                           timeout=60)
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{vhost}"


def _two_free_ports() -> tuple[int, int]:
    """Two loopback ports nobody listens on (both held while choosing, so they differ)."""
    with socket.socket() as first, socket.socket() as second:
        first.bind(("127.0.0.1", 0))
        second.bind(("127.0.0.1", 0))
        return first.getsockname()[1], second.getsockname()[1]
