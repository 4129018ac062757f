-- pgraft 1.0: the SQL API of pgraft. Every function is a thin wrapper over pgraft.Client
-- (through PL/Python), talking to this server's pgraft node over its Unix socket
-- (pgraft_socket_path()). The node is started by the "pgraft launcher" background worker
-- (shared_preload_libraries = 'pgraft'); see postgres/README.md.

\echo Use "CREATE EXTENSION pgraft CASCADE" to load this file. \quit

-- Role for the functions that change the cluster or write to it. Roles are global objects,
-- so it may already exist (another database, an earlier installation): create it only if not.
DO $setup$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgraft_admin') THEN
        CREATE ROLE pgraft_admin NOLOGIN;
    END IF;
END
$setup$;

-- ------------------------------------------------------------------------- internals
--
-- PL/Python reports an exception it raises as "ERROR: <type>: <message>". To give callers
-- clean ereport-style errors (ERROR: cannot add node: this node (2) is not the leader /
-- HINT: ...), the one PL/Python function never raises for pgraft errors: it returns a jsonb
-- outcome, and _pgraft_check() raises it from PL/pgSQL with its SQLSTATE, DETAIL and HINT.
-- The public functions are SQL functions over the two. They are SECURITY DEFINER (owned by
-- the superuser who created the extension) with a fixed search_path, so EXECUTE on them is
-- the whole privilege check and the internal functions are executable by no one else.

-- The node's Unix socket: pgraft.data_dir (relative to the data directory) + '/node.sock'.
-- Computed in C, so callers never need to read data_directory.
CREATE FUNCTION pgraft_socket_path() RETURNS text
    AS 'MODULE_PATHNAME', 'pgraft_socket_path'
    LANGUAGE C STABLE STRICT PARALLEL SAFE;

-- _pgraft_call(what, op, params, data) -> {"ok": true, "result": ...} or
-- {"ok": false, "sqlstate", "message", "detail", "hint"}. "what" prefixes error messages;
-- "op" is a pgraft.Client method; "params" its [name, value] arguments (a NULL is reported
-- by name);
-- "data" a bytea argument (bytea results come back as hex).
-- Once per session it makes pgraft importable: the site-packages of the environment whose
-- interpreter is pgraft.python (see `pgraft postgres install`), and keeps the client in GD.
CREATE FUNCTION _pgraft_call(what text, op text, params jsonb, data bytea DEFAULT NULL)
    RETURNS jsonb
LANGUAGE plpython3u VOLATILE AS $python$
import json

