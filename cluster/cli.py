"""The ``recserve`` command line: tenant, user, ingest, train, token, migrate, serve, demo."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cluster.lazy import lazy_module
from cluster.local_redis import LocalRedisError, shared_cache_url
from cluster.manifests import ROOT
from cluster.manifests import main as generate_manifests
from cluster.models_cli import models_app, retrain_due_command
from cluster.serving import (
    EXAMPLE_QUERY,
    Terminated,
    graphql,
    haproxy_binary,
    start_serve,
    stopping_with_this_process,
    wait_until_ready,
)
from storage.artifacts import create_artifact_store
from storage.errors import StorageError
from storage.models import TenantTier
from storage.rating_scale import RatingScale
from storage.settings import Settings, get_settings

ops = lazy_module("cluster.operations")  # most commands, not `serve`: loaded on first use
LOCAL_HOST = "127.0.0.1"  # what `serve` and `demo` listen on unless told otherwise

app = typer.Typer(help="Recserve: multi-tenant recommendations on Ray Serve.", no_args_is_help=True)
tenant_app = typer.Typer(help="Manage tenants.", no_args_is_help=True)
ingest_app = typer.Typer(help="Load data into a tenant.", no_args_is_help=True)
user_app = typer.Typer(help="Manage a tenant's users.", no_args_is_help=True)
app.add_typer(tenant_app, name="tenant")
app.add_typer(user_app, name="user")
app.add_typer(ingest_app, name="ingest")
app.add_typer(models_app, name="models")
app.command("retrain-due")(retrain_due_command)
console = Console()
T = TypeVar("T")
TenantOption = Annotated[str, typer.Option("--tenant", help="The tenant's domain.")]
REGISTRATION_MODES = ("open", "invite", "closed")
TIERS = tuple(tier.value for tier in TenantTier)
TierOption = Annotated[
    str,
    typer.Option("--tier", help="basic, premium or enterprise: the rate limits and quotas"),
]
RegistrationOption = Annotated[
    str,
    typer.Option(
        "--registration",
        help="Who may sign up with the register mutation: open, invite (an admin's "
        "createInvite token) or closed (nobody; users come from `recserve token`)",
    ),
]
RATING_SCALE_HELP = (
    "low:high (e.g. 0:10, 1:100), thumbs (0 down, 1 up) or stars (0.5:5, the default)"
)
RatingScaleOption = Annotated[
    str | None,
    typer.Option(help=f"The tenant's rating scale: {RATING_SCALE_HELP}; becomes the tenant's"),
]
SCHEMA_FILE = ROOT / "schema.graphql"
DEMO_DOMAIN = "demo.recserve"
DEMO_ADMIN = "admin@demo.recserve"
# A generated shopper with history, so the example query shows personalised, blended results.
DEMO_SHOPPER = "user-00001@imported.recserve"


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run one operation; storage errors end the command with their message, not a trace."""
    try:
        return asyncio.run(coroutine)
    except StorageError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from error


@contextmanager
def progress_bar() -> Iterator[Callable[[str, int, int], None]]:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
        tasks: dict[str, Any] = {}

        def report(stage: str, done: int, total: int) -> None:
            # "train: ease" and "train: als" advance one bar whose label names the step
            key = stage.split(":")[0]
            if key not in tasks:
                tasks[key] = progress.add_task(stage, total=max(total, 1))
            progress.update(tasks[key], description=stage, completed=done, total=max(total, 1))

        yield report


@app.command()
def migrate() -> None:
    """Apply the database migrations (every other command also migrates an empty database)."""
    settings = get_settings()

    async def apply() -> None:
        await (await ops.open_database(settings)).dispose()

    run(apply())
    console.print(f"database at head: {settings.database_url}")


@tenant_app.command("create")
def tenant_create(
    domain: Annotated[str, typer.Option(help="Unique domain, e.g. shop.example.com")],
    name: Annotated[str | None, typer.Option(help="Display name (defaults to the domain)")] = None,
    tier: TierOption = "basic",
    registration: RegistrationOption = "closed",
    rating_scale: RatingScaleOption = None,
) -> None:
    """Create a tenant and print its id (its first admin: ``recserve token --admin``)."""
    _check_tier(tier)
    _check_registration(registration)
    tenant = run(
        ops.create_tenant(
            get_settings(),
            domain=domain,
            name=name,
            tier=tier,
            registration=registration,
            rating_scale=rating_scale,
        )
    )
    print(tenant.id)


