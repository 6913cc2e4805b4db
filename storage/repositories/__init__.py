"""Tenant-scoped data access: keyword-only async functions over an ``AsyncSession``.

Every function takes ``session`` and (except tenant administration) ``tenant_id``, and only
ever reads or writes that tenant's rows. Functions flush but never commit: the caller owns the
transaction (``Database.session()`` commits on exit). Errors are :mod:`storage.errors` types:
NotFound for unknown or other tenants' ids, Conflict for duplicates, InvalidData for bad values.
Batch readers (``*_by_ids``, ``*_for_users``, ``average_ratings``) return one entry per input id,
in input order, as DataLoaders need.
"""

from storage.repositories.interactions import (
    InteractionColumns,
    InteractionRow,
    bulk_insert_interactions,
    count_interacting_users,
    count_interactions,
    existing_interaction_keys,
    import_interactions,
    interactions_for_users,
    iter_interactions,
    load_interactions,
    popular_items,
    recent_items,
    record_interaction,
    refresh_statistics,
)
from storage.repositories.items import (
    bulk_upsert_items,
    catalogue_items,
    create_item,
    delete_item,
    get_item,
    get_item_by_external_id,
    item_ids_by_external_ids,
    items_by_ids,
    list_items,
    newest_items,
    update_item,
)
from storage.repositories.ratings import (
    RatingStats,
    average_ratings,
    bulk_upsert_ratings,
    load_ratings,
    rate_item,
    ratings_for_users,
)
from storage.repositories.tenants import (
    create_tenant,
    get_tenant,
    get_tenant_by_domain,
    list_tenants,
    set_tenant_active,
    set_tenant_registration,
)
from storage.repositories.users import (
    NO_PASSWORD,
    bulk_upsert_users,
    create_user,
    get_user,
    get_user_by_email,
    list_users,
    set_user_active,
    users_by_ids,
)

__all__ = [
    "NO_PASSWORD",
    "InteractionColumns",
    "InteractionRow",
    "RatingStats",
    "average_ratings",
    "bulk_insert_interactions",
    "bulk_upsert_items",
    "bulk_upsert_ratings",
    "bulk_upsert_users",
    "catalogue_items",
    "count_interacting_users",
    "count_interactions",
    "create_item",
    "create_tenant",
    "create_user",
    "delete_item",
    "existing_interaction_keys",
    "get_item",
    "get_item_by_external_id",
    "get_tenant",
    "get_tenant_by_domain",
    "get_user",
    "get_user_by_email",
    "import_interactions",
    "interactions_for_users",
    "item_ids_by_external_ids",
    "items_by_ids",
    "iter_interactions",
    "list_items",
    "list_tenants",
    "list_users",
    "load_interactions",
    "load_ratings",
    "newest_items",
    "popular_items",
    "rate_item",
    "ratings_for_users",
    "recent_items",
    "record_interaction",
    "refresh_statistics",
    "set_tenant_active",
    "set_tenant_registration",
    "set_user_active",
    "update_item",
    "users_by_ids",
]
