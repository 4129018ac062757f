-- pgraft 1.0: the SQL API of pgraft. Every function is a thin PL/Python wrapper over
-- pgraft.Client, talking to this server's pgraft node over its Unix socket
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

-- The node's Unix socket: pgraft.data_dir (relative to the data directory) + '/node.sock'.
-- Computed in C, so callers never need to read data_directory.
CREATE FUNCTION pgraft_socket_path() RETURNS text
    AS 'MODULE_PATHNAME', 'pgraft_socket_path'
    LANGUAGE C STABLE STRICT PARALLEL SAFE;

-- Once per session: make the pgraft package importable (site-packages of the environment
-- whose interpreter is pgraft.python, see `pgraft postgres install`) and keep, in GD, the
-- bridge that every function below calls. Errors become ereport-style errors: the
-- SQLSTATE of the pgraft error kind, a message prefixed with what failed, and its HINT.
CREATE FUNCTION _pgraft_setup() RETURNS void
LANGUAGE plpython3u VOLATILE AS $python$
import os
import sys

sock = plpy.execute("SELECT @extschema@.pgraft_socket_path() AS p")[0]["p"]
python = plpy.execute(
    "SELECT pg_catalog.current_setting('pgraft.python') AS p")[0]["p"]
here = "%d.%d" % sys.version_info[:2]
root = os.path.dirname(os.path.dirname(python))
site = os.path.join(root, "lib", "python" + here, "site-packages")
install_hint = ("run `pgraft postgres install` as root, or set pgraft.python to the "
                "interpreter of an environment built on Python %s where pgraft is installed"
                % here)
cfg = os.path.join(root, "pyvenv.cfg")
if os.path.isfile(cfg):
    version = None
    with open(cfg, encoding="utf-8") as f:
        for line in f:
            key, _, value = line.partition("=")
            if key.strip() in ("version", "version_info"):
                version = value.strip()
    if version and ".".join(version.split(".")[:2]) != here:
        plpy.error("pgraft: the environment of pgraft.python (%s) is Python %s, but "
                   "PL/Python runs Python %s" % (python, version, here),
                   hint=install_hint, sqlstate="58000")
if os.path.isdir(site) and site not in sys.path:
    sys.path.insert(0, site)
try:
    import pgraft
    from pgraft.errors import ConnectionFailed, NotLeaderError, PgraftError
except ImportError as exc:
    plpy.error("pgraft: PL/Python cannot import the pgraft package: %s" % exc,
               detail="searched %s (from pgraft.python = %s)" % (site, python),
               hint=install_hint, sqlstate="58P01")

TIMEOUT = 10.0


class Bridge:
    """One pgraft.Client per session, reconnecting after the node restarted."""

    def __init__(self, socket_path):
        self.socket_path = socket_path
        self.client = None
        self.version = pgraft.__version__

    def _fail(self, message, sqlstate, hint=None, detail=None):
        extra = {"sqlstate": sqlstate}
        if hint:
            extra["hint"] = hint
        if detail:
            extra["detail"] = detail
        plpy.error(message, **extra)

    def call(self, what, op, **args):
        for name, value in args.items():
            if value is None:
                self._fail("%s: %s must not be NULL" % (what, name), "22004",
                           hint="pass a value for %s" % name)
        if self.client is None:
            self.client = pgraft.Client(self.socket_path, timeout=TIMEOUT)
        try:
            return getattr(self.client, op)(*args.values())
        except NotLeaderError as exc:
            node = exc.node_id or self.client.node_id
            who = "this node (%s)" % node if node else "this node"
            self._fail("%s: %s is not the leader" % (what, who), exc.sqlstate, hint=exc.hint)
        except ConnectionFailed as exc:
            self.close()
            self._fail("%s: the pgraft node of this server is not running or not reachable"
                       % what, exc.sqlstate, detail=exc.message,
                       hint="check that shared_preload_libraries includes 'pgraft' and "
                            "pgraft.node_id is set, and look for \"pgraft launcher\" in "
                            "the server log")
        except PgraftError as exc:
            self._fail("%s: %s" % (what, exc.message), exc.sqlstate, hint=exc.hint)

    def close(self):
        client, self.client = self.client, None
        if client is not None:
            try:
                client.close()
            except PgraftError:
                pass


GD["pgraft"] = Bridge(sock)
$python$;

-- ------------------------------------------------------------------------- membership

CREATE FUNCTION pgraft_add_node(node_id int, address text, port int) RETURNS boolean
LANGUAGE plpython3u VOLATILE AS $python$
if "pgraft" not in GD:
    plpy.execute("SELECT @extschema@._pgraft_setup()")
