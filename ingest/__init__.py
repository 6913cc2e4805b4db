"""A tenant's data in and out: datasets and generated tenants written through the one write step
(``writer``), the tenant's own files imported (``files``, with the columnar CSV path of
``csv_columns``) and exported back in the same columns (``export``)."""
