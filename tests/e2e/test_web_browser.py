"""The web clients in a real headless Chromium against a real ``matchsvc serve`` (issue 18).

Every flow of the app runs once per viewport (a phone and a desktop), the console's once per
viewport too, against one server for the module. A test fails on any console error, page error,
failed request or HTTP error that it did not announce beforehand (``Guard.expecting``). Screenshots
of every screen land in ``test-artifacts/web/<viewport>/`` (git-ignored).

Chromium is Debian's ``chromium`` package driven by Playwright for Python; ``.ci/run`` installs it
when missing. Without it these tests fail, never skip.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from tests.support.accounts import PASSWORD
from tests.support.serve import free_port, matchsvc_command, serving

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "web"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Ratings before the matching job considers a user; kept small so candidates appear quickly.
MIN_RATINGS = 4
VIEWPORTS = {
    "phone": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 2},
    "desktop": {"viewport": {"width": 1280, "height": 900}},
}
#: Each viewport's people live in their own genders, so the two flows never meet in matching.
GENDERS = {"phone": ("woman", "man"), "desktop": ("nonbinary", "other")}
AUDITOR = "auditor_web"


@dataclass
class Server:
    base: str
    data_dir: Path


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    data_dir = Path("/tmp") / f"matchsvc-web-{uuid.uuid4().hex[:8]}"
    env = {
        "MATCHSVC_DATA_DIR": str(data_dir),
        "MATCHSVC_MATCH_INTERVAL_SECONDS": "2",
        "MATCHSVC_MATCH_MIN_RATINGS": str(MIN_RATINGS),
        "MATCHSVC_RATE_LIMIT_PER_MINUTE": "100000",
        "MATCHSVC_RATE_LIMIT_BURST": "100000",
    }
    try:
        matchsvc_command({**env, "MATCHSVC_NEW_PASSWORD": PASSWORD}, "users", "create", AUDITOR, "--scope", "auditor")
        # One worker: uvicorn's supervisor restarts a worker that misses its 5 s health check, which
        # a worker still importing torch on a loaded 2-core machine does, again and again.
        with serving(env, free_port(), args=("--workers", "1")) as base:
            yield Server(base=base, data_dir=data_dir)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install -y chromium; .ci/run does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright for Python is missing: pip install -e '.[dev]'")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class Guard:
    """Collects every console error, page error, failed request and HTTP error of a page;
    ``expecting`` announces the ones a step provokes on purpose (status or "failed", path)."""

    problems: list[str] = field(default_factory=list)
    allowed: list[tuple[int | str, str]] = field(default_factory=list)
    seen: set[tuple[int | str, str]] = field(default_factory=set)

    def _allows(self, kind: int | str | None, url: str) -> bool:
        """Whether an announced allowance covers this event; ``kind`` None: a console report of any."""
        path = urlparse(url).path
        for allowance in self.allowed:
            if kind in (allowance[0], None) and re.fullmatch(allowance[1], path):
                self.seen.add(allowance)
                return True
        return False

    def attach(self, page: Any) -> None:
        def console(message: Any) -> None:
            if message.type != "error":
                return
            url = message.location.get("url", "")
            if message.text.startswith("Failed to load resource") and self._allows(None, url):
                return
            self.problems.append(f"console error: {message.text} ({url})")

        page.on("console", console)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on(
            "requestfailed",
            lambda request: None
            if self._allows("failed", request.url)
            else self.problems.append(f"request failed: {request.method} {request.url} {request.failure}"),
        )
        page.on(
            "response",
            lambda response: None
            if response.status < 400 or self._allows(response.status, response.url)
            else self.problems.append(f"HTTP {response.status}: {response.request.method} {response.url}"),
        )

    @contextmanager
    def expecting(self, page: Any, kind: int | str, path: str, *, required: bool = True) -> Iterator[None]:
        """Allow ``kind`` on ``path`` (a regex) during the block; ``required``: it must happen."""
        allowance = (kind, path)
        self.allowed.append(allowance)
        try:
            yield
            page.wait_for_timeout(300)  # let the browser report what the step caused
        finally:
            self.allowed.remove(allowance)
        assert allowance in self.seen or not required, f"expected {kind} on {path}, which never happened"

    def check(self) -> None:
        assert not self.problems, "\n".join(self.problems)


@dataclass
class Screens:
    folder: Path
    count: int = 0

    def shot(self, page: Any, name: str) -> None:
        self.count += 1
        self.folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(self.folder / f"{self.count:02d}-{name}.png"), full_page=True)


@contextmanager
def open_page(browser: Any, viewport: str, name: str) -> Iterator[tuple[Any, Any, Guard, Screens]]:
    context = browser.new_context(**VIEWPORTS[viewport], accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(60_000)
    guard = Guard()
    guard.attach(page)
    screens = Screens(ARTIFACTS / viewport / name)
    try:
        yield context, page, guard, screens
        guard.check()
    except BaseException:
        screens.shot(page, "failure")
        print("\n".join(guard.problems))
        raise
    finally:
        context.close()


def _eventually(condition: Callable[[], Any], *, timeout: float = 60, what: str, page: Any = None) -> Any:
    """Poll ``condition``; with a ``page``, wait through Playwright so its event handlers keep running."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        if page is None:
            time.sleep(0.5)
        else:
            page.wait_for_timeout(500)