return GD["pgraft"].call("cannot add node", "add_node",
                         node_id=node_id, address=address, port=port)
$python$;
COMMENT ON FUNCTION pgraft_add_node(int, text, int) IS
    'Add a node to the cluster (on the leader only); true once the change is committed';

CREATE FUNCTION pgraft_remove_node(node_id int) RETURNS boolean
LANGUAGE plpython3u VOLATILE AS $python$
if "pgraft" not in GD:
    plpy.execute("SELECT @extschema@._pgraft_setup()")
return GD["pgraft"].call("cannot remove node", "remove_node", node_id=node_id)
$python$;
COMMENT ON FUNCTION pgraft_remove_node(int) IS
    'Remove a node from the cluster (on the leader only); true once committed';

CREATE FUNCTION pgraft_get_nodes()
    RETURNS TABLE(node_id int, address text, port int, role text, is_leader boolean)
LANGUAGE plpython3u VOLATILE AS $python$
if "pgraft" not in GD:
    plpy.execute("SELECT @extschema@._pgraft_setup()")
nodes = GD["pgraft"].call("cannot list nodes", "get_nodes")
return [(n.node_id, n.address, n.port, n.role, n.is_leader) for n in nodes]
$python$;
COMMENT ON FUNCTION pgraft_get_nodes() IS 'Members of the cluster as this node knows them';

CREATE FUNCTION pgraft_get_leader() RETURNS bigint
LANGUAGE plpython3u VOLATILE AS $python$
if "pgraft" not in GD:
    plpy.execute("SELECT @extschema@._pgraft_setup()")
return GD["pgraft"].call("cannot get the leader", "get_leader")
$python$;
COMMENT ON FUNCTION pgraft_get_leader() IS 'Id of the current leader, NULL when there is none';

CREATE FUNCTION pgraft_get_term() RETURNS bigint
LANGUAGE plpython3u VOLATILE AS $python$
if "pgraft" not in GD:
    plpy.execute("SELECT @extschema@._pgraft_setup()")
return GD["pgraft"].call("cannot get the term", "get_term")
$python$;
COMMENT ON FUNCTION pgraft_get_term() IS 'Current Raft term of this node';

CREATE FUNCTION pgraft_is_leader() RETURNS boolean
LANGUAGE plpython3u VOLATILE AS $python$
if "pgraft" not in GD:
    plpy.execute("SELECT @extschema@._pgraft_setup()")
return GD["pgraft"].call("cannot get the role of this node", "is_leader")
$python$;
COMMENT ON FUNCTION pgraft_is_leader() IS 'Whether this node is the leader';

CREATE FUNCTION pgraft_get_cluster_status()
    RETURNS TABLE(node_id int, current_term bigint, leader_id bigint, state text,
                  num_nodes int, commit_index bigint, applied_index bigint, last_index bigint)
LANGUAGE plpython3u VOLATILE AS $python$
if "pgraft" not in GD:
    plpy.execute("SELECT @extschema@._pgraft_setup()")
s = GD["pgraft"].call("cannot get the cluster status", "status")
return [(s["node_id"], s["term"], s["leader_id"], s["role"], s["num_nodes"],
         s["commit_index"], s["applied_index"], s["last_index"])]
$python$;
COMMENT ON FUNCTION pgraft_get_cluster_status() IS 'This node''s view of the cluster';

CREATE FUNCTION pgraft_transfer_leadership(node_id int) RETURNS boolean
LANGUAGE plpython3u VOLATILE AS $python$
if "pgraft" not in GD:
    plpy.execute("SELECT @extschema@._pgraft_setup()")
return GD["pgraft"].call("cannot transfer leadership", "transfer_leadership",
                         node_id=node_id)
$python$;
COMMENT ON FUNCTION pgraft_transfer_leadership(int) IS
    'Hand leadership to another voter (on the leader); true once it is leader';

-- ------------------------------------------------------------------------- the log

CREATE FUNCTION pgraft_log_append(data bytea) RETURNS bigint
LANGUAGE plpython3u VOLATILE AS $python$
if "pgraft" not in GD:
    plpy.execute("SELECT @extschema@._pgraft_setup()")
return GD["pgraft"].call("cannot append to the log", "append", data=data)
$python$;
COMMENT ON FUNCTION pgraft_log_append(bytea) IS
    'Append an entry (on the leader); its index once committed';

CREATE FUNCTION pgraft_replicate_entry(data text) RETURNS boolean
LANGUAGE plpython3u VOLATILE AS $python$
if "pgraft" not in GD:
    plpy.execute("SELECT @extschema@._pgraft_setup()")
GD["pgraft"].call("cannot replicate entry", "append",
                  data=None if data is None else data.encode("utf-8"))
