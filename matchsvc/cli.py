"""The ``matchsvc`` command line: serve, migrate, manage accounts, run jobs and benchmarks."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from matchsvc.logging import configure_logging
from matchsvc.security import Scope
from matchsvc.settings import Settings

if TYPE_CHECKING:
    from matchsvc.runtime import Runtime

__all__ = ["app"]

app = typer.Typer(help="Privacy-first preference matching service.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
users_app = typer.Typer(help="Accounts (auditors and admins are created here, never over the API).", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks (JSON on stdout).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(users_app, name="users")
app.add_typer(bench_app, name="bench")


@contextmanager
def _runtime() -> Iterator[Runtime]:
    """Settings from the environment, JSON logs, a connected and migrated runtime; closed on exit."""
    from matchsvc.runtime import Runtime  # imports torch and the generators: not needed for --help

    settings = Settings()
    configure_logging(settings.log_level)
    runtime = Runtime.start(settings)
    try:
        yield runtime
    finally:
        runtime.close()


def _flatten(value: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(value, dict):
        for key in sorted(value):
            yield from _flatten(value[key], f"{prefix}{key}.")
    else:
        yield f"{prefix.rstrip('.')} = {value}"


def _emit(result: dict[str, Any], *, as_json: bool = True) -> None:
    """JSON for machines (``--json``), ``dotted.key = value`` lines for people."""
    typer.echo(json.dumps(result, indent=2, sort_keys=True) if as_json else "\n".join(_flatten(result)))


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Worker processes (default: the cores available to this process)")
    ] = None,
) -> None:
    """Start the API (embedded PostgreSQL when DATABASE_URL is unset; migrations run on start).

    This process prepares what the workers share, once: the database (the embedded one is started
    here and lives as long as this process), the migrations, the generated development secret and
    key ring, the shared face pool. The workers then get ``DATABASE_URL`` and find the rest done.
    """
    import numpy as np
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from matchsvc.server import server_config, shared_metrics
    from matchsvc.services.faces import ensure_shared_pool

    with _runtime() as runtime:
        with runtime.sessions() as session:
            ensure_shared_pool(
                session, space=runtime.latent_space, size=runtime.settings.shared_pool_size, rng=np.random.default_rng()
            )
        os.environ["DATABASE_URL"] = runtime.engine.url.render_as_string(hide_password=False)
        runtime.engine.dispose()
        config = server_config(
            runtime.settings, host=host, port=port, workers=workers or len(os.sched_getaffinity(0))
        )
        if config.workers > 1:
            with shared_metrics(config.workers):
                Multiprocess(config, sockets=[config.bind_socket()]).run()
        else:
            server = uvicorn.Server(config)
            server.run()
            if not server.started:  # the app or the socket failed at start-up (logged); uvicorn's exit code
                raise typer.Exit(code=3)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply migrations up to head (the only way the schema changes)."""
    with _runtime():  # starting a runtime upgrades the schema
        typer.echo("database schema is at head")


@users_app.command("create")
def users_create(
    username: Annotated[str, typer.Argument(help="Login name")],
    scope: Annotated[list[Scope], typer.Option(help="Scopes to grant (repeatable)")] = [Scope.auditor],  # noqa: B006
    birth_year: Annotated[int, typer.Option(help="Birth year (accounts must be adults)")] = 1980,
    password: Annotated[
        str,
        typer.Option(prompt=True, hide_input=True, confirmation_prompt=True, envvar="MATCHSVC_NEW_PASSWORD"),
    ] = "",
) -> None:
    """Create an account with the given scopes, e.g. an auditor: ``matchsvc users create alice --scope auditor``."""
    from matchsvc.errors import MatchsvcError
    from matchsvc.services import auth as auth_service

    with _runtime() as runtime, runtime.sessions() as session:
        try:
            user = auth_service.register(
                session, keys=runtime.keys, username=username, password=password, birth_year=birth_year, scopes=frozenset(scope)
            )
        except MatchsvcError as exc:
            raise typer.BadParameter(exc.detail) from None
        _emit({"id": str(user.id), "username": user.username, "scopes": user.scopes})


