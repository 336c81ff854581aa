"""Faults an outside review injected, replayed against a real ``matchsvc serve`` (issue 13, items 11-13).

The server runs on a PostgreSQL of the test's own, which the tests stop, restart and freeze
(SIGSTOP) while clients keep using the API; and slow clients try to hold connections open.
Timeouts are configured short so each fault fits in seconds; the assertions hold the server to
those configured bounds. The measured figures are printed (``pytest -s``).
"""

from __future__ import annotations

import http.client
import itertools
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from tests.support.accounts import PASSWORD
from tests.support.postgres import FaultyPostgres
from tests.support.serve import free_port, serving

pytestmark = pytest.mark.slow

DEADLINE, CONNECT, POOL = 1.5, 2, 1.0
READY_TIMEOUT = 1.0
HEADER_TIMEOUT, BODY_TIMEOUT, KEEPALIVE = 3.0, 3.0, 2
MAX_CONNECTIONS = 64
ENV = {
    "MATCHSVC_DB_CONNECT_TIMEOUT_SECONDS": str(CONNECT),
    "MATCHSVC_DB_STATEMENT_TIMEOUT_SECONDS": "1",
    "MATCHSVC_DB_LOCK_TIMEOUT_SECONDS": "0.5",
    "MATCHSVC_DB_POOL_TIMEOUT_SECONDS": str(POOL),
    "MATCHSVC_DB_DEADLINE_SECONDS": str(DEADLINE),
    "MATCHSVC_READY_TIMEOUT_SECONDS": str(READY_TIMEOUT),
    "MATCHSVC_HTTP_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
    "MATCHSVC_HTTP_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
    "MATCHSVC_HTTP_KEEPALIVE_SECONDS": str(KEEPALIVE),
    "MATCHSVC_HTTP_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    "MATCHSVC_MATCH_INTERVAL_SECONDS": "0",
    "MATCHSVC_RATE_LIMIT_PER_MINUTE": "1000000",
    "MATCHSVC_RATE_LIMIT_BURST": "1000000",
    "MATCHSVC_SHARED_POOL_SIZE": "50",
    "MATCHSVC_LOG_LEVEL": "WARNING",
}
#: Longest a request may take while the database is frozen: a pooled connection's wait, the
#: deadline of its ping and one reconnect attempt, plus scheduling slack on a shared machine.
FROZEN_BOUND = POOL + DEADLINE + CONNECT + 1.0
CLIENTS = 4
#: Clients that join during the freeze so that, with the raters, they hold all 40 worker threads.
CROWD = 36


@dataclass
class Stack:
    postgres: FaultyPostgres
    host: str
    port: int


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    postgres = FaultyPostgres()
    port = free_port()
    data_dir = tmp_path_factory.mktemp("faults")
    env = {**ENV, "DATABASE_URL": postgres.url, "MATCHSVC_DATA_DIR": str(data_dir)}
    try:
        # One worker: the connection cap and the in-flight limit are per process (README), and the
        # slow-client test counts connections against one process's cap.
        with serving(env, port, log=data_dir / "serve.log", args=("--workers", "1")):
            yield Stack(postgres=postgres, host="127.0.0.1", port=port)
    finally:
        postgres.close()


@dataclass
class Answer:
    started: float
    elapsed: float
    status: int | None
    content_type: str = ""
    retry_after: str | None = None
    body: bytes = b""
    #: The client's socket after the answer: the same object throughout means the connection lasted.
    socket_id: int | None = None
    closing: bool = False
    error: str | None = None


