"""What a tenant's admin reads and does about the tenant as a whole: its numbers at a glance
(``tenantOverview``), what a given user is served (``previewRecommendations``) and loading a
data file (``importFile``, the same import as ``recserve ingest file``). The browser console is
built on these and the rest of the public API; any client may use them."""

from __future__ import annotations

import asyncio
import base64
import binascii
import shutil
import tempfile
import uuid
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import strawberry

from graph_api.auth import Principal
from graph_api.context import Info, RequestContext, require_admin
from graph_api.errors import BadUserInput, ObjectNotFound
from graph_api.inputs import RecommendationOptions, to_params
from graph_api.recommendations import recommend, tenant_cache_prefix
from graph_api.row_cache import row_prefix
from graph_api.types import RecommendationResult
from storage.errors import InvalidData
from storage.repositories import interactions as interactions_repo
from storage.repositories import items as items_repo
from storage.repositories import users as users_repo

if TYPE_CHECKING:  # imported where used: ingest brings pyarrow, which no request needs
    from ingest.files import ColumnMap, ImportReport

MAX_OVERVIEW_DAYS = 366
MAX_MAPPINGS = 20


@strawberry.type
class DayCount:
    day: str = strawberry.field(description="A UTC date, YYYY-MM-DD.")
    interactions: int


@strawberry.type
class TenantOverview:
    items: int = strawberry.field(description="Active catalogue items.")
    users: int = strawberry.field(description="Accounts, deactivated ones included.")
    interactions: int
    active_users: int = strawberry.field(description="Users with at least one interaction.")
    interactions_per_day: list[DayCount] = strawberry.field(
        description="Per UTC day, for the days that end on the day of the newest interaction "
        "(an imported history may end in the past); empty without interactions."
    )


@strawberry.enum
class ImportKind(Enum):
    ITEMS = "items"
    USERS = "users"
    INTERACTIONS = "interactions"
    RATINGS = "ratings"


@strawberry.input
class FileImportInput:
    kind: ImportKind
    file_name: str = strawberry.field(
        description="Its name; the extension gives the format: .csv, .jsonl (.ndjson) or .parquet."
    )
    content_base64: str = strawberry.field(
        description="The file, base64-encoded; at most RECSERVE_MAX_UPLOAD_BYTES once decoded "
        "(larger files: recserve ingest file)."
    )
    mapping: list[str] | None = strawberry.field(
        default=None,
        description='Column names where they differ: ["external_id=sku", "user=customer"], '
        "as recserve ingest file --map takes them.",
    )
    strict: bool = strawberry.field(
        default=False, description="Import nothing when any row is bad."
    )


@strawberry.type
class BadRowReport:
    line: int
    reason: str


@strawberry.type
class FileImportResult:
    items: int
    users: int
    interactions: int
    ratings: int
    duplicates: int = strawberry.field(description="Events the tenant already had.")
    bad_count: int
    bad_rows: list[BadRowReport] = strawberry.field(description="The first bad rows.")
    strict_rejected: bool = strawberry.field(
        description="strict was asked and a row was bad: nothing was imported."
    )

    @classmethod
    def of(cls, report: ImportReport, file_name: str, stored_as: str) -> FileImportResult:
        def named(reason: str) -> str:  # the file as the client named it
            return reason.replace(stored_as, file_name)

        return cls(
            items=report.items,
            users=report.users,
            interactions=report.interactions,
            ratings=report.ratings,
            duplicates=report.duplicates,
            bad_count=report.bad_count,
            bad_rows=[
                BadRowReport(line=row.line, reason=named(row.reason)) for row in report.bad_rows
            ],
            strict_rejected=report.strict_rejected,
        )


