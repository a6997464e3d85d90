"""Soak: minutes of mixed registry traffic through a real `metahub serve` while its upstream fails.

`python -m benchmarks.soak [--duration SECONDS]` or `make soak` (ten minutes; not part of
`make test` or `make bench`). Everything runs on 127.0.0.1:

- one real `docker-registry` holds feature-tagged indexes, a virtual image's parts and a few
  blobs of random bytes; MetaHub reaches it only through `FaultProxy`, a small HTTP proxy in
  this process that can slow its answers or answer 5xx on a schedule;
- `metahub serve` (one worker) with two machine types with passwords, a blob cache and a
  virtual image;
- clients, each a loop with a pause: warm pulls of the same tags as containerd does them (HEAD
  the tag, GET the index by digest, GET the child manifest, GET the config and layer blobs), for
  both machine types; cold pulls of tags pushed to the registry during the run; blob downloads
  in full and by Range; logins with right and wrong passwords; clients that hang up mid-blob.

Faults, each logged with its time: the registry stopped and started again, the proxy delaying
answers by 1-5 s, and the proxy answering 5xx. Every answer's bytes are checked against their
digest (or the slice of the known blob a Range asked for). The report says how MetaHub's RSS
moved, what was asked and answered, which errors no injected fault explains, and whether any
download completed with wrong bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict
from rich.console import Console
from tests.support.feature_images import MACHINE_TYPES, OCI_INDEX, OCI_MANIFEST, FeatureIndex
from tests.support.feature_images import feature_index as make_feature_index
from tests.support.feature_images import push as push_feature_index
from tests.support.metahub_server import MetaHubServer
from tests.support.push import Pusher, sha256
from tests.support.servers import RegistryServer, free_port

from benchmarks import Column, SuiteResult
from benchmarks.__main__ import RESULTS, machine, record, table

APP = "soak/app"  # feature-tagged indexes, warm and cold
PARTS = "soak/parts"  # the virtual image's members
VIRTUAL = "soak/virtual"  # served from MetaHub's config only
BLOBS = "soak/blobs"  # larger blobs for downloads
REPOSITORIES = (APP, PARTS, VIRTUAL, BLOBS)
WARM_TAGS = ("warm-0", "warm-1", "warm-2")
BLOB_SIZES = (256 * 1024, 4 * 1024 * 1024, 16 * 1024 * 1024)
MANIFEST_ACCEPT = ", ".join(
    (
        OCI_INDEX,
        OCI_MANIFEST,
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)

FULL_DURATION = 600.0
RSS_EVERY = 30.0  # seconds between RSS samples
RSS_TARGET_PERCENT = 10.0
GRACE = 15.0  # seconds after a fault in which its errors still count as injected
REQUEST_TIMEOUT = 60.0  # no client waits longer for one answer
MAX_REQUESTS = 500_000  # a bound on the whole run whatever its duration
TOKEN_REFRESH = 120.0  # tokens live 300 s; clients get a new one well before
# One failed login every WRONG_LOGIN_EVERY seconds stays under the default limit of 10 a minute
# per address, which would otherwise refuse the right passwords too (429).
WRONG_LOGIN_EVERY = 10.0


# -- what happened ---------------------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    """One request as a client saw it; times are seconds since the run started."""

    kind: str
    method: str
    path: str
    started: float
    ended: float
    status: int | None = None
    problem: str | None = None  # why this is an error; None when it went as expected
    answer: str = ""  # the start of the body, or the exception
    upstream_named: bool = False  # a 5xx registry error that names the upstream
    deliberate: bool = False  # the client hung up on purpose
    wrong_bytes: bool = False  # completed, but the bytes do not match the digest


@dataclass(slots=True)
class Fault:
    kind: str
    started: float
    ended: float
    detail: str


@dataclass(slots=True)
class Journal:
    """Every request, fault and RSS sample of the run."""

    origin: float = field(default_factory=time.monotonic)
    outcomes: list[Outcome] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    rss: list[tuple[float, float, float]] = field(default_factory=list)  # (t, MiB, load 1m)
    hub_tracebacks: int = 0  # in MetaHub's log: each one is a bug, whatever the client saw

    def now(self) -> float:
        return time.monotonic() - self.origin

    def full(self) -> bool:
        return len(self.outcomes) >= MAX_REQUESTS


# -- the fault-injecting proxy between MetaHub and its upstream -------------------------------

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "host", "upgrade", "te"}


class FaultProxy:
    """Forwards HTTP to the registry unchanged, unless told to be slow or to fail.

    It is HTTP-aware rather than a TCP relay so that a fault reaches every request, including
    those on MetaHub's kept-alive connections.
    """

    def __init__(self, target: str) -> None:
        self.target = target
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.mode = "pass"  # or "slow" or "error"
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None, connect=5)
        )
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        if self.mode == "slow":
            await asyncio.sleep(random.uniform(1, 5))
        elif self.mode == "error":
            status = random.choice((500, 502, 503))
            body = {"errors": [{"code": "UNAVAILABLE", "message": "injected", "detail": None}]}
            return web.json_response(body, status=status)
        headers = CIMultiDict(  # repeated headers (Accept) kept as they came
            (k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP
        )
        try:
            upstream = await self._session.request(
                request.method,
                self.target + request.path_qs,
                headers=headers,
                data=await request.read() if request.can_read_body else None,
                allow_redirects=False,
            )
        except (aiohttp.ClientError, OSError):
            # The registry is down: drop the connection as a dead host would.
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=502)
        async with upstream:
            answer = web.StreamResponse(status=upstream.status)
            for name, value in upstream.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    answer.headers.add(name, value)
            await answer.prepare(request)
            try:
                async for chunk in upstream.content.iter_chunked(64 * 1024):
                    await answer.write(chunk)
            except (aiohttp.ClientError, OSError):
                if request.transport is not None:
                    request.transport.abort()  # a body cut short must not look complete
                return answer
            await answer.write_eof()
            return answer


# -- content -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Content:
    blobs: dict[str, bytes]  # digest -> bytes, the larger blobs under BLOBS
    virtual_parts: FeatureIndex


def push_content(registry: RegistryServer) -> Content:
    pusher = Pusher(registry.url)
    try:
        for tag in WARM_TAGS:
            push_feature_index(pusher, APP, tag, make_feature_index(f"soak {tag}"))
        parts = make_feature_index("soak virtual parts")
        for blob in parts.blobs:
            pusher.blob(PARTS, blob)
        for feature, manifest in parts.manifests.items():
            pusher.manifest(PARTS, feature.replace(":", "-"), manifest, OCI_MANIFEST)
        blobs = {}
        for size in BLOB_SIZES:
            data = os.urandom(size)
            blobs[pusher.blob(BLOBS, data)] = data
    finally:
        pusher.close()
    return Content(blobs, parts)


def hub_config(content: Content, registry_url: str, cache_dir: Path) -> dict[str, object]:
    members = [
        {
            "image": f"{PARTS}:{feature.replace(':', '-')}",
            "platform": {"architecture": "amd64", "os": "linux", "features": [feature]},
        }
        for feature in content.virtual_parts.manifests
    ]
    return {
        "upstream": {"url": registry_url},
        "machine_types": MACHINE_TYPES,
        "cache": {"blobs": {"path": str(cache_dir)}},
        "images": [{"image": VIRTUAL, "manifests": members}],
    }


# -- clients -----------------------------------------------------------------------------------


# Checks an answer's bytes: (status, headers, body) -> what is wrong with them, or None.
Check = Callable[[int, dict[str, str], bytes], str | None]


class Client:
    """One machine type's client: its token, and requests recorded in the journal."""

    def __init__(
        self, session: aiohttp.ClientSession, base: str, journal: Journal, machine_type: int
    ) -> None:
        self.session = session
        self.base = base
        self.journal = journal
        self.login = str(MACHINE_TYPES[machine_type]["login"])
        self.password = str(MACHINE_TYPES[machine_type]["password"])
        self.token = ""
        self.token_time = -TOKEN_REFRESH

    async def call(
        self,
        kind: str,
        method: str,
        path: str,
        *,
        expect: tuple[int, ...] = (200,),
        headers: dict[str, str] | None = None,
        check: Check | None = None,
        bearer: bool = True,
    ) -> tuple[int, dict[str, str], bytes] | None:
        """One request; None when it failed (the journal says how)."""
        all_headers = dict(headers or {})
        if bearer:
            all_headers["Authorization"] = f"Bearer {await self.bearer()}"
        outcome = Outcome(kind, method, path, self.journal.now(), 0.0)
        self.journal.outcomes.append(outcome)
        try:
            async with self.session.request(
                method, self.base + path, headers=all_headers
            ) as response:
                body = await response.read()
                answered = {k.lower(): v for k, v in response.headers.items()}
                outcome.status = response.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            outcome.ended = self.journal.now()
            outcome.problem = "transport"
            outcome.answer = f"{type(exc).__name__}: {exc}"[:300]
            return None
        outcome.ended = self.journal.now()
        if response.status not in expect:
            outcome.problem = f"status {response.status}"
            outcome.answer = body[:300].decode(errors="replace")
            outcome.upstream_named = _names_upstream(response.status, method, body)
            return None
        if check is not None:
            wrong = check(response.status, answered, body)
            if wrong is not None:
                outcome.problem = "wrong bytes"
                outcome.wrong_bytes = True
                outcome.answer = wrong
                return None
        return response.status, answered, body

    async def bearer(self) -> str:
        if self.journal.now() - self.token_time >= TOKEN_REFRESH or not self.token:
            got = await self.fetch_token(self.password)
            if got is not None:
                self.token, self.token_time = got, self.journal.now()
        return self.token

    async def fetch_token(self, password: str) -> str | None:
        right = password == self.password
        scope = "&".join(f"scope=repository:{name}:pull" for name in REPOSITORIES)
        answer = await self.call(
            "login" if right else "login, wrong password",
            "GET",
            f"/token?service=metahub&{scope}",
            expect=(200,) if right else (401,),
            headers={"Authorization": _basic(self.login, password)},
            bearer=False,
        )
        if answer is None or not right:
            return None
        token: str = orjson.loads(answer[2])["token"]
        return token

    async def pull(self, kind: str, repository: str, tag: str) -> None:
        """As containerd pulls: HEAD the tag, the index by digest, its child, the blobs."""
        accept = {"Accept": MANIFEST_ACCEPT}
        head = await self.call(kind, "HEAD", f"/v2/{repository}/manifests/{tag}", headers=accept)
        if head is None:
            return
        digest = head[1].get("docker-content-digest", "")
        index = await self.call(
            kind,
            "GET",
            f"/v2/{repository}/manifests/{digest}",
            headers=accept,
            check=_digest_check(digest),
        )
        if index is None:
            return
        entries = orjson.loads(index[2]).get("manifests", [])
        if len(entries) != 1:  # each machine type matches exactly one entry
            now = self.journal.now()
            path = f"/v2/{repository}/manifests/{digest}"
            wrong = Outcome(kind, "GET", path, now, now, status=index[0])
            wrong.problem = f"{len(entries)} entries after filtering"
            wrong.answer = index[2][:300].decode(errors="replace")
            self.journal.outcomes.append(wrong)
            return
        child_digest = entries[0]["digest"]
        child = await self.call(
            kind,
            "GET",
            f"/v2/{repository}/manifests/{child_digest}",
            headers=accept,
            check=_digest_check(child_digest),
        )
        if child is None:
            return
        document = orjson.loads(child[2])
        for blob in [document["config"], *document["layers"]]:
            await self.call(
                kind,
                "GET",
                f"/v2/{repository}/blobs/{blob['digest']}",
                check=_digest_check(blob["digest"]),
            )


