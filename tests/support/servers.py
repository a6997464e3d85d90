"""Real registry servers and container runtimes for the tests, each in its own temp dirs.

Nothing here is mocked: every helper drives the Debian binary (docker-registry, dockerd,
containerd, Podman, skopeo) on loopback, so a test that passes has been checked against the
clients MetaHub must serve. Binaries are called by absolute path because /usr/local/bin may
hold other builds (a newer docker CLI shadows Debian's). A missing binary raises
`MissingBinaryError`: the tests must fail loudly, never skip.

Each server keeps its log in its temp dir and puts the tail into any error. Stopping is
thorough (container processes, shims, daemon, leftover mounts) so that one test's runtime
never leaks into the next. Unix sockets and runtime state go to a short dir under /tmp
because socket paths are limited to 108 bytes and pytest's temp paths can be long.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Self

import yaml

REGISTRY = "/usr/bin/docker-registry"
DOCKER = "/usr/bin/docker"
DOCKERD = "/usr/sbin/dockerd"
CONTAINERD = "/usr/bin/containerd"
CTR = "/usr/bin/ctr"
PODMAN = "/usr/bin/podman"
SKOPEO = "/usr/bin/skopeo"

# Debian package of each binary, for the error message when one is missing.
_PACKAGES = {
    REGISTRY: "docker-registry",
    DOCKER: "docker.io",
    DOCKERD: "docker.io",
    CONTAINERD: "containerd",
    CTR: "containerd",
    PODMAN: "podman",
    SKOPEO: "skopeo",
}

CompletedProcess = subprocess.CompletedProcess[str]


class MissingBinaryError(RuntimeError):
    """A runtime the tests need is not installed; the test must fail, not skip."""


class UnmarkedRuntimeError(RuntimeError):
    """A test without the `e2e` marker tried to drive a container runtime."""


class ServerError(RuntimeError):
    """A server died or did not answer in time; the message carries its log tail."""


# The container runtimes: only tests marked `e2e` may drive them, so that `pytest -m "not e2e"`
# passes on a machine without them. docker-registry is no runtime: any test may start one.
RUNTIMES = frozenset({DOCKER, DOCKERD, CONTAINERD, CTR, PODMAN, SKOPEO})
_runtimes_allowed = True


def allow_runtimes(allowed: bool) -> None:
    """Let the tests that run next drive container runtimes, or not (set per test by a hook)."""
    global _runtimes_allowed
    _runtimes_allowed = allowed


def require(binary: str) -> str:
    """Return `binary` if it is executable, else raise with the package that provides it."""
    if binary in RUNTIMES and not _runtimes_allowed:
        raise UnmarkedRuntimeError(
            f"{binary} is a container runtime: a test that drives one needs the e2e marker"
        )
    if not os.access(binary, os.X_OK):
        package = _PACKAGES.get(binary, "?")
        raise MissingBinaryError(
            f"{binary} is missing (Debian package {package}); "
            "run `scripts/install-system-deps.sh test` as root"
        )
    return binary


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 20) -> None:
    """Block until something accepts TCP connections on host:port, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError as error:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s") from error
            time.sleep(0.05)