class ApiClient:
    """One mobile client on one keep-alive connection (``http.client``, so a reconnect is visible)."""

    def __init__(self, stack: Stack, *, timeout: float = 10.0) -> None:
        self.connection = http.client.HTTPConnection(stack.host, stack.port, timeout=timeout)
        self.headers: dict[str, str] = {}

    def request(self, method: str, path: str, body: dict[str, object] | None = None, **headers: str) -> Answer:
        payload = None if body is None else json.dumps(body).encode()
        sent = {**self.headers, **headers, **({"Content-Type": "application/json"} if payload else {})}
        started = time.monotonic()
        try:
            self.connection.request(method, path, body=payload, headers=sent)
            response = self.connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.connection.close()
            return Answer(started, time.monotonic() - started, None, error=f"{type(exc).__name__}: {exc}")
        return Answer(
            started,
            time.monotonic() - started,
            response.status,
            response.getheader("content-type", ""),
            response.getheader("retry-after"),
            data,
            id(self.connection.sock) if self.connection.sock is not None else None,
            response.will_close,
        )

    def json(self, method: str, path: str, body: dict[str, object] | None = None, **headers: str) -> object:
        answer = self.request(method, path, body, **headers)
        assert answer.status is not None and 200 <= answer.status < 300, answer
        return json.loads(answer.body)

    def login(self) -> None:
        username = f"fault_{uuid.uuid4().hex[:10]}"
        self.json("POST", "/v1/auth/register", {"username": username, "password": PASSWORD, "birth_year": 1990})
        self.connection.request(
            "POST",
            "/v1/auth/token",
            body=f"username={username}&password={PASSWORD}".replace(" ", "+").encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        response = self.connection.getresponse()
        assert response.status == 200
        self.headers = {"Authorization": f"Bearer {json.loads(response.read())['access_token']}"}

    def close(self) -> None:
        self.connection.close()


@dataclass
class Rater:
    """A client thread alternating ``GET /v1/me`` and ``POST /v1/ratings``, retrying a refused rating
    with the same Idempotency-Key, as a mobile app does."""

    client: ApiClient
    answers: list[Answer] = field(default_factory=list)
    acknowledged: set[str] = field(default_factory=set)
    faces: list[str] = field(default_factory=list)
    pending: tuple[str, str] | None = None  # (face id, idempotency key) of a rating not yet acknowledged

    def step(self) -> None:
        self.answers.append(self.client.request("GET", "/v1/me"))
        if self.pending is None:
            if not self.faces:
                answer = self.client.request("GET", "/v1/faces/next?n=20")
                self.answers.append(answer)
                if answer.status == 200:
                    self.faces = [face["id"] for face in json.loads(answer.body)["faces"]]
                return
            self.pending = (self.faces.pop(), uuid.uuid4().hex)
        face_id, key = self.pending
        answer = self.rate(face_id, key)
        self.answers.append(answer)
        if answer.status in (200, 201):
            self.acknowledged.add(face_id)
            self.pending = None

    def rate(self, face_id: str, key: str) -> Answer:
        return self.client.request("POST", "/v1/ratings", {"face_id": face_id, "liked": True}, **{"Idempotency-Key": key})

    def stored(self) -> list[str]:
        faces: list[str] = []
        cursor = ""
        while True:
            page = self.client.json("GET", f"/v1/me/ratings?limit=100{cursor}")
            faces += [item["face_id"] for item in page["items"]]  # type: ignore[index]
            if page["next_cursor"] is None:  # type: ignore[index]
                return faces
            cursor = f"&cursor={page['next_cursor']}"  # type: ignore[index]


def _run_load(raters: list[Rater], fault: Callable[[], dict[str, float]], *, pause: float = 0.1) -> dict[str, float]:
    """Raters run in threads while ``fault`` runs here; returns the fault's timestamps."""
    stop = threading.Event()

    def loop(rater: Rater) -> None:
        while not stop.is_set():
            rater.step()
            time.sleep(pause)

    for rater in raters:  # a fresh connection each: one idle since login may be past its keep-alive
        rater.client.close()
    threads = [threading.Thread(target=loop, args=(rater,), daemon=True) for rater in raters]
    for thread in threads:
        thread.start()
    try:
        return fault()
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)


def _raters(stack: Stack) -> list[Rater]:
    raters = []
    for _ in range(CLIENTS):
        client = ApiClient(stack)
        client.login()
        raters.append(Rater(client))
    return raters


def _is_unavailable(answer: Answer) -> bool:
    problem = json.loads(answer.body) if answer.content_type == "application/problem+json" else {}
    return answer.status == 503 and problem.get("status") == 503 and answer.retry_after is not None


def _check_answers(raters: list[Rater], *, bound: float) -> list[Answer]:
    """Every answer a success or a 503 problem+json with Retry-After within ``bound``, on the same connection."""
    answers = [answer for rater in raters for answer in rater.answers]
    assert not [a for a in answers if a.error], [a.error for a in answers if a.error][:5]
    odd = [a for a in answers if not (200 <= (a.status or 0) < 300 or _is_unavailable(a))]
    assert not odd, [(a.status, a.content_type, a.body[:200]) for a in odd[:5]]
    slow = [a for a in answers if a.elapsed > bound]
    assert not slow, [(a.status, round(a.elapsed, 2)) for a in slow[:5]]
    for rater in raters:
        assert len({a.socket_id for a in rater.answers}) == 1, "the server closed a client's connection"
        assert not any(a.closing for a in rater.answers)
    return answers


def _check_recovery(raters: list[Rater], since: float, *, within: float) -> float:
    """All requests started ``within`` seconds after ``since`` succeed; returns the first success's delay."""
    first = []
    for rater in raters:
        after = [a for a in rater.answers if a.started >= since]
        late = [a for a in after if a.started >= since + within]
        assert late, "the load did not run past the recovery window"
        failed = [(a.status, round(a.started - since, 2)) for a in late if not 200 <= (a.status or 0) < 300]
        assert not failed, failed[:5]
        first.append(min(a.started + a.elapsed for a in after if 200 <= (a.status or 0) < 300) - since)
    return max(first)