bridge = GD.get("pgraft")
if bridge is None:
    import os
    import sys

    def setup_error(message, sqlstate, hint=None, detail=None):
        return {"ok": False, "message": message, "sqlstate": sqlstate, "hint": hint,
                "detail": detail}

    def setup():
        sock = plpy.execute("SELECT @extschema@.pgraft_socket_path() AS p")[0]["p"]
        python = plpy.execute(
            "SELECT pg_catalog.current_setting('pgraft.python') AS p")[0]["p"]
        here = "%d.%d" % sys.version_info[:2]
        root = os.path.dirname(os.path.dirname(python))
        site = os.path.join(root, "lib", "python" + here, "site-packages")
        install_hint = ("run `pgraft postgres install` as root, or set pgraft.python to the "
                        "interpreter of an environment built on Python %s where pgraft is "
                        "installed" % here)
        cfg = os.path.join(root, "pyvenv.cfg")
        if os.path.isfile(cfg):
            version = None
            with open(cfg, encoding="utf-8") as f:
                for line in f:
                    key, _, value = line.partition("=")
                    if key.strip() in ("version", "version_info"):
                        version = value.strip()
            if version and ".".join(version.split(".")[:2]) != here:
                return None, setup_error(
                    "pgraft: the environment of pgraft.python (%s) is Python %s, but "
                    "PL/Python runs Python %s" % (python, version, here), "58000",
                    hint=install_hint)
        if os.path.isdir(site) and site not in sys.path:
            sys.path.insert(0, site)
        try:
            import pgraft
            from pgraft.errors import (
                ConnectionFailed,
                InvalidArgument,
                NotLeaderError,
                PayloadTooLarge,
                PgraftError,
            )
        except ImportError as exc:
            return None, setup_error(
                "pgraft: PL/Python cannot import the pgraft package: %s" % exc, "58P01",
                hint=install_hint,
                detail="searched %s (from pgraft.python = %s)" % (site, python))

        fallback_hints = [
            (PayloadTooLarge, "keep keys, values and entries under the limit; store large "
                              "data elsewhere and replicate a reference to it"),
            (InvalidArgument, "see the function's signature in the pgraft documentation"),
        ]

        def failure(message, exc, hint=None, detail=None):
            if hint is None:
                hint = exc.hint or next((h for cls, h in fallback_hints
                                         if isinstance(exc, cls)), None)
            return {"ok": False, "message": message, "sqlstate": exc.sqlstate,
                    "hint": hint, "detail": detail}

        def shape(op, result):
            if op == "get_nodes":
                return [{"node_id": n.node_id, "address": n.address, "port": n.port,
                         "role": n.role, "is_leader": n.is_leader} for n in result]
            if op == "status":
                keys = ("node_id", "term", "leader_id", "role", "num_nodes", "commit_index",
                        "applied_index", "last_index")
                return {k: result.get(k) for k in keys}
            if op == "get_entry":
                return None if result is None else bytes(result["data"]).hex()
            return result

        class Bridge:
            """One pgraft.Client per session; it reconnects after the node restarted."""

            timeout = 10.0

            def __init__(self):
                self.client = None

            def call(self, what, op, args, data):
                if op == "version":
                    return {"ok": True, "result": pgraft.__version__}
                for name, value in args:
                    if value is None:
                        return {"ok": False, "sqlstate": "22004",
                                "message": "%s: %s must not be NULL" % (what, name),
                                "hint": "pass a value for %s" % name, "detail": None}
                if self.client is None:
                    self.client = pgraft.Client(sock, timeout=self.timeout)
                try:
                    result = getattr(self.client, op)(*[v for _, v in args])
                except NotLeaderError as exc:
                    node = exc.node_id or self.client.node_id
                    who = "this node (%s)" % node if node else "this node"
                    return failure("%s: %s is not the leader" % (what, who), exc)
                except ConnectionFailed as exc:
                    self.close()
                    return failure(
                        "%s: the pgraft node of this server is not running or not reachable"
                        % what, exc, detail=exc.message,
                        hint="check that shared_preload_libraries includes 'pgraft' and "
                             "pgraft.node_id is set, and look for \"pgraft launcher\" in "
                             "the server log")
                except PgraftError as exc:
                    return failure("%s: %s" % (what, exc.message), exc)
                return {"ok": True, "result": shape(op, result)}

            def close(self):
                client, self.client = self.client, None
                if client is not None:
                    try:
                        client.close()
                    except PgraftError:
                        pass

        return Bridge(), None

    bridge, error = setup()
    if bridge is None:
        return json.dumps(error)
    GD["pgraft"] = bridge

pairs = json.loads(params) if params else []
if data is not None or op == "append":
    pairs.append(["data", data])
return json.dumps(bridge.call(what, op, pairs, data))
$python$;