def skopeo(*args: str, check: bool = False, timeout: float = 120) -> CompletedProcess:
    """Run skopeo, e.g. `skopeo("copy", "--all", "oci:DIR:REF", "docker://HOST/NAME:TAG")`."""
    return _run([require(SKOPEO), *args], check=check, timeout=timeout)


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash for an htpasswd file (the registry accepts nothing else).

    libcrypt (libxcrypt, part of every Debian) does bcrypt, which spares a Python dependency;
    cost 4, the minimum, because the registry checks the hash on every request.
    """
    libcrypt = ctypes.CDLL("libcrypt.so.1", use_errno=True)
    libcrypt.crypt_gensalt.restype = ctypes.c_char_p
    c_str, c_ulong, c_int = ctypes.c_char_p, ctypes.c_ulong, ctypes.c_int
    libcrypt.crypt_gensalt.argtypes = [c_str, c_ulong, c_str, c_int]
    libcrypt.crypt.restype = ctypes.c_char_p
    libcrypt.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    salt = libcrypt.crypt_gensalt(b"$2y$", 4, None, 0)
    hashed = libcrypt.crypt(password.encode(), salt) if salt else None
    if not hashed or not hashed.startswith(b"$2y$"):
        raise RuntimeError(f"libcrypt cannot make a bcrypt hash (errno {ctypes.get_errno()})")
    return str(hashed.decode())


class _Daemon:
    """A long-running server process with a log file, a readiness probe and a thorough stop."""

    name = "server"

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.log_path = tmp / f"{self.name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        # Short dir for sockets and runtime state; made on start, removed on stop.
        self.run_dir: Path | None = None

    def log_tail(self, chars: int = 6000) -> str:
        """The end of the server's log, for error messages."""
        if not self.log_path.exists():
            return "(no log)"
        return self.log_path.read_text(errors="replace")[-chars:]

    def _spawn(
        self, argv: list[str], ready: Callable[[], bool], timeout: float, cwd: Path | None = None
    ) -> None:
        require(argv[0])
        if self.process is not None and self.process.poll() is None:
            raise ServerError(f"{self.name} is already running")
        with self.log_path.open("ab") as log:
            log.write(f"--- {time.strftime('%H:%M:%S')} {' '.join(argv)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                argv,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            returncode = self.process.poll()
            if returncode is not None:
                self.process = None
                self._cleanup()
                raise ServerError(f"{self.name} exited with {returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                if ready():
                    return
            if time.monotonic() >= deadline:
                self.stop()
                raise ServerError(f"{self.name} not ready after {timeout} s:\n{self.log_tail()}")
            time.sleep(0.05)

    def _make_run_dir(self) -> Path:
        if self.run_dir is None:
            self.run_dir = Path(tempfile.mkdtemp(prefix=f"mh-{self.name}-", dir="/tmp"))
        return self.run_dir

    def _before_stop(self) -> None:
        """Kill container processes first so the daemon does not wait for them to stop."""
        if self.run_dir is not None:
            _kill_containers(str(self.run_dir) + "/")

    def stop(self) -> None:
        """Stop the daemon (SIGTERM, then SIGKILL), its children, and unmount what it left."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            self._before_stop()
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        self._cleanup()

    def _owned_dirs(self) -> list[Path]:
        """Dirs only this instance uses: processes naming them and mounts below them are its."""
        return [self.run_dir] if self.run_dir is not None else []

    def _cleanup(self) -> None:
        markers = [f"{path}/" for path in self._owned_dirs()]
        _kill_matching(markers)
        _unmount_under(markers)
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.run_dir = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        raise NotImplementedError


class RegistryServer(_Daemon):
    """A real `docker-registry` (distribution 2.8) with filesystem storage in `tmp`.

    It keeps its port and storage across stop() and start(), so a test can take the upstream
    away mid-test and bring it back with its content. `htpasswd` maps users to passwords and
    turns on basic auth.
    """

    name = "registry"

    def __init__(self, tmp: Path, *, htpasswd: dict[str, str] | None = None) -> None:
        super().__init__(tmp)
        self.users = dict(htpasswd or {})
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.storage = tmp / "storage"
        self.config_path = tmp / "config.yml"

    def _write_config(self) -> None:
        config: dict[str, object] = {
            "version": 0.1,
            "log": {"level": "info", "fields": {"service": "registry"}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            # A fixed secret keeps upload URLs valid across a restart.
            "http": {"addr": self.host, "secret": "metahub-tests"},
        }
        if self.users:
            htpasswd = self.tmp / "htpasswd"
            lines = [f"{user}:{bcrypt_hash(password)}\n" for user, password in self.users.items()]
            htpasswd.write_text("".join(lines))
            config["auth"] = {"htpasswd": {"realm": "metahub-tests", "path": str(htpasswd)}}
        self.storage.mkdir(exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(config))

    def start(self) -> None:
        """Start serving on the same port and storage as before; returns once /v2/ answers."""
        if not self.config_path.exists():
            self._write_config()
        self._spawn([REGISTRY, "serve", str(self.config_path)], self._answers, timeout=20)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/v2/", timeout=1) as response:
                return bool(response.status == 200)
        except urllib.error.HTTPError as error:
            return error.code == 401
        except urllib.error.URLError:
            return False


class Dockerd(_Daemon):
    """A private dockerd (vfs storage, no networking setup) with its own containerd.

    `--iptables=false --bridge=none` because the sandbox has no netfilter and containers run
    with `--network=none`; vfs because it works on any filesystem. Docker treats registries on
    127.0.0.0/8 as plain HTTP, so no `insecure-registries` are needed.
    """

    name = "dockerd"

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.data_root = tmp / "data"
        self.default_config_dir = tmp / "client"
        self.socket: Path | None = None

    def start(self) -> None:
        run_dir = self._make_run_dir()
        self.socket = run_dir / "docker.sock"
        daemon_json = self.tmp / "daemon.json"
        daemon_json.write_text("{}\n")  # never read the host's /etc/docker/daemon.json
        argv = [
            DOCKERD,
            f"--config-file={daemon_json}",
            f"--data-root={self.data_root}",
            f"--exec-root={run_dir / 'exec'}",
            f"--host=unix://{self.socket}",
            f"--pidfile={run_dir / 'dockerd.pid'}",
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            "--storage-driver=vfs",
            "--shutdown-timeout=2",
        ]
        self._spawn(argv, self._answers, timeout=60)

    def _answers(self) -> bool:
        assert self.socket is not None
        if not self.socket.exists():
            return False
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(2)
            sock.connect(str(self.socket))
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.0 200")

    def _owned_dirs(self) -> list[Path]:
        return [*super()._owned_dirs(), self.data_root]  # dockerd bind-mounts its data root

    def env(self, config_dir: Path | None = None) -> dict[str, str]:
        """Environment for the docker CLI: this daemon, and a private client config dir."""
        if self.socket is None:
            raise ServerError("dockerd is not started")
        config_dir = config_dir or self.default_config_dir
        config_dir.mkdir(parents=True, exist_ok=True)
        env = {key: value for key, value in os.environ.items() if not key.startswith("DOCKER_")}
        env.update(DOCKER_HOST=f"unix://{self.socket}", DOCKER_CONFIG=str(config_dir))
        return env

    def docker(
        self,
        *args: str,
        config_dir: Path | None = None,
        check: bool = False,
        timeout: float = 120,
        input: str | None = None,
    ) -> CompletedProcess:
        """Run Debian's docker CLI against this daemon; `config_dir` holds logins."""
        argv = [require(DOCKER), *args]
        return _run(argv, env=self.env(config_dir), check=check, timeout=timeout, input=input)

    def login(self, host: str, user: str, password: str, config_dir: Path) -> CompletedProcess:
        """`docker login` with the password on stdin; credentials land in `config_dir`."""
        args = ("login", "--username", user, "--password-stdin", host)
        return self.docker(*args, config_dir=config_dir, input=password)

    def run(self, ref: str, config_dir: Path, *, check: bool = False) -> CompletedProcess:
        """Pull `ref` afresh (`--pull=always`, docker >= 20.10) and run it; stdout is its output."""
        args = ("run", "--rm", "--network=none", "--pull=always", ref)
        return self.docker(*args, config_dir=config_dir, check=check)


class Containerd(_Daemon):
    """A private containerd driven with `ctr`, its CRI plugin off (faster, no CNI needed).

    The snapshotter is overlayfs when the kernel allows it, else native; pull and run use the
    same one. Pulls go over plain HTTP because every test registry is on loopback. Each
    instance has its own namespace because runc state (/run/containerd/runc/NS/ID) and cgroups
    (/NS/ID) are shared by every containerd on the machine.
    """

    name = "containerd"

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.root = tmp / "root"
        self.config_path = tmp / "config.toml"
        self.address: Path | None = None
        self.snapshotter = "overlayfs"
        self.namespace = f"mh{uuid.uuid4().hex[:12]}"

    def start(self) -> None:
        run_dir = self._make_run_dir()
        self.address = run_dir / "containerd.sock"
        self.config_path.write_text(
            "version = 2\n"
            f'root = "{self.root}"\n'
            f'state = "{run_dir / "state"}"\n'
            # cri wants CNI and a sandbox image; opt would write to /opt/containerd.
            'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.opt"]\n'
            f'[grpc]\n  address = "{self.address}"\n'
            f'[ttrpc]\n  address = "{self.address}.ttrpc"\n'
            '[debug]\n  address = ""\n'
            '[metrics]\n  address = ""\n'
        )
        self._spawn([CONTAINERD, "--config", str(self.config_path)], self._answers, timeout=60)
        plugins = self.ctr("plugins", "ls", check=True).stdout.split("\n")
        overlay_ok = any(
            line.split()[1:2] == ["overlayfs"] and line.split()[-1] == "ok"
            for line in plugins
            if line.startswith("io.containerd.snapshotter.v1")
        )
        self.snapshotter = "overlayfs" if overlay_ok else "native"

    def _answers(self) -> bool:
        assert self.address is not None
        if not self.address.exists():
            return False
        return self.ctr("version", timeout=10).returncode == 0

    def _owned_dirs(self) -> list[Path]:
        return [*super()._owned_dirs(), self.root]

    def _cleanup(self) -> None:
        super()._cleanup()
        shutil.rmtree(Path("/run/containerd/runc", self.namespace), ignore_errors=True)

    def ctr(self, *args: str, check: bool = False, timeout: float = 120) -> CompletedProcess:
        """Run `ctr --address SOCK --namespace NS ARGS` against this containerd."""
        if self.address is None:
            raise ServerError("containerd is not started")
        argv = [require(CTR), f"--address={self.address}", f"--namespace={self.namespace}", *args]
        return _run(argv, check=check, timeout=timeout)

    def pull(
        self, ref: str, user: str | None = None, password: str | None = None, *, check: bool = False
    ) -> CompletedProcess:
        """`ctr images pull` over plain HTTP, with basic credentials if given."""
        args = ["images", "pull", "--plain-http", f"--snapshotter={self.snapshotter}"]
        if user is not None:
            args += ["--user", f"{user}:{password or ''}"]
        return self.ctr(*args, ref, check=check)

    def run(self, ref: str, *, check: bool = False) -> CompletedProcess:
        """Run a pulled image once (`ctr run --rm`); stdout is the container's output."""
        container = f"run-{uuid.uuid4().hex[:12]}"
        options = ("--rm", f"--snapshotter={self.snapshotter}")
        return self.ctr("run", *options, ref, container, check=check)


class Podman:
    """Podman with a private store, runtime dir, config, registries and auth file.

    No daemon: the configuration in `tmp` isolates it (file locks instead of the shared
    /dev/shm segment, cgroupfs and file events because there is no systemd, vfs storage, and
    ulimits the sandbox allows: Podman's default nofile of 1048576 is over the hard limit).
    """

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.root = tmp / "root"
        # Podman refuses a runroot over 50 characters, so it lives in a short dir under /tmp.
        self.run_dir = Path(tempfile.mkdtemp(prefix="mh-podman-", dir="/tmp"))
        self.runroot = self.run_dir / "run"
        self.auth_file = tmp / "auth.json"
        for path in (self.root, self.runroot, self.run_dir / "tmp", tmp / "net"):
            path.mkdir(parents=True, exist_ok=True)
        if not self.auth_file.exists():
            self.auth_file.write_text('{"auths": {}}\n')
        (tmp / "containers.conf").write_text(
            "[containers]\n"
            'netns = "none"\n'
            'default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{tmp / "events.log"}"\n'
            f'tmp_dir = "{self.run_dir / "tmp"}"\n'
            'lock_type = "file"\n'
            'runtime = "runc"\n'
            "[network]\n"
            f'network_config_dir = "{tmp / "net"}"\n'
        )
        (tmp / "storage.conf").write_text(
            f'[storage]\ndriver = "vfs"\ngraphroot = "{self.root}"\nrunroot = "{self.runroot}"\n'
        )
        (tmp / "registries.conf").write_text("unqualified-search-registries = []\n")

    def env(self) -> dict[str, str]:
        """Environment that points Podman at this instance's configuration only."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("CONTAINERS_")}
        env.update(
            CONTAINERS_CONF=str(self.tmp / "containers.conf"),
            CONTAINERS_STORAGE_CONF=str(self.tmp / "storage.conf"),
            CONTAINERS_REGISTRIES_CONF=str(self.tmp / "registries.conf"),
            REGISTRY_AUTH_FILE=str(self.auth_file),
        )
        return env

    def podman(self, *args: str, check: bool = False, timeout: float = 120) -> CompletedProcess:
        """Run `podman --root R --runroot RR --storage-driver vfs ARGS` for this instance."""
        store = (f"--root={self.root}", f"--runroot={self.runroot}", "--storage-driver=vfs")
        return _run([require(PODMAN), *store, *args], env=self.env(), check=check, timeout=timeout)

    def pull(self, ref: str, creds: str | None = None, *, check: bool = False) -> CompletedProcess:
        """`podman pull` without TLS; `creds` is "USER:PASSWORD" as for `--creds`."""
        args = ["pull", "--tls-verify=false"]
        if creds is not None:
            args += ["--creds", creds]
        return self.podman(*args, ref, check=check)

    def run(self, ref: str, *, check: bool = False) -> CompletedProcess:
        """Run a pulled image once; stdout is the container's output."""
        limits = ("--ulimit=nofile=1024:1024", "--ulimit=nproc=1024:1024")
        return self.podman(
            "run", "--rm", "--network=none", "--pull=never", *limits, ref, check=check
        )

    def close(self) -> None:
        """Remove any containers left behind, kill their processes, unmount what is left."""
        if os.access(PODMAN, os.X_OK):
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.podman("rm", "--all", "--force", "--time", "0", timeout=60)
        markers = [f"{self.run_dir}/", f"{self.root}/"]
        _kill_matching(markers)
        _unmount_under(markers)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _run(
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    check: bool,
    timeout: float,
    input: str | None = None,
) -> CompletedProcess:
    result = subprocess.run(
        argv,
        env=env,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited with {result.returncode}\n"
            f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
        )
    return result


# --- process and mount cleanup -------------------------------------------------------------
# A daemon's children outlive it on purpose (containerd shims, conmon, containers in their own
# sessions), so stopping has to find them. They are found by the unique temp paths on their
# command lines and killed by pid.

_SHIMS = {"containerd-shim", "containerd-shim-runc-v2", "conmon"}


def _process_table() -> dict[int, tuple[int, list[str]]]:
    """pid -> (ppid, argv) for every live, non-zombie process."""
    table: dict[int, tuple[int, list[str]]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            argv = Path(entry.path, "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        state, ppid = stat.rpartition(")")[2].split()[:2]
        if state != "Z":
            table[int(entry.name)] = (int(ppid), argv.split("\0"))
    return table


def _descendants(table: dict[int, tuple[int, list[str]]], roots: Iterable[int]) -> set[int]:
    found = set(roots)
    grew = True
    while grew:
        children = {pid for pid, (ppid, _) in table.items() if ppid in found} - found
        found |= children
        grew = bool(children)
    return found


def _protected(table: dict[int, tuple[int, list[str]]]) -> set[int]:
    """This process and its ancestors, which must never be killed."""
    protected = {0, 1}
    pid = os.getpid()
    while pid > 1 and pid not in protected:
        protected.add(pid)
        pid = table.get(pid, (0, []))[0]
    return protected


def _kill_containers(marker: str) -> None:
    """SIGKILL what runs under this instance's shims (the containers), not the shims."""
    table = _process_table()
    shims = {
        pid
        for pid, (_, argv) in table.items()
        if Path(argv[0]).name in _SHIMS and any(marker in arg for arg in argv)
    }
    _kill(_descendants(table, shims) - shims - _protected(table))


def _kill_matching(markers: list[str]) -> None:
    """SIGKILL every process whose command line names one of `markers`, with descendants."""
    table = _process_table()
    roots = {
        pid for pid, (_, argv) in table.items() if any(m in arg for arg in argv for m in markers)
    }
    _kill(_descendants(table, roots) - _protected(table))


def _kill(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pids and time.monotonic() < deadline:
        table = _process_table()
        pids = {pid for pid in pids if pid in table}
        if pids:
            time.sleep(0.05)


def _unmount_under(markers: list[str]) -> None:
    """Lazily unmount every mount point below the given dirs, deepest first."""
    points: list[str] = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            point = _unescape(line.split()[4])
            if any((point + "/").startswith(marker) for marker in markers):
                points.append(point)
    if not points:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for point in sorted(points, key=len, reverse=True):
        libc.umount2(point.encode(), 2)  # MNT_DETACH; errors mean someone else unmounted it


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    return field.encode().decode("unicode_escape").encode("latin-1").decode(errors="replace")


__all__ = [
    "CONTAINERD",
    "CTR",
    "DOCKER",
    "DOCKERD",
    "PODMAN",
    "REGISTRY",
    "RUNTIMES",
    "SKOPEO",
    "Containerd",
    "Dockerd",
    "MissingBinaryError",
    "Podman",
    "RegistryServer",
    "ServerError",
    "UnmarkedRuntimeError",
    "allow_runtimes",
    "bcrypt_hash",
    "free_port",
    "require",
    "skopeo",
    "wait_for_port",
]