@tenant_app.command("set-rating-scale")
def tenant_set_rating_scale(
    tenant: TenantOption,
    scale: Annotated[str, typer.Argument(help=RATING_SCALE_HELP)],
) -> None:
    """The scale the tenant's ratings arrive on (imports, rateItem) and are shown on. Stored
    ratings keep their meaning: 5 stars read as 10 on 0:10."""
    found = run(ops.set_rating_scale(get_settings(), domain=tenant, scale=scale))
    console.print(f"{found.domain}: ratings on {RatingScale.of_tenant(found.settings)}")


@tenant_app.command("show")
def tenant_show(tenant: TenantOption) -> None:
    """The tenant's id, tier, registration, state and rating scale."""

    async def find() -> Any:
        database = await ops.open_database(get_settings())
        try:
            return await ops.tenant_by_domain(database, tenant)
        finally:
            await database.dispose()

    found = run(find())
    print(f"id            {found.id}")
    print(f"domain        {found.domain}")
    print(f"name          {found.name}")
    print(f"tier          {found.tier}")
    print(f"registration  {found.registration}")
    print(f"active        {'yes' if found.is_active else 'no'}")
    print(f"rating scale  {RatingScale.of_tenant(found.settings)}")


def _check_tier(tier: str) -> None:
    if tier not in TIERS:
        raise typer.BadParameter(f"tier must be one of {', '.join(TIERS)}", param_hint="--tier")


@tenant_app.command("set-tier")
def tenant_set_tier(tenant: TenantOption, tier: TierOption) -> None:
    """Move the tenant to another tier: its rate limits and quotas (RECSERVE_RATE_LIMIT_TIERS,
    RECSERVE_TENANT_QUOTAS). Access tokens carry the tier: it applies from the users' next
    token (sign-in or refresh, at most RECSERVE_ACCESS_TOKEN_MINUTES later)."""
    _check_tier(tier)
    found = run(ops.set_tier(get_settings(), domain=tenant, tier=tier))
    console.print(f"{found.domain}: tier {found.tier}")


def _check_registration(mode: str) -> None:
    if mode not in REGISTRATION_MODES:
        raise typer.BadParameter(
            "registration must be open, invite or closed", param_hint="--registration"
        )


@tenant_app.command("set-registration")
def tenant_set_registration(tenant: TenantOption, registration: RegistrationOption) -> None:
    """Change who may register in the tenant."""
    _check_registration(registration)
    ops_result = run(ops.set_registration(get_settings(), domain=tenant, registration=registration))
    console.print(f"{ops_result.domain}: registration {ops_result.registration}")


@tenant_app.command("deactivate")
def tenant_deactivate(tenant: TenantOption) -> None:
    """Disable a tenant: its users' tokens, refreshes and live subscriptions stop."""
    found = run(ops.set_tenant_active(get_settings(), domain=tenant, active=False))
    console.print(f"{found.domain}: deactivated")


@tenant_app.command("activate")
def tenant_activate(tenant: TenantOption) -> None:
    """Enable a tenant again."""
    found = run(ops.set_tenant_active(get_settings(), domain=tenant, active=True))
    console.print(f"{found.domain}: active")


@user_app.command("deactivate")
def user_deactivate(
    tenant: TenantOption, email: Annotated[str, typer.Option(help="The user's e-mail")]
) -> None:
    """Disable a user: their tokens, refreshes and live subscriptions stop; data stays."""
    user = run(ops.set_user_active(get_settings(), domain=tenant, email=email, active=False))
    console.print(f"{user.email}: deactivated")


@user_app.command("activate")
def user_activate(
    tenant: TenantOption, email: Annotated[str, typer.Option(help="The user's e-mail")]
) -> None:
    """Enable a user again (they sign in anew: their old sessions stay ended)."""
    user = run(ops.set_user_active(get_settings(), domain=tenant, email=email, active=True))
    console.print(f"{user.email}: active")