class Person:
    """A user driven over HTTP alone, as another phone would."""

    def __init__(self, base: str, name: str, *, existing: bool = False) -> None:
        self.http = httpx.Client(base_url=base, timeout=120)  # the shared test machines can be very slow
        self.name = name
        if not existing:
            response = self.http.post(
                "/v1/auth/register", json={"username": name, "password": PASSWORD, "birth_year": 1990}
            )
            assert response.status_code == 201, response.text
        self.sign_in()
        self.id = self.get("/v1/me")["id"]

    def sign_in(self) -> None:
        token = self.http.post("/v1/auth/token", data={"username": self.name, "password": PASSWORD})
        assert token.status_code == 200, token.text
        self.http.headers["Authorization"] = f"Bearer {token.json()['access_token']}"

    def get(self, path: str, **params: Any) -> Any:
        response = self.http.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    def become_matchable(self, *, gender: str, seeks: str) -> None:
        faces = self.get("/v1/faces/next", n=MIN_RATINGS)["faces"]
        for index, face in enumerate(faces):
            rated = self.http.post(
                "/v1/ratings",
                json={"face_id": face["id"], "liked": index % 2 == 0},
                headers={"Idempotency-Key": uuid.uuid4().hex},
            )
            assert rated.status_code == 201, rated.text
        space = self.get("/v1/me/appearance/space")
        draw = random.Random(self.name)  # a look of one's own, inside the box of valid adult looks
        look = [min(high, max(low, draw.gauss(0, 1))) for low, high in zip(space["lower"], space["upper"], strict=True)]
        assert self.http.put("/v1/me/appearance", json={"latent": look}).status_code == 204
        profile = {"gender": gender, "seeks": [seeks], "age_min": 18, "age_max": 99}
        assert self.http.put("/v1/me/profile", json=profile).status_code == 200

    def like_when_suggested(self, other_id: str) -> None:
        _eventually(
            lambda: other_id in {item["user_id"] for item in self.get("/v1/candidates", limit=100)["items"]},
            what=f"{self.name} to be shown {other_id}",
        )
        response = self.http.post(f"/v1/candidates/{other_id}/like")
        assert response.status_code == 200 and response.json()["matched"] is False, response.text


def _status(page: Any, text: str) -> None:
    page.locator("#status").filter(has_text=text).wait_for()


def _type_and_submit(page: Any, fields: dict[str, str]) -> None:
    """Keyboard only: focus the first field, type, Tab to the next, Enter submits."""
    selectors = list(fields)
    page.focus(selectors[0])
    for index, selector in enumerate(selectors):
        if index:
            while page.evaluate("document.activeElement.id") != selector.lstrip("#"):
                page.keyboard.press("Tab")
        page.keyboard.type(fields[selector])
    page.keyboard.press("Enter")


def _swipe(context: Any, page: Any, *, touch: bool, dx: float) -> None:
    """Drag the face card sideways: a finger on the phone (real touch events), the mouse elsewhere."""
    box = page.locator("#face-card").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    if not touch:
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x + dx, y, steps=8)
        page.mouse.up()
        return
    cdp = context.new_cdp_session(page)
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x, "y": y}]})
    for step in range(1, 9):
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x + dx * step / 8, "y": y}]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    cdp.detach()


