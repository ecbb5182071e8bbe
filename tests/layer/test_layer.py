"""The layer zip built by `make layer`: layout, glibc floor of the extension, and that both halves
work when unpacked the way Lambda unpacks a layer (under /opt, here a temporary folder)."""

from __future__ import annotations

import http.server
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYER_ZIP = Path(os.environ.get("LMP_LAYER_ZIP", ROOT / "build" / "layer.zip"))
CHECK_GLIBC = ROOT / "scripts" / "check-glibc.sh"
PACKAGE = ROOT / "layer" / "python" / "lambda_memory_profiler"
EXTENSION = "extensions/lambda-memory-profiler"
WRAPPER = "lambda-memory-profiler"  # /opt/lambda-memory-profiler, for AWS_LAMBDA_EXEC_WRAPPER
# Amazon Linux 2 (Python 3.9-3.11 runtimes) has glibc 2.26; the build pins 2.17.
GLIBC_FLOOR = os.environ.get("LMP_GLIBC", "2.17")


@pytest.fixture(scope="module")
def layer_zip() -> zipfile.ZipFile:
    assert LAYER_ZIP.is_file(), f"{LAYER_ZIP} missing: run `make layer`"
    with zipfile.ZipFile(LAYER_ZIP) as zf:
        yield zf


@pytest.fixture(scope="module")
def opt(layer_zip, tmp_path_factory) -> Path:
    """The layer unpacked like Lambda does (zipfile drops the mode bits: restore them)."""
    root = tmp_path_factory.mktemp("opt")
    for info in layer_zip.infolist():
        path = Path(layer_zip.extract(info, root))
        mode = info.external_attr >> 16
        if mode and not info.is_dir():
            path.chmod(stat.S_IMODE(mode))
    return root


