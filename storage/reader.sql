-- The read-only ClickHouse user `genops sql` logs in as on a ClickHouse server
-- (`genops migrate --create-reader`; re-running it sets the password and settings again).
-- SELECT on GenOps's database and nothing else: no source grants (FILE, URL, REMOTE, S3,
-- MYSQL, POSTGRES, ...), so no table function can reach files or the network; no
-- CREATE TEMPORARY TABLE, no writes, no DDL, no KILL: what a query may do is bounded by
-- these grants whatever settings it sends; time and memory have ceilings (MAX).
CREATE ROLE IF NOT EXISTS {role};
GRANT SELECT ON {database}.* TO {role};
CREATE USER IF NOT EXISTS {user} IDENTIFIED WITH sha256_password BY {password};
ALTER USER {user} IDENTIFIED WITH sha256_password BY {password} DEFAULT DATABASE {database} SETTINGS max_execution_time = 30 MAX 3600, max_memory_usage = 1073741824 MAX 17179869184;
GRANT {role} TO {user};
SET DEFAULT ROLE {role} TO {user};