@user_app.command("set-password")
def user_set_password(
    tenant: TenantOption,
    email: Annotated[str, typer.Option(help="The user's e-mail")],
    password_stdin: Annotated[
        bool, typer.Option(help="Read the password from standard input instead of a prompt")
    ] = False,
) -> None:
    """Give a user a password to sign in with (the login mutation, the console at /console/):
    an admin made with `recserve token --admin` has none."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    try:
        user = run(ops.set_password(get_settings(), domain=tenant, email=email, password=password))
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="password") from error
    console.print(f"{user.email}: password set")


@ingest_app.command("movielens")
def ingest_movielens(
    path: Annotated[
        str,
        typer.Argument(help="A MovieLens folder, or ml-100k / ml-1m / ml-latest-small to download"),
    ],
    tenant: TenantOption,
) -> None:
    """Load a MovieLens dataset (ratings and movies) into the tenant."""
    with progress_bar() as report:
        counts = run(
            ops.ingest_movielens(get_settings(), source=path, domain=tenant, progress=report)
        )
    console.print(f"ingested {counts.items} items, {counts.users} users, {counts.ratings} ratings")


def _data_file(help_text: str) -> Any:
    return typer.Option(exists=True, dir_okay=False, readable=True, help=help_text)


MAPPING_HELP = (
    "Column mapping FIELD=COLUMN, comma-separated, repeatable: "
    "user=customer_id,item=sku,type=event,value=qty,time=ts,external_id=sku,title=name. "
    "KIND.FIELD (e.g. ratings.time=rated_at) maps one kind of file only. Defaults: the field "
    "names (items: external_id,title,description,category,tags,metadata,active; users: "
    "user,username; interactions: user,item,type,value,time; ratings: user,item,rating,time)"
)


@ingest_app.command("file")
def ingest_file(
    tenant: TenantOption,
    items: Annotated[Path | None, _data_file("Items: .csv, .jsonl or .parquet")] = None,
    interactions: Annotated[Path | None, _data_file("Interactions (events)")] = None,
    users: Annotated[Path | None, _data_file("Users (optional: events create theirs)")] = None,
    ratings: Annotated[
        Path | None, _data_file("Ratings, on the tenant's rating scale (default 0.5 to 5)")
    ] = None,
    rating_scale: RatingScaleOption = None,
    map_: Annotated[list[str] | None, typer.Option("--map", help=MAPPING_HELP)] = None,
    strict: Annotated[
        bool, typer.Option(help="Import nothing if any row is bad (checked first)")
    ] = False,
) -> None:
    """Import the tenant's own items, users, interactions and ratings from files.

    Re-importing the same files adds nothing twice. Bad rows are listed with their line and
    reason; without --strict the good rows are imported anyway.
    """
    if not any((items, interactions, users, ratings)):
        raise typer.BadParameter("give at least one of --items, --interactions, --users, --ratings")
    with progress_bar() as report:
        result = run(
            ops.ingest_files(
                get_settings(),
                domain=tenant,
                items=items,
                users=users,
                interactions=interactions,
                ratings=ratings,
                mapping=map_,
                strict=strict,
                progress=report,
                rating_scale=rating_scale,
            )
        )
    for bad in result.bad_rows:
        console.print(f"[yellow]bad row[/yellow] {escape(f'{bad.file}:{bad.line}: {bad.reason}')}")
    if result.bad_count > len(result.bad_rows):
        console.print(f"... and {result.bad_count - len(result.bad_rows)} more bad rows")
    if result.strict_rejected:
        console.print(f"[red]nothing imported:[/red] {result.bad_count} bad rows (--strict)")
        raise typer.Exit(1)
    console.print(
        f"imported {result.items} items, {result.users} users of the users file, "
        f"{result.interactions} "
        f"interactions ({result.duplicates} already present), {result.ratings} ratings; "
        f"{result.bad_count} bad rows skipped"
    )


@app.command()
def export(
    tenant: TenantOption,
    out: Annotated[Path, typer.Option(file_okay=False, help="Directory to write into")],
    file_format: Annotated[str, typer.Option("--format", help="jsonl or parquet")] = "jsonl",
) -> None:
    """Write the tenant's items, users (no password hashes), interactions and ratings out in
    the columns `recserve ingest file` reads, so an export imports into another tenant."""
    if file_format not in ("jsonl", "parquet"):
        raise typer.BadParameter("format must be jsonl or parquet", param_hint="--format")
    with progress_bar() as report:
        counts = run(
            ops.export(
                get_settings(), domain=tenant, out=out, file_format=file_format, progress=report
            )
        )
    console.print(
        f"exported {counts.items} items, {counts.users} users, {counts.interactions} "
        f"interactions, {counts.ratings} ratings to {out}"
    )


@ingest_app.command("synthetic")
def ingest_synthetic(
    tenant: TenantOption,
    users: int = 500,
    items: int = 400,
    clusters: int = 8,
    per_user: int = 25,
    seed: int = 42,
    interactions: Annotated[
        int,
        typer.Option(
            help="Generate this many events in total instead (long-tailed users and items, "
            "streamed in chunks: e.g. --users 200000 --items 50000 --interactions 10000000)"
        ),
    ] = 0,
) -> None:
    """Generate a catalogue with planted taste clusters and item text, and load it."""
    if interactions < 0:
        raise typer.BadParameter("must be positive", param_hint="--interactions")
    with progress_bar() as report:
        counts = run(
            ops.ingest_synthetic(
                get_settings(),
                domain=tenant,
                users=users,
                items=items,
                clusters=clusters,
                per_user=per_user,
                seed=seed,
                interactions=interactions,
                progress=report,
            )
        )
    console.print(
        f"ingested {counts.items} items, {counts.users} users, {counts.interactions} events"
    )


@app.command()
def train(
    tenant: TenantOption,
    algorithms: Annotated[str | None, typer.Option(help="Comma-separated, default: all")] = None,
    evaluate: Annotated[bool, typer.Option(help="Measure each model on a holdout")] = True,
    distributed: Annotated[bool, typer.Option(help="Fit ALS and SVD on Ray Train")] = False,
    workers: Annotated[int, typer.Option(min=1, help="Ray Train workers (--distributed)")] = 2,
    address: Annotated[
        str | None, typer.Option(help="Existing Ray cluster, e.g. auto (default: local Ray)")
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            help="Ray Train run storage every node reaches (a shared path or s3://…); default "
            "RECSERVE_TRAIN_STORAGE_URI, else a local temporary directory (one node only)"
        ),
    ] = None,
) -> None:
    """Fit the tenant's models, publish them as new versions and print their holdout metrics."""
    from training.pipeline import train_tenant_async  # torch and friends load only here

    settings = get_settings()
    if storage is not None:
        settings = settings.model_copy(update={"train_storage_uri": storage})
    names = [a.strip() for a in algorithms.split(",")] if algorithms else None

    async def go(report: Callable[[str, int, int], None]) -> Any:
        database = await ops.open_database(settings)
        try:
            found = await ops.tenant_by_domain(database, tenant)
        finally:
            await database.dispose()
        return await train_tenant_async(
            settings, str(found.id), names, evaluate=evaluate, progress=report,
            distributed=distributed, workers=workers, address=address,
        )  # fmt: skip

    with progress_bar() as report:
        result = run(go(report))
    for name, version in result.versions.items():
        metrics = ", ".join(f"{k}={v:.3f}" for k, v in result.metrics.get(name, {}).items())
        console.print(f"{name:<11} {version}  {metrics}")
    for name, reason in result.skipped.items():
        console.print(f"[yellow]{name} skipped:[/yellow] {reason}")
    console.print(f"trained in {result.duration_seconds:.1f}s")