@bench_app.command("render")
def bench_render(
    as_json: Annotated[bool, typer.Option("--json", help="Emit JSON")] = False,
    faces: Annotated[int, typer.Option(min=5, help="Faces to time per backend")] = 50,
) -> None:
    """Milliseconds per rendered face (render + PNG) for each generator backend."""
    from benchmarks.render import run_render_benchmark

    _emit(run_render_benchmark(faces=faces), as_json=as_json)


@bench_app.command("matching")
def bench_matching(
    as_json: Annotated[bool, typer.Option("--json", help="Emit JSON")] = False,
    sizes: Annotated[str, typer.Option(help="Comma-separated user counts")] = "10000,50000,100000",
    k: Annotated[int, typer.Option(min=1, max=200, help="Candidates per user")] = 20,
    ray: Annotated[bool, typer.Option(help="Also run the Ray backend on a local runtime")] = True,
    workers: Annotated[int, typer.Option(min=1, help="Ray workers (CPUs)")] = 2,
) -> None:
    """The matching job end to end on synthetic sealed users: read+decrypt, score, write, memory."""
    from benchmarks.matching import run_matching_benchmark

    try:
        counts = tuple(int(size) for size in sizes.split(","))
    except ValueError:
        raise typer.BadParameter(f"sizes must be comma-separated integers, got {sizes!r}") from None
    _emit(run_matching_benchmark(sizes=counts, k=k, ray=ray, workers=workers), as_json=as_json)


@bench_app.command("scoring")
def bench_scoring(
    as_json: Annotated[bool, typer.Option("--json", help="Emit JSON")] = False,
    sizes: Annotated[str, typer.Option(help="Comma-separated user counts")] = "10000,50000,100000",
    k: Annotated[int, typer.Option(min=1, help="Candidates per user")] = 20,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda when available)")] = None,
    repeats: Annotated[int, typer.Option(min=1, help="Timed repetitions per case (median reported)")] = 3,
    threads: Annotated[int, typer.Option(min=1, help="CPU threads per method; a threads row adds every core given")] = 1,
) -> None:
    """reciprocal_topk against a blocked GEMM floor, FAISS exact search and a dense reference, at d = latent dim and 128."""
    from engine.latent import create_latent_space
    from benchmarks.scoring import run_scoring_benchmark

    try:
        counts = tuple(int(size) for size in sizes.split(","))
    except ValueError:
        raise typer.BadParameter(f"sizes must be comma-separated integers, got {sizes!r}") from None
    dims = (create_latent_space("procedural").dim, 128)
    result = run_scoring_benchmark(sizes=counts, dims=dims, k=k, device=device, repeats=repeats, threads=threads)
    _emit(result, as_json=as_json)


@bench_app.command("api")
def bench_api(
    as_json: Annotated[bool, typer.Option("--json", help="Emit JSON")] = False,
    requests: Annotated[int, typer.Option(min=100, help="Rating requests per server")] = 2000,
    threads: Annotated[int, typer.Option(min=1, help="Concurrent client threads")] = 8,
) -> None:
    """Requests/s of POST /v1/ratings against a bare FastAPI + psycopg insert, measured in one run."""
    from benchmarks.api import run_api_benchmark

    _emit(run_api_benchmark(requests=requests, threads=threads), as_json=as_json)


@bench_app.command("load")
def bench_load(
    as_json: Annotated[bool, typer.Option("--json", help="Emit JSON")] = False,
    out: Annotated[str | None, typer.Option("--out", help="Directory for load_benchmark.png and .json")] = None,
    clients: Annotated[int, typer.Option(min=1, help="Simulated mobile clients")] = 8,
    seconds: Annotated[float, typer.Option(min=1, help="Duration of the load phase")] = 60.0,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes of both servers")] = 2,
    history: Annotated[int, typer.Option(min=100, help="Ratings one user sends in a row")] = 2000,
    ratio_requests: Annotated[int, typer.Option(min=100, help="Requests per server for the ratio")] = 2000,
) -> None:
    """N mobile clients against `matchsvc serve --workers 2`: throughput, latency, lost/duplicated, vs a bare insert."""
    from pathlib import Path

    from benchmarks.load import run_load_benchmark

    result = run_load_benchmark(
        clients=clients, seconds=seconds, workers=workers, history=history, ratio_requests=ratio_requests,
        out_dir=None if out is None else Path(out), progress=True,
    )
    for part in ("load", "history"):
        result[part].pop("series")  # the raw points are in the --out JSON and the plots
    _emit(result, as_json=as_json)


