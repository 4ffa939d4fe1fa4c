"""Fixtures for the interop suite: the real `keyplane serve` process and the keyplane CLI.

One server per test session, on an ephemeral loopback port, with a temporary data
directory. The binary is taken from KEYPLANE_BIN, else $CARGO_TARGET_DIR/debug/keyplane,
else ./target/debug/keyplane. The local model comes from KEYPLANE_MODEL (scripts/setup.sh
exports it); the server reads that variable itself.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from google import genai

REPO_ROOT = Path(__file__).resolve().parent.parent
LISTEN_RE = re.compile(r"keyplane listening on (https?://\S+)")
START_TIMEOUT_S = 60.0
CLI_TIMEOUT_S = 60.0

# Environment variables that change what google-genai sends or where it sends it.
# They are cleared for the whole session so a developer's shell cannot leak into the tests;
# the tests that exercise them set them explicitly with monkeypatch.
_SDK_ENV = (
    "GOOGLE_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_GEMINI_BASE_URL",
    "GOOGLE_VERTEX_BASE_URL",
    "GOOGLE_GENAI_API_VERSION",
    "GOOGLE_GENAI_USE_VERTEXAI",
    "GOOGLE_GENAI_USE_ENTERPRISE",
    "GOOGLE_GENAI_CLIENT_MODE",
    "GOOGLE_GENAI_HTTP_CLIENT",
    "GOOGLE_CLOUD_PROJECT",
    "GOOGLE_CLOUD_LOCATION",
    "GOOGLE_APPLICATION_CREDENTIALS",
)

for _name in _SDK_ENV:
    os.environ.pop(_name, None)
# Loopback traffic must never go through a proxy (httpx and urllib both honour NO_PROXY).
_no_proxy = [p for p in os.environ.get("NO_PROXY", "").split(",") if p]
for _host in ("127.0.0.1", "localhost"):
    if _host not in _no_proxy:
        _no_proxy.append(_host)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = ",".join(_no_proxy)


def keyplane_bin() -> Path:
    explicit = os.environ.get("KEYPLANE_BIN")
    if explicit:
        return Path(explicit)
    target = os.environ.get("CARGO_TARGET_DIR")
    base = Path(target) if target else REPO_ROOT / "target"
    return base / "debug" / "keyplane"


class CliError(Exception):
    def __init__(self, args: list[str], proc: subprocess.CompletedProcess[str]):
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        super().__init__(
            f"keyplane {' '.join(args)} exited {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
        )


@dataclass
class Keyplane:
    """A running `keyplane serve` and a way to drive it with the `keyplane` CLI."""

    bin: Path
    data_dir: Path
    base_url: str
    proc: subprocess.Popen[str]
    stderr_path: Path

    @property
    def credentials(self) -> Path:
        return self.data_dir / "owner-credentials.json"

    def server_log(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [
            "--credentials",
            str(self.credentials),
            "--server",
            self.base_url,
            *args,
        ]
        env = dict(os.environ)
        env["KEYPLANE_DATA_DIR"] = str(self.data_dir)
        proc = subprocess.run(
            [str(self.bin), *argv],
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise CliError(argv, proc)
        return proc

    def cli_json(self, *args: str) -> Any:
        proc = self.cli(*args, "--format", "json")
        try:
            return json.loads(proc.stdout)
        except json.JSONDecodeError as e:
            raise AssertionError(
                f"keyplane {' '.join(args)} --format json printed non-JSON: {e}\n{proc.stdout}"
            ) from e

    def create_key(self, *extra: str) -> dict[str, Any]:
        """`keyplane keys create --format json`; returns the Key resource (has keyString, name)."""
        out = self.cli_json("keys", "create", *extra)
        key = _find_key_resource(out)
        assert key is not None, f"no keyString in `keys create` output: {out!r}"
        return key


def _find_key_resource(obj: Any) -> dict[str, Any] | None:
    """The Key object in the CLI's output, whether printed bare or inside an Operation."""
    if isinstance(obj, dict):
        if "keyString" in obj:
            return obj
        for value in obj.values():
            found = _find_key_resource(value)
            if found is not None:
                return found
    elif isinstance(obj, list):
        for value in obj:
            found = _find_key_resource(value)
            if found is not None:
                return found
    return None