@app.command()
def token(
    tenant: TenantOption,
    email: Annotated[str, typer.Option(help="The user's e-mail; created when missing")],
    admin: Annotated[bool, typer.Option(help="Make the user a tenant admin")] = False,
) -> None:
    """Print a bearer token for a user of the tenant."""
    issued = run(ops.issue_token(get_settings(), domain=tenant, email=email, admin=admin))
    print(issued.access_token)


@contextmanager
def stopping_on_request() -> Iterator[None]:
    """Ctrl-C (or a supervisor's SIGTERM) is how ``serve`` and ``demo`` are meant to end: one
    line once `serve run` and its Ray are down, no traceback; status 0 on Ctrl-C, so that
    ``make demo`` does not report it as an error, 128 + the signal's number on SIGTERM."""
    try:
        yield
    except KeyboardInterrupt:
        console.print("recserve stopped")
        raise typer.Exit(0) from None
    except Terminated as terminated:
        if terminated.signum != signal.SIGHUP:  # no terminal left to tell
            console.print("recserve stopped")
        raise


@app.command()
def serve(
    config: Path = Path("serve_config.yaml"),
    port: Annotated[
        int | None, typer.Option(help="The HTTP port (default: the config's http_options).")
    ] = None,
    host: Annotated[
        str,
        typer.Option(
            help="The address to listen on; 0.0.0.0 for every interface (in HAProxy mode the "
            "replicas' ports too)."
        ),
    ] = LOCAL_HOST,
) -> None:
    """Run the Serve application (``serve run serve_config.yaml``) until interrupted.

    Without ``RECSERVE_REDIS_URL`` a local ``redis-server`` is started for the app's replicas
    to share (``cluster.local_redis``), and stopped after it. With ``haproxy`` installed, HAProxy
    fronts the replicas instead of Ray's Python proxy (``RAY_SERVE_ENABLE_HA_PROXY=0`` turns it
    off)."""
    settings = get_settings()
    with stopping_on_request(), shared_cache(settings) as cache_url:
        _say_proxy()
        started = start_serve(settings, config.resolve(), cache_url=cache_url, port=port, host=host)
        with stopping_with_this_process(started) as process:
            code = process.wait()
    raise typer.Exit(code)