@bench_app.command("privacy")
def bench_privacy(
    as_json: Annotated[bool, typer.Option("--json", help="Emit JSON")] = False,
    out: Annotated[str | None, typer.Option("--out", help="Directory for privacy_benchmark.png and .json")] = None,
    users: Annotated[int | None, typer.Option(min=2, help="Synthetic users (default 200, 20 with --quick)")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Smoke run: n in {10, 50}, epsilon in {1, inf}")] = False,
) -> None:
    """Accuracy of private preference learning vs LinearSVC, Opacus DP-SGD and diffprivlib (progress on stderr)."""
    from benchmarks.privacy import QUICK, run_privacy_benchmark

    grid: dict[str, Any] = {"ratings": QUICK["ratings"], "epsilons": QUICK["epsilons"]} if quick else {}
    count = users if users is not None else (QUICK["users"] if quick else 200)
    out_dir = None if out is None else Path(out)
    _emit(run_privacy_benchmark(users=count, out_dir=out_dir, progress=True, **grid), as_json=as_json)


@bench_app.command("coldstart")
def bench_coldstart(
    as_json: Annotated[bool, typer.Option("--json", help="Emit JSON")] = False,
    out: Annotated[str | None, typer.Option("--out", help="Directory for coldstart_benchmark.png and .json")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Smoke run: 20 new users, n up to 20, epsilon 1 and inf")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the population, users, answers and releases")] = 0,
) -> None:
    """Accuracy of a new user's model from 0-50 private ratings: population prior, per-user, posterior (progress on stderr)."""
    from benchmarks.coldstart import QUICK, run_coldstart_benchmark

    grid: dict[str, Any] = dict(QUICK) if quick else {}
    out_dir = None if out is None else Path(out)
    _emit(run_coldstart_benchmark(seed=seed, out_dir=out_dir, progress=True, **grid), as_json=as_json)


keys_app = typer.Typer(help="Encryption keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("init")
def keys_init(
    path: Annotated[Path, typer.Argument(help="Where to create the ring (the MATCHSVC_KEYRING_FILE of production)")],
    exist_ok: Annotated[
        bool, typer.Option("--exist-ok", help="Succeed without change when a ring is already there")
    ] = False,
) -> None:
    """Create a new key ring file (mode 0600) for production; never overwrites one (its loss loses all data)."""
    from matchsvc.keys import KeyRingStore

    if path.exists() and exist_ok:
        typer.echo(f"key ring kept at {path}")
        return
    try:
        KeyRingStore.create(path)
    except FileExistsError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from None
    typer.echo(f"key ring created at {path}")


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Add a key-ring version and re-wrap every user's data key under it (safe while serving)."""
    from matchsvc.services.keys import rotate_keys

    with _runtime() as runtime:
        report = rotate_keys(runtime.sessions, keys=runtime.keys)
        _emit({"kek_version": report.kek_version, "rewrapped": report.rewrapped})


match_app = typer.Typer(help="Matching.", no_args_is_help=True)
app.add_typer(match_app, name="match")


@match_app.command("run")
def match_run(
    k: Annotated[int | None, typer.Option(min=1, max=200, help="Candidates kept per user (default MATCHSVC_MATCH_K)")] = None,
    min_ratings: Annotated[
        int | None, typer.Option(min=1, help="Ratings a user needs before being matched (default MATCHSVC_MATCH_MIN_RATINGS)")
    ] = None,
    backend: Annotated[str, typer.Option(help="local (torch, CUDA when present) or ray")] = "local",
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda when available)")] = None,
    full: Annotated[
        bool, typer.Option("--full", help="Recompute every list now (default: full every MATCHSVC_MATCH_FULL_EVERY runs)")
    ] = False,
) -> None:
    """Score eligible pairs both ways and store each user's reciprocal top-k candidates.

    Runs between full ones refresh only the users changed since the last run (decision D27).
    """
    from matchsvc.jobs.matching import run_matching

    if backend not in ("local", "ray"):
        raise typer.BadParameter(f"backend must be 'local' or 'ray', got {backend!r}")
    with _runtime() as runtime:
        settings = runtime.settings
        report = run_matching(
            runtime.sessions,
            keys=runtime.keys,
            k=settings.match_k if k is None else k,
            min_ratings=settings.match_min_ratings if min_ratings is None else min_ratings,
            full_every=1 if full else settings.match_full_every,
            backend=backend,
            device=device,
            progress=True,
        )
    typer.echo(report.summary())


