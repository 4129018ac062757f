-- The SQL API of pgraft on a one-node cluster: what is installed where, who may call what,
-- what each function returns, and the SQLSTATE, message and hint of each error.
CREATE EXTENSION pgraft CASCADE;
\dx pgraft

-- Wait (at most 30 s) until the node leads its one-node cluster.
DO $wait$
BEGIN
    FOR i IN 1..300 LOOP
        BEGIN
            IF pgraft_is_leader() THEN
                RETURN;
            END IF;
        EXCEPTION WHEN OTHERS THEN
            NULL;  -- the node may still be starting
        END;
        PERFORM pg_sleep(0.1);
    END LOOP;
    RAISE EXCEPTION 'the pgraft node did not become leader within 30 s';
END
$wait$;

-- ------------------------------------------------------------------ what is installed
\i sql/pgraft_functions.psql

-- The same names work with an empty search_path.
SET search_path = '';
SELECT pgraft_get_leader() AS leader, pgraft_is_leader() AS is_leader;
RESET search_path;

-- ------------------------------------------------------------------ privileges
CREATE ROLE regress_pgraft_nobody;
SELECT p.proname,
       has_function_privilege('regress_pgraft_nobody', p.oid, 'EXECUTE') AS public,
       has_function_privilege('pg_monitor', p.oid, 'EXECUTE') AS pg_monitor,
       has_function_privilege('pg_read_all_data', p.oid, 'EXECUTE') AS pg_read_all_data,
       has_function_privilege('pgraft_admin', p.oid, 'EXECUTE') AS pgraft_admin
FROM pgraft_functions p
ORDER BY p.proname;

SET ROLE regress_pgraft_nobody;
\set VERBOSITY terse
SELECT pgraft_get_leader();
SELECT pgraft_kv_put('k', 'v');
\set VERBOSITY default
RESET ROLE;

-- ------------------------------------------------------------------ results
SELECT node_id, address, role, is_leader FROM pgraft_get_nodes();
SELECT pgraft_get_term() > 0 AS has_term;
SELECT node_id, leader_id, state, num_nodes, commit_index >= 1 AS committed,
       applied_index <= commit_index AS applied_le_commit
FROM pgraft_get_cluster_status();
SELECT first_index >= 1 AS first, last_index >= commit_index AS last,
       log_bytes > 0 AS has_bytes
FROM pgraft_log_get_stats();
SELECT pgraft_socket_path() LIKE '%.pgraft/node.sock' AS socket_outside_pgdata;
SELECT pgraft_get_version() = (SELECT extversion FROM pg_extension WHERE extname = 'pgraft')
       || '.0' AS package_matches_extension;
SELECT launcher_pid > 0 AS launcher, node_pid > 0 AS node, state, restarts,
       last_exit IS NULL AS never_exited
FROM pgraft_launcher_status();
SELECT count(*) AS peers FROM pgraft_stat_peers();

SELECT pgraft_kv_put('regress/a', 'one');
SELECT pgraft_kv_put('regress/b', 'two');
SELECT pgraft_kv_get('regress/a'), pgraft_kv_get('regress/none');
SELECT * FROM pgraft_kv_list_keys();
SELECT pgraft_kv_delete('regress/b'), pgraft_kv_delete('regress/b');

SELECT pgraft_log_append('\x00ff'::bytea) AS index \gset
SELECT pgraft_log_get_entry(:index);
SELECT pgraft_replicate_entry('hello');
SELECT pgraft_log_get_entry(1000000) IS NULL AS absent;

-- A member without a server behind it joins as a learner and costs no quorum.
SELECT pgraft_add_node(2, '127.0.0.2', 7002);
SELECT node_id, address, port, role, connected, match_index IS NOT NULL AS tracked
FROM pgraft_stat_peers();
SELECT pgraft_remove_node(2);

-- pgraft writes are not transactional: they are committed in the Raft log at once, and
-- neither ROLLBACK nor a READ ONLY transaction stops them.
BEGIN;
SELECT pgraft_kv_put('regress/tx', 'kept');
ROLLBACK;
SELECT pgraft_kv_get('regress/tx');
BEGIN READ ONLY;
SELECT pgraft_kv_delete('regress/tx');
COMMIT;

-- ------------------------------------------------------------------ settings
SHOW pgraft.request_timeout;
SET pgraft.request_timeout = '2s';
SELECT pgraft_get_leader();
RESET pgraft.request_timeout;
SET pgraft.request_timeout = 0;

-- ------------------------------------------------------------------ errors
\set VERBOSITY verbose
\set SHOW_CONTEXT never
SELECT pgraft_add_node(NULL, '127.0.0.3', 7003);
SELECT pgraft_add_node(3, NULL, 7003);
SELECT pgraft_add_node(0, '127.0.0.3', 7003);
SELECT pgraft_add_node(3, '127.0.0.3', 70000);
SELECT pgraft_add_node(3, 'not a host!', 7003);
SELECT pgraft_add_node(1, '127.0.0.1', 7001);
SELECT pgraft_add_node(2, '127.0.0.2', 7002);
SELECT pgraft_remove_node(99);
SELECT pgraft_transfer_leadership(99);
SELECT pgraft_kv_put(NULL, 'v');
SELECT pgraft_kv_put(repeat('k', 100000), 'v');
SELECT pgraft_log_append(NULL);
SELECT pgraft_log_get_entry(-1);
-- HA mode is off: the node runs without PostgreSQL (no `pgraft serve --postgres`).
SELECT * FROM pgraft_ha_status();
\set VERBOSITY default

DROP ROLE regress_pgraft_nobody;