def _say_proxy() -> None:
    """Which proxy fronts the replicas, and how to get the fast one when it is missing."""
    if os.environ.get("RAY_SERVE_ENABLE_HA_PROXY", "1") != "1":
        console.print("proxy: Ray's Python proxy (RAY_SERVE_ENABLE_HA_PROXY=0)")
    elif haproxy_binary(dict(os.environ)) is None:
        console.print(
            "[yellow]proxy: Ray's Python proxy; install haproxy (apt-get install haproxy) for "
            "about four times the cached throughput[/yellow]"
        )


@contextmanager
def shared_cache(settings: Settings) -> Iterator[str]:
    """The Redis the Serve app's replicas share: the configured one, or a local one."""
    try:
        with shared_cache_url(settings.redis_url) as url:
            yield url
    except LocalRedisError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from error


@app.command()
def status(
    address: str = typer.Option("auto", help="The Ray cluster to ask (ray.init address)."),
    url: str = typer.Option("http://127.0.0.1:8000", help="The ingress, for /health."),
) -> None:
    """Summarise the Serve app (deployments, replicas), model versions per tenant and health."""
    import ray
    from ray import serve as ray_serve

    from cluster.status import StatusReport, fetch_health, model_versions, serve_rows
    from cluster.status import render as render_status

    settings = get_settings()
    report = StatusReport()
    try:
        ray.init(address=address, log_to_driver=False)
        report.applications, report.deployments = serve_rows(ray_serve.status())
    except ConnectionError as error:
        console.print(f"[yellow]no Ray cluster at {address}: {error}[/yellow]")

    async def versions() -> dict[str, dict[str, str]]:
        database = await ops.open_database(settings)
        try:
            return await model_versions(database, create_artifact_store(settings))
        finally:
            await database.dispose()

    report.versions = run(versions())
    token = settings.ops_token.get_secret_value() if settings.ops_token else None
    report.health = fetch_health(url, ops_token=token)
    for line in render_status(report):
        print(line)


@app.command()
def manifests(check: bool = typer.Option(False, help="Fail if the files are stale.")) -> None:
    """Regenerate cluster/kuberay/*.yaml from serve_config.yaml (the one source of truth)."""
    raise typer.Exit(generate_manifests(["--check"] if check else []))


@app.command("schema")
def schema_command(
    check: Annotated[
        bool, typer.Option(help="Fail if the file differs from the live schema.")
    ] = False,
    output: Annotated[Path, typer.Option(help="Where the SDL is written.")] = SCHEMA_FILE,
) -> None:
    """Write the GraphQL schema's SDL to schema.graphql (the checked-in API contract)."""
    from graph_api.schema import printed_sdl

    text = printed_sdl()
    if check:
        if not output.exists() or output.read_text() != text:
            console.print(f"[red]{output} is stale:[/red] run `recserve schema`")
            raise typer.Exit(1)
        return
    output.write_text(text)
    console.print(f"wrote {output}")