return True
$python$;
COMMENT ON FUNCTION pgraft_replicate_entry(text) IS
    'Append a text entry (UTF-8) on the leader; true once committed';

CREATE FUNCTION pgraft_log_get_entry(index bigint) RETURNS bytea
LANGUAGE plpython3u VOLATILE AS $python$
if "pgraft" not in GD:
    plpy.execute("SELECT @extschema@._pgraft_setup()")
entry = GD["pgraft"].call("cannot read log entry", "get_entry", index=index)
return None if entry is None else entry["data"]
$python$;
COMMENT ON FUNCTION pgraft_log_get_entry(bigint) IS
    'Data of the log entry at index, NULL if it is absent or compacted';

CREATE FUNCTION pgraft_log_get_stats()
    RETURNS TABLE(first_index bigint, last_index bigint, commit_index bigint,
                  applied_index bigint, snapshot_index bigint, log_bytes bigint)
LANGUAGE plpython3u VOLATILE AS $python$
if "pgraft" not in GD:
    plpy.execute("SELECT @extschema@._pgraft_setup()")
s = GD["pgraft"].call("cannot get log statistics", "log_stats")
return [(s["first_index"], s["last_index"], s["commit_index"], s["applied_index"],
         s["snapshot_index"], s["log_bytes"])]
$python$;
COMMENT ON FUNCTION pgraft_log_get_stats() IS 'Indexes and size of this node''s log';

-- ------------------------------------------------------------------------- key-value

CREATE FUNCTION pgraft_kv_put(key text, value text) RETURNS boolean
LANGUAGE plpython3u VOLATILE AS $python$
if "pgraft" not in GD:
    plpy.execute("SELECT @extschema@._pgraft_setup()")
return GD["pgraft"].call("cannot put key", "kv_put", key=key, value=value)
$python$;
COMMENT ON FUNCTION pgraft_kv_put(text, text) IS
    'Set a key (on the leader); true once committed';

CREATE FUNCTION pgraft_kv_get(key text) RETURNS text
LANGUAGE plpython3u VOLATILE AS $python$
if "pgraft" not in GD:
    plpy.execute("SELECT @extschema@._pgraft_setup()")
return GD["pgraft"].call("cannot get key", "kv_get", key=key)
$python$;
COMMENT ON FUNCTION pgraft_kv_get(text) IS 'Linearizable read of a key; NULL if absent';

CREATE FUNCTION pgraft_kv_delete(key text) RETURNS boolean
LANGUAGE plpython3u VOLATILE AS $python$
if "pgraft" not in GD:
    plpy.execute("SELECT @extschema@._pgraft_setup()")
return GD["pgraft"].call("cannot delete key", "kv_delete", key=key)
$python$;
COMMENT ON FUNCTION pgraft_kv_delete(text) IS
    'Delete a key (on the leader); true if it existed';

CREATE FUNCTION pgraft_kv_list_keys() RETURNS SETOF text
LANGUAGE plpython3u VOLATILE AS $python$
if "pgraft" not in GD:
    plpy.execute("SELECT @extschema@._pgraft_setup()")
return GD["pgraft"].call("cannot list keys", "kv_list_keys")
$python$;
COMMENT ON FUNCTION pgraft_kv_list_keys() IS 'All keys, sorted (linearizable)';

CREATE FUNCTION pgraft_get_version() RETURNS text
LANGUAGE plpython3u VOLATILE AS $python$
if "pgraft" not in GD:
    plpy.execute("SELECT @extschema@._pgraft_setup()")
return GD["pgraft"].version
$python$;
COMMENT ON FUNCTION pgraft_get_version() IS 'Version of the pgraft package the functions use';

-- ------------------------------------------------------------------------- privileges
-- Nothing is executable by PUBLIC.
--   pgraft_admin: everything (membership, writes, reads).
--   pg_monitor:   the cluster's shape and health (nodes, leader, term, status, log stats,
--                 version).
--   pg_read_all_data: also the replicated data (KV values, log entries).
REVOKE ALL ON FUNCTION
    pgraft_socket_path(), _pgraft_setup(),
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
    pgraft_socket_path(), _pgraft_setup(),
    pgraft_get_nodes(), pgraft_get_leader(), pgraft_get_term(), pgraft_is_leader(),
    pgraft_get_cluster_status(), pgraft_log_get_stats(), pgraft_get_version()
TO pgraft_admin, pg_monitor, pg_read_all_data;

GRANT EXECUTE ON FUNCTION
    pgraft_log_get_entry(bigint), pgraft_kv_get(text), pgraft_kv_list_keys()
TO pgraft_admin, pg_read_all_data;