def _basic(login: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()


def _digest_check(digest: str) -> Check:
    def check(status: int, headers: dict[str, str], body: bytes) -> str | None:
        if sha256(body) != digest:
            return f"{len(body)} bytes with digest {sha256(body)}, not {digest}"
        return None

    return check


def _range_check(data: bytes, first: int, last: int) -> Check:
    def check(status: int, headers: dict[str, str], body: bytes) -> str | None:
        expected = data if status == 200 else data[first : last + 1]
        if body != expected:
            return f"{status}: {len(body)} bytes, not the {len(expected)} asked for"
        return None

    return check


def _names_upstream(status: int, method: str, body: bytes) -> bool:
    """A 502/503/504 registry error about the upstream (a HEAD answer has no body to tell)."""
    if status not in (502, 503, 504):
        return False
    if method == "HEAD":
        return True
    try:
        errors = orjson.loads(body)["errors"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return False
    return any(str(error.get("code", "")).startswith("UPSTREAM") for error in errors)


# -- the traffic -------------------------------------------------------------------------------


@dataclass(slots=True)
class Traffic:
    clients: list[Client]
    journal: Journal
    content: Content
    hub: MetaHubServer
    registry: RegistryServer
    stop: asyncio.Event
    cold_tags: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    last_wrong_login: float = 0.0

    async def loop(self, pause: float, step: Callable[[], Awaitable[None]]) -> None:
        while not self.stop.is_set() and not self.journal.full():
            await step()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), pause * random.uniform(0.5, 1.5))

    async def warm(self, client: Client) -> None:
        tags = [(APP, tag) for tag in WARM_TAGS] + [(VIRTUAL, "latest")]
        await self.loop(0.2, lambda: client.pull("warm pull", *random.choice(tags)))

    async def push_cold(self) -> None:
        """A new feature-tagged index straight into the registry every few seconds."""
        number = 0

        async def step() -> None:
            nonlocal number
            tag = f"cold-{number}"
            image = make_feature_index(f"soak {tag}")
            try:
                await asyncio.to_thread(_push_one, self.registry.url, tag, image)
            except Exception:  # the registry is being restarted: try the next one later
                return
            number += 1
            await self.cold_tags.put(tag)

        await self.loop(4.0, step)

    async def cold(self) -> None:
        async def step() -> None:
            with contextlib.suppress(TimeoutError):
                tag = await asyncio.wait_for(self.cold_tags.get(), 2)
                for client in self.clients:  # the first pull of each machine type is cold
                    await client.pull("cold pull", APP, tag)

        await self.loop(0.1, step)

    async def blobs(self, client: Client) -> None:
        async def step() -> None:
            digest, data = random.choice(list(self.content.blobs.items()))
            path = f"/v2/{BLOBS}/blobs/{digest}"
            if random.random() < 0.5:
                await client.call("blob", "GET", path, check=_digest_check(digest))
                return
            first = random.randrange(len(data))
            last = random.randrange(first, len(data))
            await client.call(
                "blob range",
                "GET",
                path,
                expect=(200, 206),
                headers={"Range": f"bytes={first}-{last}"},
                check=_range_check(data, first, last),
            )

        await self.loop(0.5, step)

    async def logins(self, client: Client) -> None:
        async def step() -> None:
            # One wrong password for all clients together, so that the limit is never reached.
            if self.journal.now() - self.last_wrong_login >= WRONG_LOGIN_EVERY:
                self.last_wrong_login = self.journal.now()
                await client.fetch_token(client.password + "-wrong")
            else:
                await client.fetch_token(client.password)

        await self.loop(1.0, step)

    async def hang_ups(self, client: Client) -> None:
        """GET the largest blob and hang up after a little of it, or right after the headers."""
        digest = max(self.content.blobs, key=lambda d: len(self.content.blobs[d]))
        path = f"/v2/{BLOBS}/blobs/{digest}"

        async def step() -> None:
            token = await client.bearer()
            outcome = Outcome("hang-up mid-blob", "GET", path, self.journal.now(), 0.0)
            outcome.deliberate = True
            self.journal.outcomes.append(outcome)
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.hub.port)
            except OSError as exc:
                outcome.problem, outcome.answer = "transport", str(exc)
                outcome.deliberate = False
                return
            try:
                writer.write(
                    f"GET {path} HTTP/1.1\r\nHost: {self.hub.host}\r\n"
                    f"Authorization: Bearer {token}\r\n\r\n".encode()
                )
                await writer.drain()
                with contextlib.suppress(TimeoutError, OSError):
                    await asyncio.wait_for(reader.read(random.choice((1, 64 * 1024))), 30)
            finally:
                writer.transport.abort()
                outcome.ended = self.journal.now()
                outcome.answer = "hung up on purpose"

        await self.loop(3.0, step)

    async def sample_rss(self) -> None:
        while True:
            self.journal.rss.append((self.journal.now(), rss_mib(self.hub), os.getloadavg()[0]))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), RSS_EVERY)
            if self.stop.is_set():
                return