def test_zip_holds_the_extension_and_the_package(layer_zip):
    names = set(layer_zip.namelist())
    assert EXTENSION in names
    mode = layer_zip.getinfo(EXTENSION).external_attr >> 16
    assert stat.S_ISREG(mode) and mode & 0o111 == 0o111, oct(mode)
    # Only the two folders Lambda looks at and the exec wrapper, and no compiled caches.
    assert {n.split("/", 1)[0] for n in names} == {"extensions", "python", WRAPPER}
    mode = layer_zip.getinfo(WRAPPER).external_attr >> 16
    assert stat.S_ISREG(mode) and stat.S_IMODE(mode) == 0o755, oct(mode)
    assert layer_zip.read(WRAPPER) == (ROOT / "layer" / WRAPPER).read_bytes()
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    # The package in the zip is the package in the tree, byte for byte (the zip is not stale).
    source = {
        p.relative_to(PACKAGE.parent).as_posix(): p.read_bytes()
        for p in PACKAGE.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    zipped = {
        n.removeprefix("python/"): layer_zip.read(n)
        for n in names
        if n.startswith("python/") and not n.endswith("/")
    }
    assert zipped == source
    # Lambda's layer limits: 50 MB zipped (direct upload), 250 MB unzipped for all layers.
    assert LAYER_ZIP.stat().st_size < 50 * 2**20
    assert sum(i.file_size for i in layer_zip.infolist()) < 250 * 2**20


def test_extension_needs_no_glibc_newer_than_the_floor(opt):
    binary = opt / EXTENSION
    done = subprocess.run(
        [str(CHECK_GLIBC), str(binary), GLIBC_FLOOR], capture_output=True, text=True
    )
    print(done.stdout, done.stderr)
    assert done.returncode == 0
    header = subprocess.run(["readelf", "-h", str(binary)], capture_output=True, text=True)
    machine = "AArch64" if LAYER_ZIP.name == "layer-arm64.zip" else "X86-64"
    assert machine in header.stdout


def _native_modules(root: Path) -> list[Path]:
    return sorted((root / "python" / "lambda_memory_profiler").glob("_native.cpython-*.so"))


def test_native_modules_one_per_python_and_no_newer_glibc(opt):
    """The heap sampler ships one module per CPython it was built for (scripts/build-native.sh:
    every 3.9+ interpreter of this machine), each linked for the same glibc floor."""
    modules = _native_modules(opt)
    # _native.cpython-311-x86_64-linux-gnu.so -> cpython-311
    versions = {m.name.split(".")[1].split("-x86_64")[0] for m in modules}
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    here = {
        "cpython-3" + p.name.split(".")[1]
        for p in pyenv.glob("3.*")
        if p.name.split(".")[1].isdigit() and int(p.name.split(".")[1]) >= 9
    }
    assert versions >= here and versions, (versions, here)
    for module in modules:
        done = subprocess.run(
            [str(CHECK_GLIBC), str(module), GLIBC_FLOOR], capture_output=True, text=True
        )
        assert done.returncode == 0, (module.name, done.stdout, done.stderr)


def test_native_module_imports_from_the_unpacked_layer(opt):
    """The interpreter running this test imports its own module from /opt/python's layout and
    samples with it."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from lambda_memory_profiler import _native as n;"
        "assert n.start(4096, 8, 1); x = [bytes(100) for _ in range(10000)];"
        "s = n.stats(); assert s[0] == 1 and s[1] > 500000, s; print('ok')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(opt / "python")], capture_output=True, text=True
    )
    assert done.stdout.strip() == "ok", done.stderr


def test_zip_stays_under_4_mb(layer_zip):
    assert LAYER_ZIP.stat().st_size <= 4 * 10**6, LAYER_ZIP.stat().st_size


def test_glibc_check_rejects_a_binary_linked_on_a_newer_glibc(tmp_path):
    """The check can fail: a host-linked program calling gettid() needs GLIBC_2.30."""
    source = tmp_path / "newer.c"
    source.write_text(
        "#define _GNU_SOURCE\n#include <unistd.h>\nint main(void) { return gettid() < 0; }\n"
    )
    binary = tmp_path / "newer"
    subprocess.run(["cc", "-o", str(binary), str(source)], check=True)
    done = subprocess.run([str(CHECK_GLIBC), str(binary), "2.17"], capture_output=True, text=True)
    assert done.returncode == 1
    assert "gettid" in done.stderr
    newest = subprocess.run([str(CHECK_GLIBC), str(binary), "99.0"], capture_output=True, text=True)
    assert newest.returncode == 0
    # Not an object file at all: an error, not a pass.
    assert subprocess.run([str(CHECK_GLIBC), str(source)], capture_output=True).returncode != 0


class FakeExtensionsApi(http.server.BaseHTTPRequestHandler):
    """Just enough of the Lambda Extensions API for one environment that shuts down at once,
    answering the Telemetry API subscription like the Runtime Interface Emulator does."""

    protocol_version = "HTTP/1.1"
    calls: list = []

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes: without this, Nagle and delayed ACKs add 40 ms.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _reply(self, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _drain(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_POST(self) -> None:  # noqa: N802
        self._drain()
        self.calls.append(("POST", self.path, self.headers.get("Lambda-Extension-Name")))
        if self.path == "/2020-01-01/extension/register":
            body = {"functionName": "f", "functionVersion": "$LATEST", "handler": "fixed.handler"}
            self._reply(200, body, {"Lambda-Extension-Identifier": "ext-1"})
        else:
            self._reply(200, {})

    def do_PUT(self) -> None:  # noqa: N802
        self._drain()
        self.calls.append(("PUT", self.path, None))
        body = {
            "errorMessage": "Telemetry API is not supported",
            "errorType": "Telemetry.NotSupported",
        }
        self._reply(202, body)

    def do_GET(self) -> None:  # noqa: N802
        self.calls.append(("GET", self.path, self.headers.get("Lambda-Extension-Identifier")))
        deadline = int(time.time() * 1000) + 2000
        self._reply(
            200, {"eventType": "SHUTDOWN", "shutdownReason": "spindown", "deadlineMs": deadline}
        )

    def log_message(self, *args) -> None:
        pass


def test_extension_from_the_zip_registers_under_its_file_name_and_exits_at_shutdown(opt):
    """The unpacked binary loads on this host (no `GLIBC_x.y not found`), registers with the name
    Lambda requires (its file name), asks for events and exits by itself after SHUTDOWN."""
    FakeExtensionsApi.calls = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeExtensionsApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{server.server_address[1]}",
        "AWS_LAMBDA_FUNCTION_NAME": "f",
        "LMP_SINK": "emf",
        "LMP_INTAKE_PORT": str(free_udp_port()),
    }
    try:
        done = subprocess.run(
            [str(opt / EXTENSION)], env=env, capture_output=True, text=True, timeout=20
        )
    finally:
        server.shutdown()
        server.server_close()
    assert "GLIBC" not in done.stderr, done.stderr
    assert done.returncode == 0, done.stderr
    register = [c for c in FakeExtensionsApi.calls if c[1] == "/2020-01-01/extension/register"]
    assert register == [("POST", "/2020-01-01/extension/register", "lambda-memory-profiler")]
    assert ("GET", "/2020-01-01/extension/event/next", "ext-1") in FakeExtensionsApi.calls


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_decorated_example_runs_from_the_unpacked_layer(opt, tmp_path):
    """An example handler imports the decorator from the layer's python/ folder and, with no
    extension listening, still gets its metrics out as Embedded Metric Format lines."""
    script = (
        "import sys, types\n"
        "import fixed, lambda_memory_profiler\n"
        "assert lambda_memory_profiler.__file__.startswith(sys.argv[1]), "
        "lambda_memory_profiler.__file__\n"
        "for n in range(8):\n"
        "    ctx = types.SimpleNamespace(aws_request_id=f'req-{n}', function_name='param-store',\n"
        "                                memory_limit_in_mb=256)\n"
        "    fixed.handler({'seq': n + 1}, ctx)\n"
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": f"{opt / 'python'}:{ROOT / 'examples' / 'param_store'}",
        "AWS_LAMBDA_FUNCTION_NAME": "param-store",
        "LMP_NAMESPACE": "LayerTest",
        "LMP_INTAKE_PORT": str(free_udp_port()),
    }
    done = subprocess.run(
        [sys.executable, "-c", script, str(opt / "python")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    emf = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    emf = [doc for doc in emf if "_aws" in doc]
    assert emf, done.stdout
    namespaces = {m["Namespace"] for doc in emf for m in doc["_aws"]["CloudWatchMetrics"]}
    assert namespaces == {"LayerTest"}