@app.command()
def demo(
    port: int = 8000,
    keep_serving: Annotated[bool, typer.Option(help="Keep serving after the check")] = True,
) -> None:
    """Create a demo tenant with a generated catalogue, train it, serve it, print how to query."""
    settings = get_settings()
    with stopping_on_request():
        prepare_in_child(settings)
        admin = run(ops.issue_token(settings, domain=DEMO_DOMAIN, email=DEMO_ADMIN, admin=True))
        shopper = run(ops.issue_token(settings, domain=DEMO_DOMAIN, email=DEMO_SHOPPER))
        # A new password for the console each run: it is printed below, never stored in clear.
        password = secrets.token_urlsafe(12)
        run(ops.set_password(settings, domain=DEMO_DOMAIN, email=DEMO_ADMIN, password=password))
        base = f"http://127.0.0.1:{port}"
        with (
            shared_cache(settings) as cache_url,
            stopping_with_this_process(
                start_serve(settings, cache_url=cache_url, port=port, host=LOCAL_HOST)
            ) as process,
        ):
            console.print("starting Ray Serve (about half a minute)...")
            wait_until_ready(base, process=process)
            answer = graphql(base, EXAMPLE_QUERY, token=shopper.access_token)
            _print_demo(base, shopper.access_token, admin.access_token, answer)
            console.print(
                f"\nconsole: [bold]{base}/console/[/bold] (tenant [bold]{DEMO_DOMAIN}[/bold], "
                f"email [bold]{DEMO_ADMIN}[/bold], password [bold]{password}[/bold])"
            )
            if keep_serving:
                console.print("serving; Ctrl-C stops it")
                process.wait()


def prepare_in_child(settings: Settings) -> None:
    """``_prepare_demo`` in a process of its own: what ingest and training import and allocate
    (torch, the catalogue's matrices: ~480 MiB) leaves with it, instead of staying in this
    process for as long as the demo serves."""
    import multiprocessing

    child = multiprocessing.get_context("spawn").Process(
        target=_prepare_demo_quietly, args=(settings,), name="recserve demo: prepare"
    )
    child.start()
    try:
        child.join()
    finally:
        if child.is_alive():  # interrupted: Ctrl-C reached the child too
            child.join(timeout=10)
            if child.is_alive():
                child.kill()
    if child.exitcode != 0:
        console.print(f"[red]error:[/red] preparing the demo failed (status {child.exitcode})")
        raise typer.Exit(1)


def _prepare_demo_quietly(settings: Settings) -> None:
    try:
        _prepare_demo(settings)
    except KeyboardInterrupt:  # the parent says "recserve stopped"
        raise SystemExit(130) from None


def _prepare_demo(settings: Settings) -> None:
    from training.pipeline import train_tenant_async

    async def prepare(report: Callable[[str, int, int], None]) -> None:
        database = await ops.open_database(settings)
        try:
            # Open, so the demo's register flow works (real tenants start closed).
            tenant, created = await ops.ensure_tenant(
                database, domain=DEMO_DOMAIN, name="Demo shop", registration="open"
            )
        finally:
            await database.dispose()
        if created:
            await ops.ingest_synthetic(
                settings,
                domain=DEMO_DOMAIN,
                users=500,
                items=400,
                clusters=8,
                per_user=25,
                seed=42,
                progress=report,
            )
            await train_tenant_async(settings, str(tenant.id), progress=report)

    with progress_bar() as report:
        run(prepare(report))


def _print_demo(base: str, access_token: str, admin_token: str, answer: dict[str, Any]) -> None:
    console.print(f"\nGraphQL (GraphiQL in a browser): [bold]{base}/graphql[/bold]")
    console.print(f"token of a shopper with history ({DEMO_SHOPPER}):\n{access_token}\n")
    console.print(f"token of the tenant admin (trainModel, createItem, ...):\n{admin_token}\n")
    console.print("example query:")
    print(EXAMPLE_QUERY)
    curl_body = json.dumps({"query": EXAMPLE_QUERY})
    console.print("with curl:")
    print(
        f"curl -s {base}/graphql -H 'Content-Type: application/json' "
        f"-H 'Authorization: Bearer {access_token}' -d '{curl_body}'"
    )
    console.print("\nanswer:")
    print(json.dumps(answer, indent=2)[:4000])