def _push_one(registry_url: str, tag: str, image: FeatureIndex) -> None:
    pusher = Pusher(registry_url)
    try:
        push_feature_index(pusher, APP, tag, image)
    finally:
        pusher.close()


# -- faults ------------------------------------------------------------------------------------

CYCLE = 100.0  # seconds between the starts of two rounds of faults
FIRST_FAULT = 30.0
RESTART_DOWN = 5.0  # seconds the registry stays stopped
SLOW_FOR = 15.0
ERRORS_FOR = 10.0
# (offset in the cycle, kind, seconds it lasts), in order
SCHEDULE = ((0.0, "restart", RESTART_DOWN), (35.0, "slow", SLOW_FOR), (70.0, "5xx", ERRORS_FOR))


async def inject_faults(traffic: Traffic, proxy: FaultProxy, duration: float) -> None:
    journal = traffic.journal
    cycle_start = FIRST_FAULT
    while True:
        for offset, kind, lasts in SCHEDULE:
            at = cycle_start + offset
            if at + lasts + GRACE > duration:
                return  # each fault ends with time to recover before the run does
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(traffic.stop.wait(), max(0.0, at - journal.now()))
            if traffic.stop.is_set():
                return
            started = journal.now()
            if kind == "restart":
                await asyncio.to_thread(traffic.registry.stop)
                await asyncio.sleep(lasts)
                await asyncio.to_thread(traffic.registry.start)
                detail = "docker-registry stopped, started again"
            else:
                proxy.mode = "slow" if kind == "slow" else "error"
                await asyncio.sleep(lasts)
                proxy.mode = "pass"
                detail = (
                    "proxy delays every answer 1-5 s"
                    if kind == "slow"
                    else "proxy answers 500/502/503"
                )
            journal.faults.append(Fault(kind, started, journal.now(), detail))
        cycle_start += CYCLE


