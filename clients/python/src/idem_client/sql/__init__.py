"""idem's primitives inside your own database transaction (no idem server involved).

:mod:`idem_client.sql.postgres` (psycopg 3) and :mod:`idem_client.sql.mysql`
(PyMySQL, also MariaDB) call the SQL functions / stored procedures that
``idem migrate --store URL`` installs (docs/backends-sql.md). A claim or an
idempotency record written this way commits or rolls back together with
your business rows. Each function runs one statement on the connection you
pass and never commits or rolls back itself.
"""
