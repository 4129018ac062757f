-- pgraft 1.0 -> 1.1. A new installation runs pgraft--1.0.sql and then this script (the way
-- PostgreSQL's contrib modules ship one base script and a chain of updates), so new and
-- updated databases end up with the same objects.
--
-- What 1.1 changes:
--   * every function lives in pg_catalog, so the seed's unqualified calls work whatever the
--     search_path (1.0 put them in the schema the extension was created in);
--   * node ids are bigint everywhere (1.0 mixed int and bigint);
--   * the Python code of the SQL functions moved out of pg_proc into the pgraft package
--     (pgraft.pg.bridge); _pgraft_call() only finds and imports it, and refuses calls while
--     the extension, the loaded library and the package are not one version;
--   * arguments travel as text[] and outcomes as jsonb through the jsonb_plpython3u
--     transform (no json module: the first call of a session is cheaper);
--   * calls honour pg_cancel_backend(), statement_timeout and pgraft.request_timeout;
--   * new: pgraft_launcher_status(), pgraft_stat_peers().
--
-- The functions are dropped and created again rather than altered: their argument types and
-- schema change. A view or function of your own that uses a pgraft function makes the
-- update fail with PostgreSQL's "other objects depend on it"; drop it, update, recreate it.

\echo Use "ALTER EXTENSION pgraft UPDATE TO '1.1'" to load this file. \quit

-- ------------------------------------------------------------------------- the 1.0 objects
DROP FUNCTION @extschema@.pgraft_add_node(int, text, int);
DROP FUNCTION @extschema@.pgraft_remove_node(int);
DROP FUNCTION @extschema@.pgraft_get_nodes();
DROP FUNCTION @extschema@.pgraft_get_leader();
DROP FUNCTION @extschema@.pgraft_get_term();
DROP FUNCTION @extschema@.pgraft_is_leader();
DROP FUNCTION @extschema@.pgraft_get_cluster_status();
DROP FUNCTION @extschema@.pgraft_transfer_leadership(int);
DROP FUNCTION @extschema@.pgraft_log_append(bytea);
DROP FUNCTION @extschema@.pgraft_replicate_entry(text);
DROP FUNCTION @extschema@.pgraft_log_get_entry(bigint);
DROP FUNCTION @extschema@.pgraft_log_get_stats();
DROP FUNCTION @extschema@.pgraft_kv_put(text, text);
DROP FUNCTION @extschema@.pgraft_kv_get(text);
DROP FUNCTION @extschema@.pgraft_kv_delete(text);
DROP FUNCTION @extschema@.pgraft_kv_list_keys();
DROP FUNCTION @extschema@.pgraft_get_version();
DROP FUNCTION @extschema@._pgraft_check(jsonb);
DROP FUNCTION @extschema@._pgraft_call(text, text, jsonb, bytea);
DROP FUNCTION @extschema@.pgraft_socket_path();

-- The extension itself now belongs to pg_catalog too (what \dx shows), as a new 1.1
-- installation does. pg_catalog is pinned, so no dependency on it is recorded.
DO $schema$
DECLARE
    ext oid := (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'pgraft');
BEGIN
    IF (SELECT extnamespace FROM pg_catalog.pg_extension WHERE oid = ext)
            <> 'pg_catalog'::regnamespace THEN
        UPDATE pg_catalog.pg_extension SET extnamespace = 'pg_catalog'::regnamespace
        WHERE oid = ext;
        DELETE FROM pg_catalog.pg_depend
        WHERE classid = 'pg_catalog.pg_extension'::regclass AND objid = ext
          AND refclassid = 'pg_catalog.pg_namespace'::regclass AND deptype = 'n';
    END IF;
END
$schema$;

-- ------------------------------------------------------------------------- internals
--
-- The public functions are SQL functions over two internal ones:
--   _pgraft_call()   PL/Python: hands the call to pgraft.pg.bridge, returns an outcome
--                    (jsonb; it never raises for a pgraft error, see the bridge);
--   _pgraft_result() C: the result of a good outcome, or the ereport() of a failed one with
--                    its SQLSTATE, DETAIL and HINT (and, for a cancelled call, PostgreSQL's
--                    own cancel error).
-- The public functions are SECURITY DEFINER (owned by the superuser who created the
-- extension) with a fixed search_path, so EXECUTE on them is the whole privilege check and
-- the internal functions are executable by no one else.

-- The node's Unix socket: pgraft.data_dir + '/node.sock' (computed in C).
CREATE FUNCTION pg_catalog.pgraft_socket_path() RETURNS text
    AS 'MODULE_PATHNAME', 'pgraft_socket_path'
    LANGUAGE C STABLE STRICT PARALLEL SAFE;

CREATE FUNCTION pg_catalog._pgraft_library_version() RETURNS text
    AS 'MODULE_PATHNAME', 'pgraft_library_version'
    LANGUAGE C STABLE STRICT PARALLEL SAFE;

-- pgraft.request_timeout in milliseconds (a user-settable setting of the library).
CREATE FUNCTION pg_catalog._pgraft_request_timeout() RETURNS int
    AS 'MODULE_PATHNAME', 'pgraft_request_timeout'
    LANGUAGE C STABLE STRICT PARALLEL SAFE;

CREATE FUNCTION pg_catalog._pgraft_result(outcome jsonb) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'pgraft_result'
    LANGUAGE C VOLATILE;  -- not STRICT: a NULL outcome is an error, not a NULL result

-- _pgraft_call(sql_version, what, op, args, data, timeout_ms): "sql_version" is this
-- script's version (compared with the package's and the library's), "what" prefixes error
-- messages, "op" names the call (pgraft.pg.bridge.OPS), "params" its arguments in SQL
-- order as text (not "args": PL/Python's own name for the list of all arguments), "data" the bytea argument of pgraft_log_append().
-- Once per session it makes pgraft importable: the site-packages of the environment whose
-- interpreter is pgraft.python (see `pgraft postgres install`), and keeps the bridge in GD.
CREATE FUNCTION pg_catalog._pgraft_call(sql_version text, what text, op text, params text[],
                                        data bytea, timeout_ms int)
    RETURNS jsonb
TRANSFORM FOR TYPE jsonb
LANGUAGE plpython3u VOLATILE AS $python$
bridge = GD.get("pgraft.bridge")
if bridge is None:
    import os
    import sys

    try:
        row = plpy.execute(
            "SELECT pg_catalog.pgraft_socket_path() AS socket, "
            "pg_catalog.current_setting('pgraft.python', true) AS python, "
            "pg_catalog._pgraft_library_version() AS library")[0]
    except plpy.SPIError as exc:
        # e.g. a cancel that arrived right now: raise PostgreSQL's error as it is (PL/Python
        # would prefix it with "spiexceptions.QueryCanceled:")
        return {"ok": False, "sqlstate": getattr(exc, "sqlstate", None) or "XX000",
                "message": str(exc.args[0]) if exc.args else str(exc),
                "detail": getattr(exc, "detail", None), "hint": getattr(exc, "hint", None)}
    python = row["python"] or ""
    here = "%d.%d" % sys.version_info[:2]
    root = os.path.dirname(os.path.dirname(python))
    site = os.path.join(root, "lib", "python" + here, "site-packages")
    hint = ("Run `pgraft postgres install` as root, or set pgraft.python to the interpreter "
            "of an environment built on Python %s where pgraft is installed." % here)
    try:
        with open(os.path.join(root, "pyvenv.cfg"), encoding="utf-8") as cfg:
            for line in cfg:
                key, _, value = line.partition("=")
                value = ".".join(value.strip().split(".")[:2])
                if key.strip() in ("version", "version_info") and value != here:
                    return {"ok": False, "sqlstate": "58000", "hint": hint, "detail": None,
                            "message": "pgraft: the environment of pgraft.python (%s) is "
                                       "Python %s, but PL/Python runs Python %s"
                                       % (python, value, here)}
    except OSError:
        pass  # not a venv: the import below says what is missing
    if site not in sys.path:
        sys.path.insert(0, site)
    try:
        from pgraft import __version__
        from pgraft.pg import bridge as module
    except ImportError as exc:
        return {"ok": False, "sqlstate": "58P01", "hint": hint,
                "message": "pgraft: PL/Python cannot import the pgraft package: %s" % exc,
                "detail": "Searched %s (from pgraft.python = %s)." % (site, python)}
    bridge = module.Bridge(row["socket"], refused=module.version_problem(
        sql_version, row["library"], __version__))
    GD["pgraft.bridge"] = bridge
return bridge.call(what, op, params, data, timeout_ms)
$python$;

-- ------------------------------------------------------------------------- membership

CREATE FUNCTION pg_catalog.pgraft_add_node(node_id bigint, address text, port int)
    RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT (pg_catalog._pgraft_result(pg_catalog._pgraft_call('1.1', 'cannot add node',
        'add_node', ARRAY[node_id::text, address, port::text], NULL,
        pg_catalog._pgraft_request_timeout())))::boolean;
END;
COMMENT ON FUNCTION pg_catalog.pgraft_add_node(bigint, text, int) IS
    'Add a node to the cluster (on the leader); true once the change is committed';

CREATE FUNCTION pg_catalog.pgraft_remove_node(node_id bigint) RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT (pg_catalog._pgraft_result(pg_catalog._pgraft_call('1.1', 'cannot remove node',
        'remove_node', ARRAY[node_id::text], NULL,
        pg_catalog._pgraft_request_timeout())))::boolean;
END;
COMMENT ON FUNCTION pg_catalog.pgraft_remove_node(bigint) IS
    'Remove a node from the cluster (on the leader); true once committed';

CREATE FUNCTION pg_catalog.pgraft_get_nodes()
    RETURNS TABLE(node_id bigint, address text, port int, role text, is_leader boolean)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT (n->>'node_id')::bigint, n->>'address', (n->>'port')::int, n->>'role',
           (n->>'is_leader')::boolean
    FROM pg_catalog.jsonb_array_elements(pg_catalog._pgraft_result(pg_catalog._pgraft_call(
        '1.1', 'cannot list nodes', 'get_nodes', NULL, NULL,
        pg_catalog._pgraft_request_timeout()))) AS n;
END;
COMMENT ON FUNCTION pg_catalog.pgraft_get_nodes() IS
    'Members of the cluster as this node knows them';

CREATE FUNCTION pg_catalog.pgraft_get_leader() RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT (pg_catalog._pgraft_result(pg_catalog._pgraft_call('1.1', 'cannot get the leader',
        'get_leader', NULL, NULL, pg_catalog._pgraft_request_timeout())))::bigint;
END;
COMMENT ON FUNCTION pg_catalog.pgraft_get_leader() IS
    'Id of the current leader, NULL when there is none';

CREATE FUNCTION pg_catalog.pgraft_get_term() RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT (pg_catalog._pgraft_result(pg_catalog._pgraft_call('1.1', 'cannot get the term',
        'get_term', NULL, NULL, pg_catalog._pgraft_request_timeout())))::bigint;
END;
COMMENT ON FUNCTION pg_catalog.pgraft_get_term() IS 'Current Raft term of this node';

CREATE FUNCTION pg_catalog.pgraft_is_leader() RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT (pg_catalog._pgraft_result(pg_catalog._pgraft_call('1.1',
        'cannot get the role of this node', 'is_leader', NULL, NULL,
        pg_catalog._pgraft_request_timeout())))::boolean;
END;
COMMENT ON FUNCTION pg_catalog.pgraft_is_leader() IS 'Whether this node is the leader';

CREATE FUNCTION pg_catalog.pgraft_get_cluster_status()
    RETURNS TABLE(node_id bigint, current_term bigint, leader_id bigint, state text,
                  num_nodes int, commit_index bigint, applied_index bigint, last_index bigint)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT (s->>'node_id')::bigint, (s->>'term')::bigint, (s->>'leader_id')::bigint,
           s->>'role', (s->>'num_nodes')::int, (s->>'commit_index')::bigint,
           (s->>'applied_index')::bigint, (s->>'last_index')::bigint
    FROM (SELECT pg_catalog._pgraft_result(pg_catalog._pgraft_call('1.1',
        'cannot get the cluster status', 'status', NULL, NULL,
        pg_catalog._pgraft_request_timeout())) AS s) AS status;
END;
COMMENT ON FUNCTION pg_catalog.pgraft_get_cluster_status() IS
    'This node''s view of the cluster';

CREATE FUNCTION pg_catalog.pgraft_transfer_leadership(node_id bigint) RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT (pg_catalog._pgraft_result(pg_catalog._pgraft_call('1.1',
        'cannot transfer leadership', 'transfer_leadership', ARRAY[node_id::text], NULL,
        pg_catalog._pgraft_request_timeout())))::boolean;
END;
COMMENT ON FUNCTION pg_catalog.pgraft_transfer_leadership(bigint) IS
    'Hand leadership to another voter (on the leader); true once it is leader';

CREATE FUNCTION pg_catalog.pgraft_stat_peers()
    RETURNS TABLE(node_id bigint, address text, port int, role text, connected boolean,
                  replication_state text, match_index bigint, next_index bigint,
                  lag_entries bigint, recent_active boolean)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT (p->>'node_id')::bigint, p->>'address', (p->>'port')::int, p->>'role',
           (p->>'connected')::boolean, p->>'replication_state',
           (p->>'match_index')::bigint, (p->>'next_index')::bigint,
           (p->>'lag_entries')::bigint, (p->>'recent_active')::boolean
    FROM pg_catalog.jsonb_array_elements(pg_catalog._pgraft_result(pg_catalog._pgraft_call(
        '1.1', 'cannot get the peers', 'stat_peers', NULL, NULL,
        pg_catalog._pgraft_request_timeout()))) AS p;
END;
COMMENT ON FUNCTION pg_catalog.pgraft_stat_peers() IS
    'The other members as this node sees them; replication columns on the leader only';

CREATE FUNCTION pg_catalog.pgraft_launcher_status()
    RETURNS TABLE(launcher_pid int, node_pid int, state text, restarts bigint,
                  started_at timestamptz, last_exit text, last_exit_at timestamptz,
                  next_start timestamptz, last_error text)
    AS 'MODULE_PATHNAME', 'pgraft_launcher_status'
    LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION pg_catalog.pgraft_launcher_status() IS
    'The "pgraft launcher" background worker and the node process it runs';

-- ------------------------------------------------------------------------- the log

CREATE FUNCTION pg_catalog.pgraft_log_append(data bytea) RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT (pg_catalog._pgraft_result(pg_catalog._pgraft_call('1.1',
        'cannot append to the log', 'append', NULL, data,
        pg_catalog._pgraft_request_timeout())))::bigint;
END;
COMMENT ON FUNCTION pg_catalog.pgraft_log_append(bytea) IS
    'Append an entry (on the leader); its index once committed';

CREATE FUNCTION pg_catalog.pgraft_replicate_entry(data text) RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT pg_catalog._pgraft_result(pg_catalog._pgraft_call('1.1', 'cannot replicate entry',
        'append', NULL, pg_catalog.convert_to(data, 'UTF8'),
        pg_catalog._pgraft_request_timeout())) IS NOT NULL;
END;
COMMENT ON FUNCTION pg_catalog.pgraft_replicate_entry(text) IS
    'Append a text entry (UTF-8) on the leader; true once committed';

CREATE FUNCTION pg_catalog.pgraft_log_get_entry(index bigint) RETURNS bytea
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT pg_catalog.decode(pg_catalog._pgraft_result(pg_catalog._pgraft_call('1.1',
        'cannot read log entry', 'get_entry', ARRAY[index::text], NULL,
        pg_catalog._pgraft_request_timeout())) #>> '{}', 'hex');
END;
COMMENT ON FUNCTION pg_catalog.pgraft_log_get_entry(bigint) IS
    'Data of the log entry at index, NULL if it is absent or compacted';

CREATE FUNCTION pg_catalog.pgraft_log_get_stats()
    RETURNS TABLE(first_index bigint, last_index bigint, commit_index bigint,
                  applied_index bigint, snapshot_index bigint, log_bytes bigint)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT (s->>'first_index')::bigint, (s->>'last_index')::bigint,
           (s->>'commit_index')::bigint, (s->>'applied_index')::bigint,
           (s->>'snapshot_index')::bigint, (s->>'log_bytes')::bigint
    FROM (SELECT pg_catalog._pgraft_result(pg_catalog._pgraft_call('1.1',
        'cannot get log statistics', 'log_stats', NULL, NULL,
        pg_catalog._pgraft_request_timeout())) AS s) AS stats;
END;
COMMENT ON FUNCTION pg_catalog.pgraft_log_get_stats() IS
    'Indexes and size of this node''s log';

-- ------------------------------------------------------------------------- key-value

CREATE FUNCTION pg_catalog.pgraft_kv_put(key text, value text) RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT (pg_catalog._pgraft_result(pg_catalog._pgraft_call('1.1', 'cannot put key',
        'kv_put', ARRAY[key, value], NULL, pg_catalog._pgraft_request_timeout())))::boolean;
END;
COMMENT ON FUNCTION pg_catalog.pgraft_kv_put(text, text) IS
    'Set a key (on the leader); true once committed';

CREATE FUNCTION pg_catalog.pgraft_kv_get(key text) RETURNS text
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT pg_catalog._pgraft_result(pg_catalog._pgraft_call('1.1', 'cannot get key',
        'kv_get', ARRAY[key], NULL, pg_catalog._pgraft_request_timeout())) #>> '{}';
END;
COMMENT ON FUNCTION pg_catalog.pgraft_kv_get(text) IS
    'Linearizable read of a key; NULL if absent';

CREATE FUNCTION pg_catalog.pgraft_kv_delete(key text) RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT (pg_catalog._pgraft_result(pg_catalog._pgraft_call('1.1', 'cannot delete key',
        'kv_delete', ARRAY[key], NULL, pg_catalog._pgraft_request_timeout())))::boolean;
END;
COMMENT ON FUNCTION pg_catalog.pgraft_kv_delete(text) IS
    'Delete a key (on the leader); true if it existed';

CREATE FUNCTION pg_catalog.pgraft_kv_list_keys() RETURNS SETOF text
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT k FROM pg_catalog.jsonb_array_elements_text(pg_catalog._pgraft_result(
        pg_catalog._pgraft_call('1.1', 'cannot list keys', 'kv_list_keys', NULL, NULL,
        pg_catalog._pgraft_request_timeout()))) AS k;
END;
COMMENT ON FUNCTION pg_catalog.pgraft_kv_list_keys() IS 'All keys, sorted (linearizable)';

CREATE FUNCTION pg_catalog.pgraft_get_version() RETURNS text
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT pg_catalog._pgraft_result(pg_catalog._pgraft_call('1.1', 'cannot get the version',
        'version', NULL, NULL, pg_catalog._pgraft_request_timeout())) #>> '{}';
END;
COMMENT ON FUNCTION pg_catalog.pgraft_get_version() IS
    'Version of the pgraft package the functions use';

-- ------------------------------------------------------------------------- privileges
-- Nothing is executable by PUBLIC.
--   pgraft_admin:     everything (membership, writes, reads).
--   pg_monitor:       the cluster's shape and health (nodes, leader, term, status, peers,
--                     launcher, log stats, version, socket path).
--   pg_read_all_data: that, and the replicated data (KV values, log entries).
-- The internal functions (_pgraft_*) are for the functions above only.
REVOKE ALL ON FUNCTION
    pg_catalog.pgraft_socket_path(), pg_catalog._pgraft_library_version(),
    pg_catalog._pgraft_request_timeout(), pg_catalog._pgraft_result(jsonb),
    pg_catalog._pgraft_call(text, text, text, text[], bytea, int),
    pg_catalog.pgraft_add_node(bigint, text, int), pg_catalog.pgraft_remove_node(bigint),
    pg_catalog.pgraft_get_nodes(), pg_catalog.pgraft_get_leader(),
    pg_catalog.pgraft_get_term(), pg_catalog.pgraft_is_leader(),
    pg_catalog.pgraft_get_cluster_status(), pg_catalog.pgraft_transfer_leadership(bigint),
    pg_catalog.pgraft_stat_peers(), pg_catalog.pgraft_launcher_status(),
    pg_catalog.pgraft_log_append(bytea), pg_catalog.pgraft_replicate_entry(text),
    pg_catalog.pgraft_log_get_entry(bigint), pg_catalog.pgraft_log_get_stats(),
    pg_catalog.pgraft_kv_put(text, text), pg_catalog.pgraft_kv_get(text),
    pg_catalog.pgraft_kv_delete(text), pg_catalog.pgraft_kv_list_keys(),
    pg_catalog.pgraft_get_version()
FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
    pg_catalog.pgraft_add_node(bigint, text, int), pg_catalog.pgraft_remove_node(bigint),
    pg_catalog.pgraft_transfer_leadership(bigint),
    pg_catalog.pgraft_log_append(bytea), pg_catalog.pgraft_replicate_entry(text),
    pg_catalog.pgraft_kv_put(text, text), pg_catalog.pgraft_kv_delete(text)
TO pgraft_admin;

GRANT EXECUTE ON FUNCTION
    pg_catalog.pgraft_socket_path(),
    pg_catalog.pgraft_get_nodes(), pg_catalog.pgraft_get_leader(),
    pg_catalog.pgraft_get_term(), pg_catalog.pgraft_is_leader(),
    pg_catalog.pgraft_get_cluster_status(), pg_catalog.pgraft_stat_peers(),
    pg_catalog.pgraft_launcher_status(), pg_catalog.pgraft_log_get_stats(),
    pg_catalog.pgraft_get_version()
TO pgraft_admin, pg_monitor, pg_read_all_data;

GRANT EXECUTE ON FUNCTION
    pg_catalog.pgraft_log_get_entry(bigint), pg_catalog.pgraft_kv_get(text),
    pg_catalog.pgraft_kv_list_keys()
TO pgraft_admin, pg_read_all_data;