# -- RSS ---------------------------------------------------------------------------------------


def rss_mib(hub: MetaHubServer) -> float:
    """VmRSS of the serve process and all its descendants."""
    assert hub._process is not None
    table: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(entry.path, "stat").read_text()
                table[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])
    pids = {hub._process.pid}
    grew = True
    while grew:
        children = {pid for pid, parent in table.items() if parent in pids} - pids
        pids |= children
        grew = bool(children)
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


# -- the run -----------------------------------------------------------------------------------


@contextlib.contextmanager
def servers(workdir: Path) -> Iterator[tuple[RegistryServer, Content]]:
    registry = RegistryServer(workdir / "registry")
    with registry:
        yield registry, push_content(registry)


@contextlib.asynccontextmanager
async def proxied(target: str) -> AsyncIterator[FaultProxy]:
    proxy = FaultProxy(target)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


async def soak(workdir: Path, duration: float) -> tuple[Journal, float]:
    """Run the traffic and the faults for `duration` seconds; the journal and warm-up."""
    warm_up = min(60.0, duration / 4)
    with servers(workdir) as (registry, content):
        async with proxied(registry.url) as proxy:
            (workdir / "hub").mkdir()
            config = hub_config(content, proxy.url, workdir / "hub" / "blobs")
            with MetaHubServer(workdir / "hub", config) as hub:
                journal = Journal()
                timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
                connector = aiohttp.TCPConnector(limit=64)
                async with aiohttp.ClientSession(
                    timeout=timeout, connector=connector, auto_decompress=False
                ) as session:
                    clients = [Client(session, hub.url, journal, n) for n in (0, 1)]
                    traffic = Traffic(clients, journal, content, hub, registry, asyncio.Event())
                    tasks = [asyncio.create_task(traffic.sample_rss())]
                    for client in clients:
                        tasks += [asyncio.create_task(traffic.warm(client)) for _ in range(2)]
                        tasks.append(asyncio.create_task(traffic.blobs(client)))
                        tasks.append(asyncio.create_task(traffic.logins(client)))
                    tasks.append(asyncio.create_task(traffic.push_cold()))
                    tasks.append(asyncio.create_task(traffic.cold()))
                    tasks.append(asyncio.create_task(traffic.hang_ups(clients[0])))
                    faults = asyncio.create_task(inject_faults(traffic, proxy, duration))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(traffic.stop.wait(), duration)
                    traffic.stop.set()
                    await faults
                    done, pending = await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT + 10)
                    for task in pending:
                        task.cancel()
                    for task in done:
                        task.result()  # a client loop that crashed is a bug in the soak
                    journal.rss.append((journal.now(), rss_mib(hub), os.getloadavg()[0]))
                journal.hub_tracebacks = hub.log_path.read_text(errors="replace").count("Traceback")
    return journal, warm_up