-- Raise a failed outcome of _pgraft_call() as an ereport-style error; return the result of
-- a good one (JSON null as SQL NULL).
CREATE FUNCTION _pgraft_check(outcome jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $plpgsql$
DECLARE
    code text := coalesce(outcome->>'sqlstate', 'XX000');
    msg text := coalesce(outcome->>'message', 'pgraft: unknown error');
    detail text := outcome->>'detail';
    hint text := outcome->>'hint';
BEGIN
    IF (outcome->>'ok')::boolean THEN
        RETURN nullif(outcome->'result', 'null'::jsonb);
    END IF;
    IF detail IS NOT NULL AND hint IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = code, MESSAGE = msg, DETAIL = detail, HINT = hint;
    ELSIF hint IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = code, MESSAGE = msg, HINT = hint;
    ELSIF detail IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = code, MESSAGE = msg, DETAIL = detail;
    ELSE
        RAISE EXCEPTION USING ERRCODE = code, MESSAGE = msg;
    END IF;
END
$plpgsql$;

-- ------------------------------------------------------------------------- membership

CREATE FUNCTION pgraft_add_node(node_id int, address text, port int) RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT (@extschema@._pgraft_check(@extschema@._pgraft_call('cannot add node', 'add_node',
        jsonb_build_array(jsonb_build_array('node_id', node_id),
                          jsonb_build_array('address', address),
                          jsonb_build_array('port', port)))))::boolean;
END;
COMMENT ON FUNCTION pgraft_add_node(int, text, int) IS
    'Add a node to the cluster (on the leader only); true once the change is committed';

CREATE FUNCTION pgraft_remove_node(node_id int) RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT (@extschema@._pgraft_check(@extschema@._pgraft_call('cannot remove node',
        'remove_node', jsonb_build_array(jsonb_build_array('node_id', node_id)))))::boolean;
END;
COMMENT ON FUNCTION pgraft_remove_node(int) IS
    'Remove a node from the cluster (on the leader only); true once committed';

CREATE FUNCTION pgraft_get_nodes()
    RETURNS TABLE(node_id int, address text, port int, role text, is_leader boolean)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT (n->>'node_id')::int, n->>'address', (n->>'port')::int, n->>'role',
           (n->>'is_leader')::boolean
    FROM jsonb_array_elements(@extschema@._pgraft_check(@extschema@._pgraft_call(
        'cannot list nodes', 'get_nodes', '[]'))) AS n;
END;
COMMENT ON FUNCTION pgraft_get_nodes() IS 'Members of the cluster as this node knows them';

CREATE FUNCTION pgraft_get_leader() RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT (@extschema@._pgraft_check(@extschema@._pgraft_call('cannot get the leader',
        'get_leader', '[]')))::bigint;
END;
COMMENT ON FUNCTION pgraft_get_leader() IS 'Id of the current leader, NULL when there is none';

CREATE FUNCTION pgraft_get_term() RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT (@extschema@._pgraft_check(@extschema@._pgraft_call('cannot get the term',
        'get_term', '[]')))::bigint;
END;
COMMENT ON FUNCTION pgraft_get_term() IS 'Current Raft term of this node';

CREATE FUNCTION pgraft_is_leader() RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT (@extschema@._pgraft_check(@extschema@._pgraft_call(
        'cannot get the role of this node', 'is_leader', '[]')))::boolean;
END;
COMMENT ON FUNCTION pgraft_is_leader() IS 'Whether this node is the leader';

CREATE FUNCTION pgraft_get_cluster_status()
    RETURNS TABLE(node_id int, current_term bigint, leader_id bigint, state text,
                  num_nodes int, commit_index bigint, applied_index bigint, last_index bigint)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT (s->>'node_id')::int, (s->>'term')::bigint, (s->>'leader_id')::bigint,
           s->>'role', (s->>'num_nodes')::int, (s->>'commit_index')::bigint,
           (s->>'applied_index')::bigint, (s->>'last_index')::bigint
    FROM (SELECT @extschema@._pgraft_check(@extschema@._pgraft_call(
        'cannot get the cluster status', 'status', '[]')) AS s) AS status;
END;
COMMENT ON FUNCTION pgraft_get_cluster_status() IS 'This node''s view of the cluster';

CREATE FUNCTION pgraft_transfer_leadership(node_id int) RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT (@extschema@._pgraft_check(@extschema@._pgraft_call('cannot transfer leadership',
        'transfer_leadership',
        jsonb_build_array(jsonb_build_array('node_id', node_id)))))::boolean;
END;
COMMENT ON FUNCTION pgraft_transfer_leadership(int) IS
    'Hand leadership to another voter (on the leader); true once it is leader';

-- ------------------------------------------------------------------------- the log

CREATE FUNCTION pgraft_log_append(data bytea) RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT (@extschema@._pgraft_check(@extschema@._pgraft_call('cannot append to the log',
        'append', '[]', data)))::bigint;
END;
COMMENT ON FUNCTION pgraft_log_append(bytea) IS
    'Append an entry (on the leader); its index once committed';

CREATE FUNCTION pgraft_replicate_entry(data text) RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT @extschema@._pgraft_check(@extschema@._pgraft_call('cannot replicate entry',
        'append', '[]', convert_to(data, 'UTF8'))) IS NOT NULL;
END;
COMMENT ON FUNCTION pgraft_replicate_entry(text) IS
    'Append a text entry (UTF-8) on the leader; true once committed';

CREATE FUNCTION pgraft_log_get_entry(index bigint) RETURNS bytea
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT decode(@extschema@._pgraft_check(@extschema@._pgraft_call('cannot read log entry',
        'get_entry', jsonb_build_array(jsonb_build_array('index', index)))) #>> '{}', 'hex');
END;
COMMENT ON FUNCTION pgraft_log_get_entry(bigint) IS
    'Data of the log entry at index, NULL if it is absent or compacted';

CREATE FUNCTION pgraft_log_get_stats()
    RETURNS TABLE(first_index bigint, last_index bigint, commit_index bigint,
                  applied_index bigint, snapshot_index bigint, log_bytes bigint)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT (s->>'first_index')::bigint, (s->>'last_index')::bigint,
           (s->>'commit_index')::bigint, (s->>'applied_index')::bigint,
           (s->>'snapshot_index')::bigint, (s->>'log_bytes')::bigint
    FROM (SELECT @extschema@._pgraft_check(@extschema@._pgraft_call(
        'cannot get log statistics', 'log_stats', '[]')) AS s) AS stats;
END;
COMMENT ON FUNCTION pgraft_log_get_stats() IS 'Indexes and size of this node''s log';

-- ------------------------------------------------------------------------- key-value

CREATE FUNCTION pgraft_kv_put(key text, value text) RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT (@extschema@._pgraft_check(@extschema@._pgraft_call('cannot put key', 'kv_put',
        jsonb_build_array(jsonb_build_array('key', key),
                          jsonb_build_array('value', value)))))::boolean;
END;
COMMENT ON FUNCTION pgraft_kv_put(text, text) IS
    'Set a key (on the leader); true once committed';

CREATE FUNCTION pgraft_kv_get(key text) RETURNS text
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT @extschema@._pgraft_check(@extschema@._pgraft_call('cannot get key', 'kv_get',
        jsonb_build_array(jsonb_build_array('key', key)))) #>> '{}';
END;
COMMENT ON FUNCTION pgraft_kv_get(text) IS 'Linearizable read of a key; NULL if absent';

CREATE FUNCTION pgraft_kv_delete(key text) RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT (@extschema@._pgraft_check(@extschema@._pgraft_call('cannot delete key',
        'kv_delete', jsonb_build_array(jsonb_build_array('key', key)))))::boolean;
END;
COMMENT ON FUNCTION pgraft_kv_delete(text) IS
    'Delete a key (on the leader); true if it existed';

CREATE FUNCTION pgraft_kv_list_keys() RETURNS SETOF text
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT k FROM jsonb_array_elements_text(@extschema@._pgraft_check(
        @extschema@._pgraft_call('cannot list keys', 'kv_list_keys', '[]'))) AS k;
END;
COMMENT ON FUNCTION pgraft_kv_list_keys() IS 'All keys, sorted (linearizable)';

CREATE FUNCTION pgraft_get_version() RETURNS text
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT @extschema@._pgraft_check(@extschema@._pgraft_call('cannot get the version',
        'version', '[]')) #>> '{}';
END;
COMMENT ON FUNCTION pgraft_get_version() IS 'Version of the pgraft package the functions use';

-- ------------------------------------------------------------------------- privileges
-- Nothing is executable by PUBLIC.
--   pgraft_admin:     everything (membership, writes, reads).
--   pg_monitor:       the cluster's shape and health (nodes, leader, term, status, log
--                     stats, version, socket path).
--   pg_read_all_data: that, and the replicated data (KV values, log entries).
-- _pgraft_call() and _pgraft_check() are for the functions above only.
REVOKE ALL ON FUNCTION
    pgraft_socket_path(), _pgraft_call(text, text, jsonb, bytea), _pgraft_check(jsonb),
    pgraft_add_node(int, text, int), pgraft_remove_node(int), pgraft_get_nodes(),
    pgraft_get_leader(), pgraft_get_term(), pgraft_is_leader(), pgraft_get_cluster_status(),
    pgraft_transfer_leadership(int),
    pgraft_log_append(bytea), pgraft_replicate_entry(text), pgraft_log_get_entry(bigint),
    pgraft_log_get_stats(),
    pgraft_kv_put(text, text), pgraft_kv_get(text), pgraft_kv_delete(text),
    pgraft_kv_list_keys(), pgraft_get_version()
FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
    pgraft_add_node(int, text, int), pgraft_remove_node(int),
    pgraft_transfer_leadership(int),
    pgraft_log_append(bytea), pgraft_replicate_entry(text),
    pgraft_kv_put(text, text), pgraft_kv_delete(text)
TO pgraft_admin;

GRANT EXECUTE ON FUNCTION
    pgraft_socket_path(),
    pgraft_get_nodes(), pgraft_get_leader(), pgraft_get_term(), pgraft_is_leader(),
    pgraft_get_cluster_status(), pgraft_log_get_stats(), pgraft_get_version()
TO pgraft_admin, pg_monitor, pg_read_all_data;

GRANT EXECUTE ON FUNCTION
    pgraft_log_get_entry(bigint), pgraft_kv_get(text), pgraft_kv_list_keys()
TO pgraft_admin, pg_read_all_data;
