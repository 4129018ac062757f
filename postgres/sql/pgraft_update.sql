-- The update path: a database created with pgraft 1.0 (functions in the schema of the
-- caller's choice, int node ids, the bridge's code inside pg_proc) is updated to 1.1, then
-- to 1.2, and ends up with exactly what a new installation has (pgraft_api pins the same
-- listing).
CREATE DATABASE regress_pgraft_update;
\c regress_pgraft_update
CREATE EXTENSION plpython3u;
CREATE EXTENSION pgraft VERSION '1.0';
\dx pgraft
SELECT p.pronamespace::regnamespace AS schema, count(*)
FROM pg_proc p
JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pgraft')
GROUP BY 1;
SELECT public.pgraft_get_leader();

-- 1.1 needs the jsonb transform for PL/Python; ALTER EXTENSION does not create it.
ALTER EXTENSION pgraft UPDATE;
CREATE EXTENSION jsonb_plpython3u;
ALTER EXTENSION pgraft UPDATE TO '1.1';
\dx pgraft
-- The 1.1 functions work with the 1.2 library and package (pgraft.pg.bridge.SQL_VERSIONS),
-- so a server can be upgraded before its databases are.
SELECT pgraft_get_leader(), pgraft_kv_get('regress/a');
SELECT to_regprocedure('pgraft_ha_status()') IS NULL AS no_ha_status_yet;

ALTER EXTENSION pgraft UPDATE;
\dx pgraft
\i sql/pgraft_functions.psql
SELECT p.proname,
       has_function_privilege('pg_monitor', p.oid, 'EXECUTE') AS pg_monitor,
       has_function_privilege('pg_read_all_data', p.oid, 'EXECUTE') AS pg_read_all_data,
       has_function_privilege('pgraft_admin', p.oid, 'EXECUTE') AS pgraft_admin,
       p.proacl IS NOT NULL AND NOT EXISTS (
           SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0) AS closed_to_public
FROM pgraft_functions p
ORDER BY p.proname;
-- The extension depends on no schema now (pg_catalog is pinned), as a new one.
SELECT count(*) AS schema_dependencies FROM pg_depend
WHERE classid = 'pg_extension'::regclass
  AND objid = (SELECT oid FROM pg_extension WHERE extname = 'pgraft')
  AND refclassid = 'pg_namespace'::regclass;

-- The updated functions work, unqualified, in a session of their own; those of 1.1 and the
-- one 1.2 added.
\c regress_pgraft_update
SELECT pgraft_get_leader(), pgraft_kv_get('regress/a');
\set VERBOSITY terse
SELECT * FROM pgraft_ha_status();
\set VERBOSITY default

\c contrib_regression
DROP DATABASE regress_pgraft_update;