def _check_no_rating_lost(raters: list[Rater]) -> int:
    for rater in raters:
        if rater.pending is not None:  # finish the retry the client still owes, as the app would
            face_id, key = rater.pending
            assert rater.rate(face_id, key).status in (200, 201)
            rater.acknowledged.add(face_id)
        stored = rater.stored()
        assert len(stored) == len(set(stored)), "a rating was stored twice"
        assert rater.acknowledged <= set(stored), "an acknowledged rating was lost"
    return sum(len(rater.acknowledged) for rater in raters)


def _finish(raters: list[Rater], recovered_from: float) -> tuple[float, int]:
    """Recovery within 2 s of ``recovered_from`` and no acknowledged rating lost; closes the clients.

    Returns the recovery time and the number of acknowledged ratings."""
    recovery = _check_recovery(raters, recovered_from, within=2.0)
    acknowledged = _check_no_rating_lost(raters)
    for rater in raters:
        rater.client.close()
    return recovery, acknowledged


def test_database_stopped_under_load_answers_503_keeps_connections_and_recovers(stack: Stack) -> None:
    raters = _raters(stack)

    def outage() -> dict[str, float]:
        time.sleep(2)
        stopped = time.monotonic()
        stack.postgres.stop(mode="fast")
        time.sleep(15)
        stack.postgres.start()
        restarted = time.monotonic()
        time.sleep(4)
        return {"stopped": stopped, "restarted": restarted}

    marks = _run_load(raters, outage)
    answers = _check_answers(raters, bound=5.0)
    refused = [a for a in answers if a.status == 503]
    assert len(refused) > 10 and any(a.started < marks["stopped"] and a.status == 200 for a in answers)
    recovery, acknowledged = _finish(raters, marks["restarted"])
    print(
        f"\nstopped 15 s under load: {len(answers)} answers, {len(refused)} x 503 problem+json, other 5xx 0, "
        f"slowest 503 {max(a.elapsed for a in refused):.3f} s, slowest answer {max(a.elapsed for a in answers):.3f} s, "
        f"connections reopened 0, recovery {recovery:.3f} s after the restart, "
        f"{acknowledged} acknowledged ratings, 0 lost"
    )


def test_database_frozen_keeps_liveness_fast_and_answers_503_within_the_timeouts(stack: Stack) -> None:
    """While the database is frozen, a crowd of clients joins (with the raters, enough to take all 40
    of anyio's worker threads were each request to wait on the database), and ``/healthz`` must
    still answer at once.

    Its bound is the issue's 100 ms for 99 % of the probes; the slowest probe may take longer on a
    shared, overloaded test machine (up to 0.8 s seen at load average 15) but stays below the
    database deadline, which any answer waiting on the database or on the thread pool would exceed."""
    raters = _raters(stack)
    health = ApiClient(stack)
    probes: list[Answer] = []
    readiness: list[Answer] = []
    crowd = [ApiClient(stack) for _ in range(CROWD)]
    for member, rater in zip(crowd, itertools.cycle(raters)):
        member.headers = rater.client.headers
    crowded: list[Answer] = []

    def freeze() -> dict[str, float]:
        time.sleep(2)
        thawing = threading.Event()

        def push(member: ApiClient) -> None:
            while not thawing.is_set():
                answer = member.request("GET", "/v1/me")
                crowded.append(answer)
                time.sleep(float(answer.retry_after or 1))  # honours Retry-After (1 s, within the keep-alive)

        pushers = [threading.Thread(target=push, args=(member,), daemon=True) for member in crowd]
        with stack.postgres.frozen():
            frozen = time.monotonic()
            for pusher in pushers:
                pusher.start()
            while time.monotonic() < frozen + 20:
                probes.append(health.request("GET", "/healthz"))
                if len(probes) % 40 == 0:
                    readiness.append(health.request("GET", "/readyz"))
                time.sleep(0.05)
            thawing.set()
            for pusher in pushers:
                pusher.join(timeout=30)
        thawed = time.monotonic()
        time.sleep(4)
        return {"frozen": frozen, "thawed": thawed}

    marks = _run_load(raters, freeze)
    health.close()
    for member in crowd:
        member.close()
    answers = _check_answers(raters, bound=FROZEN_BOUND)
    during = [a for a in answers if marks["frozen"] <= a.started and a.started + a.elapsed <= marks["thawed"]]
    assert during and all(a.status == 503 for a in during)
    assert crowded and all(_is_unavailable(a) and a.elapsed <= FROZEN_BOUND for a in crowded), [
        (a.status, a.error, round(a.elapsed, 2)) for a in crowded if not _is_unavailable(a) or a.elapsed > FROZEN_BOUND
    ][:5]
    assert all(p.status == 200 for p in probes)
    latencies = sorted(p.elapsed for p in probes)
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    assert p99 < 0.1 and latencies[-1] < DEADLINE, f"/healthz p99 {p99:.3f} s, slowest {latencies[-1]:.3f} s"
    assert readiness and all(r.status == 503 and r.elapsed < READY_TIMEOUT + 1.0 for r in readiness)
    recovery, acknowledged = _finish(raters, marks["thawed"])
    print(
        f"\nfrozen 20 s under load ({CLIENTS} raters + {CROWD} crowding clients): /healthz {len(probes)} probes, "
        f"median {latencies[len(latencies) // 2] * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, slowest {latencies[-1] * 1000:.1f} ms; "
        f"/readyz 503 in <= {max(r.elapsed for r in readiness):.3f} s; {len(during) + len(crowded)} requests during the "
        f"freeze all 503, slowest {max(a.elapsed for a in during + crowded):.3f} s (bound {FROZEN_BOUND} s = pool {POOL} "
        f"+ deadline {DEADLINE} + connect {CONNECT} + 1 slack); recovery {recovery:.3f} s after SIGCONT; "
        f"{acknowledged} acknowledged ratings, 0 lost"
    )