@strawberry.type
class TenantAdminQuery:
    @strawberry.field(description="The tenant's numbers at a glance (admin).")
    async def tenant_overview(self, info: Info, days: int = 30) -> TenantOverview:
        principal = await require_admin(info.context)
        if not 1 <= days <= MAX_OVERVIEW_DAYS:
            raise BadUserInput(f"days must be between 1 and {MAX_OVERVIEW_DAYS}.")
        tenant = principal.tenant_id
        async with info.context.session(readonly=True) as session:
            items = await items_repo.count_items(session=session, tenant_id=tenant)
            users = await users_repo.count_users(session=session, tenant_id=tenant)
            interactions = await interactions_repo.count_interactions(
                session=session, tenant_id=tenant
            )
            active = await interactions_repo.count_interacting_users(
                session=session, tenant_id=tenant
            )
            per_day = await interactions_repo.interactions_per_day(
                session=session, tenant_id=tenant, days=days
            )
        return TenantOverview(
            items=items,
            users=users,
            interactions=interactions,
            active_users=active,
            interactions_per_day=[DayCount(day=day, interactions=n) for day, n in per_day],
        )

    @strawberry.field(
        description="Admin: what recommendations answers the user with these options (their "
        "experiment variant and cached list included). A preview: it is not recorded as an "
        "impression and counts against the admin's limits, not the user's."
    )
    async def preview_recommendations(
        self, info: Info, user_id: uuid.UUID, options: RecommendationOptions | None = None
    ) -> RecommendationResult:
        principal = await require_admin(info.context)
        params = to_params(options)
        row = await info.context.loaders.users.load(user_id)
        if row is None:  # also another tenant's user: existence is not revealed
            raise ObjectNotFound("User not found.")
        served_to = Principal(
            tenant_id=principal.tenant_id, user_id=row.id, role=str(row.role), tier=principal.tier
        )
        return await recommend(info.context, served_to, params, served=False)


@strawberry.type
class TenantAdminMutation:
    @strawberry.mutation(
        description="Admin: import one items, users, interactions or ratings file, as recserve "
        "ingest file does (re-importing adds nothing twice; bad rows are listed with their "
        "line and reason, and the good ones imported unless strict)."
    )
    async def import_file(self, info: Info, input: FileImportInput) -> FileImportResult:
        from ingest.files import FORMATS, ColumnMap

        ctx = info.context
        principal = await require_admin(ctx)
        suffix = Path(input.file_name).suffix.lower()
        if suffix not in FORMATS:
            raise BadUserInput(
                f"{input.file_name!r}: the name must end in .csv, .jsonl, .ndjson or .parquet.",
                field="fileName",
            )
        if len(input.mapping or ()) > MAX_MAPPINGS:
            raise BadUserInput(f"At most {MAX_MAPPINGS} column mappings.", field="mapping")
        limit = ctx.services.settings.max_upload_bytes
        if len(input.content_base64) > (limit + 2) // 3 * 4:
            raise BadUserInput(
                f"The file is larger than {limit} bytes; import it with recserve ingest file.",
                field="contentBase64",
                maxUploadBytes=limit,
            )
        try:
            columns = ColumnMap(input.mapping or ())
        except (InvalidData, ValueError) as error:  # a malformed mapping
            raise BadUserInput(str(error), field="mapping") from error
        try:
            content = base64.b64decode(input.content_base64, validate=True)
        except binascii.Error as error:
            raise BadUserInput("contentBase64 is not base64.", field="contentBase64") from error
        folder = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="recserve-upload-"))
        try:
            path = folder / f"upload{suffix}"
            await asyncio.to_thread(path.write_bytes, content)
            report = await _import(ctx, principal, input.kind, path, columns, input.strict)
        except InvalidData as error:  # an unusable file: named as the client named it
            raise BadUserInput(
                str(error).replace(path.name, input.file_name), field="contentBase64"
            ) from error
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, True)
        await _after_import(ctx, principal, report)
        return FileImportResult.of(report, input.file_name, path.name)


async def _import(
    ctx: RequestContext, principal: Principal, kind: ImportKind, path: Path, columns: ColumnMap,
    strict: bool,
) -> ImportReport:  # fmt: skip
    from ingest.files import import_files, item_external_ids

    if kind is ImportKind.ITEMS:  # the tier's catalogue size holds for files too
        external_ids = await asyncio.to_thread(item_external_ids, path, columns)
        async with ctx.session() as session:
            await ctx.services.quotas.check_items(session, principal, external_ids)
    scale = await ctx.loaders.rating_scale()
    return await import_files(
        ctx.services.database,
        principal.tenant_id,
        columns=columns,
        strict=strict,
        rating_scale=scale,
        **{kind.value: path},
    )


async def _after_import(ctx: RequestContext, principal: Principal, report: ImportReport) -> None:
    """Cached lists and item rows may be stale after any import that wrote something."""
    if report.strict_rejected:
        return
    await ctx.services.results.drop_prefix(tenant_cache_prefix(principal.tenant_id))
    await ctx.services.results.drop_prefix(row_prefix(principal.tenant_id, "item"))