def _rated_bodies(page: Any) -> list[dict[str, Any]]:
    bodies: list[dict[str, Any]] = []

    def record(request: Any) -> None:
        path = urlparse(request.url).path
        if request.method == "POST" and path == "/v1/ratings":
            bodies.append(json.loads(request.post_data))
        elif request.method == "POST" and path == "/v1/ratings/batch":
            bodies.extend(json.loads(request.post_data)["items"])

    page.on("request", record)
    return bodies


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_app_end_to_end(server: Server, browser: Any, viewport: str) -> None:
    own_gender, partner_gender = GENDERS[viewport]
    name = f"rater_{viewport}_{uuid.uuid4().hex[:6]}"
    with open_page(browser, viewport, "app") as (context, page, guard, screens):
        sent = _rated_bodies(page)
        page.goto(server.base + "/app")
        assert page.url == server.base + "/app/"
        page.locator("#view-signin").wait_for()
        screens.shot(page, "sign-in")

        # Sign up: a minor is refused with the API's own words, then an adult account is made.
        with guard.expecting(page, 422, "/v1/auth/register"):
            _type_and_submit(
                page, {"#signup-username": name, "#signup-password": PASSWORD, "#signup-birth-year": "2015"}
            )
            page.locator("#signup-error").filter(has_text="at least 18").wait_for()
        screens.shot(page, "sign-up-minor-refused")
        page.fill("#signup-birth-year", "1990")
        page.click("#signup-form button[type=submit]")
        page.locator("#view-rate").wait_for()
        page.locator("#face[src^='blob:']").wait_for()
        sentence = page.inner_text("#privacy-sentence")
        assert "randomiz" in sentence
        page.locator("#privacy-spent").filter(has_text="Privacy spent").wait_for()
        screens.shot(page, "rate")

        # Rate: the arrow keys, a button reached by Tab, a swipe.
        first = page.get_attribute("#face", "src")
        page.keyboard.press("ArrowRight")
        _status(page, "Liked.")
        assert page.get_attribute("#face", "src") != first
        page.focus("#pass")
        page.keyboard.press("Space")
        _status(page, "Passed.")
        _swipe(context, page, touch=viewport == "phone", dx=-160 if viewport == "phone" else 160)
        _status(page, "Passed." if viewport == "phone" else "Liked.")
        page.locator("#queue-state").filter(has_text="All your ratings are sent").wait_for()
        page.wait_for_load_state("networkidle")

        # Offline: keep rating from the preloaded faces; the queue is kept on the phone.
        # A request still in flight when the network goes is cut: that is what going offline means.
        with guard.expecting(page, "failed", r"/v1/.*", required=False):
            context.set_offline(True)
            for key in ("ArrowLeft", "ArrowRight", "ArrowLeft"):
                page.keyboard.press(key)
            page.locator("#queue-state").filter(has_text="3 ratings waiting").wait_for()
        stored = page.evaluate("Object.keys(localStorage).filter(k => k.startsWith('matchsvc.app.queue.'))")
        queue = json.loads(page.evaluate(f"localStorage.getItem('{stored[0]}')"))
        assert len(queue["pending"]) + len((queue["inflight"] or {}).get("items", [])) == 3
        screens.shot(page, "rate-offline")

        # Back online, the first upload's answer is lost on the way back (the server did store it):
        # the retry carries the same Idempotency-Key, so nothing is counted twice.
        attempts: list[str] = []

        def lose_first_answer(route: Any) -> None:
            attempts.append(route.request.headers.get("idempotency-key", ""))
            if len(attempts) == 1:
                route.fetch()
                route.abort()
            else:
                route.continue_()

        page.route(re.compile(r".*/v1/ratings(/batch)?$"), lose_first_answer)
        with guard.expecting(page, "failed", r"/v1/ratings(/batch)?"):
            context.set_offline(False)
            _eventually(lambda: attempts, what="the queued ratings to be sent", page=page)
        page.keyboard.press("ArrowRight")  # one more rating flushes the queue again
        page.locator("#queue-state").filter(has_text="All your ratings are sent").wait_for()
        assert attempts[0] in attempts[1:], "the retry must reuse the lost request's Idempotency-Key"
        page.unroute(re.compile(r".*/v1/ratings(/batch)?$"))

        me = Person(server.base, name, existing=True)
        ratings = me.get("/v1/me/ratings", limit=100)["items"]
        assert len(ratings) == 7 and len({r["face_id"] for r in ratings}) == 7
        assert me.get("/v1/me/privacy")["spends"] == 7, "a replayed rating must not spend budget twice"
        privacy = me.get("/v1/me/privacy")
        if privacy.get("on_device_epsilon_min") is not None:
            assert all("randomized_like" in body and "liked" not in body for body in sent), sent
        else:
            assert all(set(body) == {"face_id", "liked"} for body in sent), sent

        # What you like: the profile, and ideal faces at a score chosen with the slider's keys.
        page.click("a[href='#likes']")
        page.locator("#profile-summary").filter(has_text="Based on 7 ratings").wait_for()
        summary = page.inner_text("#profile-summary")
        assert "How sure the model is" in summary and "null" not in summary and "undefined" not in summary
        page.focus("#score")
        for _ in range(4):
            page.keyboard.press("ArrowLeft")
        assert page.inner_text("#score-value") == "0.70"
        page.click("#show-ideal")
        page.locator("#ideal-faces img").nth(7).wait_for()
        assert "0.70" in page.inner_text("#status")
        screens.shot(page, "what-you-like")

        # How you look: four rounds of picking, by click and by keyboard, then save.
        with guard.expecting(page, 404, "/v1/me/avatar"):
            page.click("a[href='#look']")
            page.locator("#look-start").wait_for()
        page.click("#look-start")
        for round_number in range(1, 5):
            page.locator("#look-round").filter(has_text=f"Round {round_number} of 4").wait_for()
            page.locator(".look-choice img").nth(3).wait_for()
            if round_number == 2:
                screens.shot(page, "how-you-look-round")
            if round_number % 2:
                page.locator(".look-choice").nth(1).click()
            else:
                page.locator(".look-choice").nth(2).focus()
                page.keyboard.press("Enter")
        page.locator("#look-save:not([hidden])").click()
        page.locator("#avatar img").wait_for()
        _status(page, "appearance is saved")
        screens.shot(page, "how-you-look-saved")

        # People: filters, then partners who liked this rater; like (a match), pass, block, unmatch.
        with guard.expecting(page, 404, "/v1/me/profile"):
            page.click("a[href='#people']")
            page.locator("#candidates li").first.wait_for()
        page.select_option("#gender", own_gender)
        page.check(f"#seeks-{partner_gender}")
        page.fill("#age-min", "18")
        page.fill("#age-max", "99")
        page.click("#filters-form button[type=submit]")
        _status(page, "Profile saved")
        own_id = me.id
        partners = [Person(server.base, f"partner_{viewport}_{k}_{uuid.uuid4().hex[:4]}") for k in range(3)]
        for partner in partners:
            partner.become_matchable(gender=partner_gender, seeks=own_gender)
        for partner in partners:
            partner.like_when_suggested(own_id)

        def three_suggestions() -> bool:
            page.click("#refresh-people")
            page.wait_for_timeout(500)
            return page.locator("#candidates li.card").count() == 3

        # A list and the avatars it names are separate requests, and a pair can stop holding in
        # between (a like that became a match, the other side's pass: lists obey the current state,
        # D26), so a suggestion's avatar may answer 404 while the list is redrawn.
        with guard.expecting(page, 404, r"/v1/candidates/[^/]+/avatar", required=False):
            _eventually(three_suggestions, what="three suggestions in the app", page=page)
            page.locator("#candidates li.card img").nth(2).wait_for()
            screens.shot(page, "people")
            page.click("button[aria-label='Like suggestion 1']")
            _status(page, "It's a match!")
            page.locator("#matches li.card").first.wait_for()
            page.click("button[aria-label='Pass on suggestion 1']")
            _status(page, "Passed.")
            page.click("button[aria-label='Block suggestion 1']")
            _status(page, "Blocked")
            page.locator("#candidates").filter(has_text="No suggestions yet").wait_for()
        screens.shot(page, "matches")
        page.click("button[aria-label='Unmatch match 1']")
        _status(page, "Unmatched.")
        page.locator("#matches").filter(has_text="No matches yet").wait_for()
        assert me.get("/v1/matches")["items"] == []

        # Stay signed in across a reload (refresh tokens), or sign in again where the server has none.
        page.reload()
        page.locator("#nav").wait_for()
        assert page.is_hidden("#view-signin")

        # Your data: privacy report, export download, sign out, sign in, delete after confirmation.
        page.click("a[href='#data']")
        page.locator("#privacy-report").filter(has_text="Privacy spent").wait_for()
        # Another device's session (the HTTP client's) is listed and can be signed out from here.
        page.locator("#sessions li").filter(has_text="(this device)").wait_for()
        other = page.locator("#sessions button").first
        other.wait_for()
        screens.shot(page, "your-data")
        before = page.locator("#sessions li").count()
        other.click()
        _status(page, "is signed out")
        assert page.locator("#sessions li").count() == before - 1
        with page.expect_download() as download:
            page.click("#export")
        exported = json.loads(Path(download.value.path()).read_text())
        assert exported["user_id"] == own_id and download.value.suggested_filename.endswith(".json")
        page.click("#signout")
        page.locator("#view-signin").wait_for()
        assert page.evaluate("localStorage.getItem('matchsvc.app.refresh')") is None
        _type_and_submit(page, {"#signin-username": name, "#signin-password": PASSWORD})
        page.locator("#nav").wait_for()
        page.click("a[href='#data']")
        page.click("#delete")
        page.locator("#delete-error").filter(has_text="Tick the box").wait_for()
        page.check("#delete-confirm")
        page.click("#delete")
        page.locator("#view-signin").wait_for()
        _status(page, "deleted")
        screens.shot(page, "deleted")
        with guard.expecting(page, 401, "/v1/auth/token"):
            _type_and_submit(page, {"#signin-username": name, "#signin-password": PASSWORD})
            page.locator("#signin-error").filter(has_text="incorrect username or password").wait_for()


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_console_end_to_end(server: Server, browser: Any, viewport: str) -> None:
    subject = Person(server.base, f"subject_{viewport}_{uuid.uuid4().hex[:6]}")
    subject.become_matchable(gender="other", seeks="other")
    for _ in range(10):  # enough audit entries for a second page, whichever tests ran before
        subject.sign_in()
    with open_page(browser, viewport, "console") as (_, page, guard, screens):
        page.goto(server.base + "/console")
        page.locator("#view-signin").wait_for()
        screens.shot(page, "sign-in")
        _type_and_submit(page, {"#signin-username": AUDITOR, "#signin-password": PASSWORD})

        # Audit log: entries, a filter, paging, chain verification.
        page.locator("#log-table tbody tr").first.wait_for()
        page.select_option("#filter-limit", "10")
        page.click("#log-filters button[type=submit]")
        _status(page, "Filters applied.")
        first_page = page.locator("#log-table tbody tr td:first-child").all_inner_texts()
        assert len(first_page) == 10  # logins of the people above and the auditor's own reads
        page.click("#log-next")
        page.locator("#log-page").filter(has_text="Page 2").wait_for()
        second_page = page.locator("#log-table tbody tr td:first-child").all_inner_texts()
        assert second_page and min(map(int, second_page)) > max(map(int, first_page))
        page.click("#log-first")
        page.locator("#log-page").filter(has_text="Page 1").wait_for()
        page.select_option("#filter-action", "login")
        page.click("#log-filters button[type=submit]")
        page.locator("#log-page").filter(has_text="Page 1").wait_for()
        _eventually(
            lambda: set(page.locator("#log-table tbody tr td:nth-child(3)").all_inner_texts()) == {"login"},
            what="only logins in the filtered log",
            page=page,
        )
        page.click("#verify")
        page.locator("#verify-result").filter(has_text="Chain intact").wait_for()
        screens.shot(page, "audit-log")

        # Privacy budget: the histogram of users' worst-case epsilon and the population section.
        page.click("a[href='#budget']")
        page.locator("#histogram svg").wait_for()
        counts = page.locator("#histogram tbody td:nth-child(2)").all_inner_texts()
        assert sum(map(int, counts)) >= 1
        page.locator("#population").filter(has_text="Population model releases").wait_for()
        screens.shot(page, "privacy-budget")

        # A user: export as a download, delete after confirmation, and the deletion proof.
        page.click("a[href='#users']")
        page.fill("#user-id", subject.id)
        with page.expect_download() as download:
            page.click("#export-user")
        exported = json.loads(Path(download.value.path()).read_text())
        assert exported["user_id"] == subject.id
        page.click("#delete-user")
        page.locator("#user-error").filter(has_text="Tick the box").wait_for()
        page.check("#delete-confirm")
        page.click("#delete-user")
        page.locator("#proof").filter(has_text="Clean: no row in any table references").wait_for()
        _status(page, "User deleted")
        screens.shot(page, "user-deleted")