# -- the report --------------------------------------------------------------------------------


def explained_by(outcome: Outcome, faults: list[Fault]) -> str | None:
    """Which injected fault (or the client itself) explains a failed request, if any.

    During a fault MetaHub may answer 502/503/504 naming the upstream, and a relayed body cut
    off by the upstream can only end as a broken connection; nothing else is explained, and
    wrong bytes never are.
    """
    if outcome.deliberate:
        return "client hung up on purpose"
    if outcome.wrong_bytes:
        return None
    if not (outcome.upstream_named or outcome.problem == "transport"):
        return None
    for fault in faults:
        if outcome.started <= fault.ended + GRACE and outcome.ended >= fault.started:
            return f"{fault.kind} at {fault.started:.0f} s"
    return None


def report(journal: Journal, warm_up: float, duration: float) -> SuiteResult:
    rows: list[dict[str, object]] = []
    for t, mib, load in journal.rss:
        row = {"section": "RSS", "item": f"at {t:.0f} s", "value": round(mib, 1), "unit": "MiB"}
        rows.append(row)
        rows[-1]["load_1m"] = load
    after_warm_up = next((mib for t, mib, _ in journal.rss if t >= warm_up), None)
    end_mib = journal.rss[-1][1]
    change = (end_mib - after_warm_up) / after_warm_up * 100 if after_warm_up else None
    rows.append(
        {
            "section": "RSS",
            "item": f"change, first sample after {warm_up:.0f} s warm-up to end",
            "value": None if change is None else round(change, 1),
            "unit": "%",
            "target": f"within {RSS_TARGET_PERCENT:g} %",
            "met": _met(change is not None and abs(change) <= RSS_TARGET_PERCENT),
        }
    )
    answered: Counter[tuple[str, str]] = Counter()
    for outcome in journal.outcomes:
        status = str(outcome.status) if outcome.status is not None else "no answer"
        if outcome.deliberate:
            status = "hung up"
        elif outcome.wrong_bytes:
            status += ", wrong bytes"
        answered[(outcome.kind, status)] += 1
    for (kind, status), count in sorted(answered.items()):
        rows.append({"section": "requests", "item": f"{kind}: {status}", "value": count})
    for fault in journal.faults:
        rows.append(
            {
                "section": "fault",
                "item": f"{fault.started:.1f}-{fault.ended:.1f} s {fault.kind}: {fault.detail}",
            }
        )
    failed = [o for o in journal.outcomes if o.problem is not None or o.deliberate]
    explained = Counter(explained_by(o, journal.faults) is not None for o in failed)
    unexplained = [o for o in failed if explained_by(o, journal.faults) is None]
    wrong = sum(1 for o in journal.outcomes if o.wrong_bytes)
    rows += [
        {"section": "errors", "item": "explained by an injected fault", "value": explained[True]},
        {
            "section": "errors",
            "item": "unexplained",
            "value": len(unexplained),
            "target": "0",
            "met": _met(not unexplained),
        },
        {
            "section": "errors",
            "item": "wrong bytes completed",
            "value": wrong,
            "target": "0",
            "met": _met(wrong == 0),
        },
        {
            "section": "errors",
            "item": "tracebacks in MetaHub's log",
            "value": journal.hub_tracebacks,
            "target": "0",
            "met": _met(journal.hub_tracebacks == 0),
        },
    ]
    for outcome in unexplained[:50]:
        rows.append(
            {
                "section": "unexplained",
                "item": f"{outcome.started:.1f} s {outcome.method} {outcome.path[:70]}",
                "value": outcome.status,
                "unit": outcome.problem,
                "answer": outcome.answer,
                "kind": outcome.kind,
            }
        )
    return SuiteResult(
        title="Soak: mixed traffic through MetaHub while its upstream fails",
        columns=COLUMNS,
        rows=rows,
        parameters={
            "duration_s": duration,
            "warm_up_s": warm_up,
            "grace_s": GRACE,
            "requests": len(journal.outcomes),
            "metahub_workers": 1,
            "machine_types": [m["name"] for m in MACHINE_TYPES],
            "blob_sizes": list(BLOB_SIZES),
            "schedule": [
                {"offset_s": offset, "kind": kind, "lasts_s": lasts}
                for offset, kind, lasts in SCHEDULE
            ],
            "cycle_s": CYCLE,
        },
        notes=[
            f"{len(journal.outcomes)} requests in {duration:.0f} s; {len(journal.faults)} faults; "
            f"load average (1 min) {journal.rss[0][2]:.1f} at start, "
            f"{max(load for _, _, load in journal.rss):.1f} at most",
            "an error is explained when it overlaps a fault or the "
            f"{GRACE:g} s after it and is a 502/503/504 naming the upstream or a broken "
            "connection, or when the client hung up on purpose",
        ],
    )


def _met(ok: bool) -> str:
    return "yes" if ok else "NO"


COLUMNS = [
    Column("section", "Section"),
    Column("item", "What"),
    Column("value", "Value", ",g"),
    Column("unit", "Unit"),
    Column("target", "Target"),
    Column("met", "Met"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument(
        "--duration", type=float, default=FULL_DURATION, help=f"seconds ({FULL_DURATION:g})"
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="where JSON goes")
    args = parser.parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=140)
    with tempfile.TemporaryDirectory(prefix="metahub-soak-") as tmp:
        console.print(f"soaking for {args.duration:.0f} s")
        journal, warm_up = asyncio.run(soak(Path(tmp), args.duration))
    result = report(journal, warm_up, args.duration)
    host = machine()
    short = args.duration < FULL_DURATION  # a check that the soak works, not for citing
    console.print(table(result, host, quick=short))
    path = record(args.results, "soak", result, host, quick=short)
    console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
