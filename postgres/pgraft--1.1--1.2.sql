-- pgraft 1.1 -> 1.2. A new installation runs pgraft--1.0.sql, pgraft--1.0--1.1.sql and then
-- this script, so new and updated databases end up with the same objects.
--
-- What 1.2 changes:
--   * new: pgraft_ha_status(), the PostgreSQL side of each member in HA mode (a node run as
--     `pgraft serve --postgres PGDATA`);
--   * the library fences a primary whose node no longer holds the lease
--     (pgraft.ha_lease_file; nothing in SQL).
--
-- The 1.1 functions stay as they are: they pass '1.1' to _pgraft_call(), which the 1.2
-- package and library still serve (pgraft.pg.bridge.SQL_VERSIONS); a function added here
-- passes '1.2'.

\echo Use "ALTER EXTENSION pgraft UPDATE TO '1.2'" to load this file. \quit

-- ------------------------------------------------------------------------- HA mode

-- One row per member, as the node answering sees them (it asks the others): the role of
-- its PostgreSQL server (primary, standby, ...), its timeline and WAL positions, how far it
-- is behind the primary, what is left of the primary's lease, the epoch of the lease and
-- the member's state. The node answers LSNs as integers (NULL when unknown).
CREATE FUNCTION pg_catalog.pgraft_ha_status()
    RETURNS TABLE(node_id bigint, pg_role text, timeline bigint, received_lsn pg_lsn,
                  replayed_lsn pg_lsn, lag_bytes bigint, lease_remaining_ms bigint,
                  epoch bigint, state text)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT (h->>'node_id')::bigint, h->>'pg_role', (h->>'timeline')::bigint,
           '0/0'::pg_catalog.pg_lsn + (h->>'received_lsn')::numeric,
           '0/0'::pg_catalog.pg_lsn + (h->>'replayed_lsn')::numeric,
           (h->>'lag_bytes')::bigint, (h->>'lease_remaining_ms')::bigint,
           (h->>'epoch')::bigint, h->>'state'
    FROM pg_catalog.jsonb_array_elements(pg_catalog._pgraft_result(pg_catalog._pgraft_call(
        '1.2', 'cannot get the HA status', 'ha_status', NULL, NULL,
        pg_catalog._pgraft_request_timeout()))) AS h;
END;
COMMENT ON FUNCTION pg_catalog.pgraft_ha_status() IS
    'HA mode: each member''s PostgreSQL role, WAL positions, lag and the primary''s lease';

-- ------------------------------------------------------------------------- privileges
-- As the other reads of the cluster's health (pgraft_get_nodes, pgraft_stat_peers).
REVOKE ALL ON FUNCTION pg_catalog.pgraft_ha_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pg_catalog.pgraft_ha_status()
TO pgraft_admin, pg_monitor, pg_read_all_data;