population_app = typer.Typer(help="The population model (user-level differential privacy).", no_args_is_help=True)
app.add_typer(population_app, name="population")


@population_app.command("fit")
def population_fit(
    epsilon: Annotated[float | None, typer.Option(help="Its epsilon (default MATCHSVC_POPULATION_EPSILON)")] = None,
    delta: Annotated[float | None, typer.Option(help="Its delta (default MATCHSVC_POPULATION_DELTA)")] = None,
    personas: Annotated[int | None, typer.Option(help="Personas (default MATCHSVC_POPULATION_PERSONAS)")] = None,
    rank: Annotated[int | None, typer.Option(help="Covariance rank (default MATCHSVC_POPULATION_RANK)")] = None,
    steps: Annotated[int | None, typer.Option(help="DP-SGD steps (default: the engine's)")] = None,
) -> None:
    """Fit and store the next population release from every user's private labels.

    Exits 1 with the reason, having trained nothing, when the release would take the composed
    epsilon of all releases past MATCHSVC_POPULATION_EPSILON_CAP or too few users have ratings.
    """
    import numpy as np

    from matchsvc.errors import MatchsvcError
    from matchsvc.services.population import PopulationPolicy, fit_release

    chosen = {"epsilon": epsilon, "delta": delta, "n_personas": personas, "rank": rank, "steps": steps}
    with _runtime() as runtime:
        try:
            policy = dataclasses.replace(
                PopulationPolicy.from_settings(runtime.settings),
                **{name: value for name, value in chosen.items() if value is not None},
            )
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        with runtime.sessions() as session:
            try:
                report = fit_release(session, keys=runtime.keys, policy=policy, rng=np.random.default_rng())
            except MatchsvcError as exc:
                typer.echo(f"population fit refused: {exc.detail}", err=True)
                raise typer.Exit(code=1) from None
    typer.echo(report.summary())


audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(
    as_json: Annotated[bool, typer.Option("--json", help="Emit JSON")] = False,
    anchor: Annotated[
        str | None, typer.Option(help="head_hash (hex) from an earlier check: also detects entries cut off the end")
    ] = None,
) -> None:
    """Recompute the audit log's hash chain; exit 1 and name the first bad entry when it is broken.

    Read-only: unlike the API, it appends nothing, so it can check a restored backup or a replica.
    """
    from matchsvc.services.audit import verify

    if anchor is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", anchor):
        raise typer.BadParameter(f"must be a SHA-256 hash in hex (64 characters), got {anchor!r}", param_hint="--anchor")
    expected = bytes.fromhex(anchor) if anchor is not None else None
    with _runtime() as runtime, runtime.sessions() as session:
        result = verify(session, anchor=expected)
    _emit(dataclasses.asdict(result), as_json=as_json)
    if not result.ok:
        where = f"at entry {result.first_bad_id}" if result.first_bad_id is not None else "at the end"
        typer.echo(f"audit chain broken {where}: {result.reason}", err=True)
        raise typer.Exit(code=1)