def _pump(stream, lines: "queue.Queue[str | None]") -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@contextmanager
def start_keyplane(workdir: Path, *extra_args: str):
    """Runs `keyplane serve` on a fresh data directory under `workdir` (plus `extra_args`)
    until the block ends; yields the running Keyplane."""
    binary = keyplane_bin()
    if not binary.is_file():
        pytest.fail(
            f"keyplane binary not found at {binary}: build it with `cargo build` "
            "or point KEYPLANE_BIN at it (scripts/test.sh does both)",
            pytrace=False,
        )
    data_dir = workdir / "data"
    stderr_path = workdir / "server.stderr"
    argv = [str(binary), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)]
    model = os.environ.get("KEYPLANE_MODEL")
    if model:
        argv += ["--model", model]
    argv += list(extra_args)

    with open(stderr_path, "w") as stderr_file:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr_file,
            text=True,
            cwd=workdir,
        )
    lines: "queue.Queue[str | None]" = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()

    def fail(why: str) -> None:
        _stop(proc)
        log = stderr_path.read_text(errors="replace")
        pytest.fail(
            f"{why}\ncommand: {' '.join(argv)}\n--- server stderr (last 8000 chars) ---\n{log[-8000:]}",
            pytrace=False,
        )

    base_url = None
    stdout_seen: list[str] = []
    deadline = time.monotonic() + START_TIMEOUT_S
    while base_url is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            fail(f"keyplane serve did not print its listening line within {START_TIMEOUT_S:.0f}s")
        try:
            line = lines.get(timeout=min(remaining, 0.5))
        except queue.Empty:
            continue
        if line is None:
            proc.wait(timeout=10)
            fail(
                f"keyplane serve exited with status {proc.returncode} before listening; "
                f"stdout: {''.join(stdout_seen)!r}"
            )
        stdout_seen.append(line)
        match = LISTEN_RE.search(line)
        if match:
            base_url = match.group(1).rstrip("/")

    server = Keyplane(
        bin=binary, data_dir=data_dir, base_url=base_url, proc=proc, stderr_path=stderr_path
    )
    try:
        yield server
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def keyplane(tmp_path_factory: pytest.TempPathFactory):
    with start_keyplane(tmp_path_factory.mktemp("keyplane")) as server:
        yield server


@pytest.fixture(scope="session")
def base_url(keyplane: Keyplane) -> str:
    return keyplane.base_url


@pytest.fixture(scope="session")
def default_key(keyplane: Keyplane) -> dict[str, Any]:
    """The first key, made as a new user would: `keyplane keys create` with no project.

    Its project is moved to tier-3 (10,000 requests per minute): the suite makes more calls
    a minute than the free tier's 10 allow (test_quota.py checks the free tier's 429)."""
    key = keyplane.create_key()
    keyplane.cli("projects", "set-tier", key["name"].split("/")[1], "tier-3")
    return key


@pytest.fixture(scope="session")
def api_key(default_key: dict[str, Any]) -> str:
    key = default_key["keyString"]
    assert isinstance(key, str) and key.startswith("AIza") and len(key) == 39, key
    return key


@pytest.fixture(scope="session", params=["v1", "v1beta"])
def api_version(request: pytest.FixtureRequest) -> str:
    """Python google-genai 3.x calls /v1 by default; 2.x and the JS SDK call /v1beta."""
    return request.param


def make_client(base_url: str, api_key: str, api_version: str | None = None) -> genai.Client:
    http_options: dict[str, Any] = {"base_url": base_url}
    if api_version is not None:
        http_options["api_version"] = api_version
    return genai.Client(api_key=api_key, http_options=http_options)


@pytest.fixture(scope="session")
def client(base_url: str, api_key: str, api_version: str) -> genai.Client:
    """A google-genai client pointed at Keyplane. For "v1" the SDK's own default is used."""
    return make_client(base_url, api_key, None if api_version == "v1" else api_version)


@pytest.fixture(autouse=True)
def server_log_on_failure(keyplane: Keyplane, request: pytest.FixtureRequest):
    """Prints the server's stderr when a test using this fixture fails."""
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print("--- keyplane server stderr (tail) ---")
        print(keyplane.server_log()[-4000:])


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.rep_call = report
    return report