@dataclass
class SlowClient:
    """Opens a connection and misbehaves; records when (and how) the server ended it."""

    stack: Stack
    kind: str  # "silent", "dribble" (head a few bytes at a time), "body" (head, then part of a body)
    opened: float = 0.0
    closed_after: float | None = None
    first_bytes: bytes = b""

    def run(self) -> None:
        with socket.create_connection((self.stack.host, self.stack.port)) as sock:
            self.opened = time.monotonic()
            sock.settimeout(0.25)
            head = b"POST /v1/auth/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            if self.kind == "body":
                sock.sendall(head + b"Content-Length: 100\r\n\r\n{\"user")
            pending = head if self.kind == "dribble" else b""
            while time.monotonic() < self.opened + 15:
                try:
                    if pending:
                        sock.sendall(pending[:3])
                        pending = pending[3:] or b"X-Slow: 1\r\n"
                    data = sock.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    data = b""
                self.first_bytes = self.first_bytes or data
                if not data:
                    self.closed_after = time.monotonic() - self.opened
                    return


def test_slow_and_silent_clients_are_cut_off(stack: Stack) -> None:
    clients = [SlowClient(stack, kind) for kind in ("silent", "dribble", "body") for _ in range(20)]
    threads = [threading.Thread(target=client.run, daemon=True) for client in clients]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    # Over the connection cap: closed on arrival, long before the header timeout.
    extra = [socket.create_connection((stack.host, stack.port)) for _ in range(10)]
    time.sleep(0.5)
    refused = 0
    for sock in extra:
        sock.setblocking(False)
        try:
            refused += sock.recv(1) == b""
        except BlockingIOError:
            pass
        sock.close()
    for thread in threads:
        thread.join(timeout=20)
    closed = [c.closed_after for c in clients]
    assert all(after is not None for after in closed), [c.kind for c in clients if c.closed_after is None]
    assert max(closed) < HEADER_TIMEOUT + 1.0, max(closed)  # type: ignore[type-var]
    assert refused >= 60 + 10 - MAX_CONNECTIONS
    for client in clients:
        if client.kind == "body":  # the head was complete: the body's deadline answers 408
            status_line, _, rest = client.first_bytes.partition(b"\r\n")
            assert status_line == b"HTTP/1.1 408 Request Timeout" and b"application/problem+json" in rest
    # An idle keep-alive connection closes after the keep-alive timeout, and the server still serves.
    client = ApiClient(stack)
    assert client.request("GET", "/healthz").status == 200
    sock = client.connection.sock
    sock.settimeout(KEEPALIVE + 1.0)
    idle = time.monotonic()
    assert sock.recv(1) == b""
    idle_closed = time.monotonic() - idle
    assert idle_closed < KEEPALIVE + 0.5
    client.close()
    print(
        f"\n60 slow clients (20 silent, 20 dribbling headers, 20 slow bodies): "
        f"all closed within {max(closed):.2f} s "  # type: ignore[type-var]
        f"(header timeout {HEADER_TIMEOUT} s), slow bodies answered 408; {refused} of 10 over the cap of "
        f"{MAX_CONNECTIONS} closed on arrival; idle keep-alive closed after {idle_closed:.2f} s"
    )

