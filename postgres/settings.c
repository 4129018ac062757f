/*
 * settings.c -- the pgraft.* settings (GUCs): their definitions, the check hooks that
 * validate each value (syntax and ranges), and the validation of the whole at server start.
 *
 * Settings are validated by check hooks and, at server start, once more as a whole: an
 * invalid pgraft.* value in postgresql.conf stops the server from starting with a message
 * that names the setting, instead of being silently replaced by its default.
 *
 * The settings that only shape the node's Raft timing and snapshots are PGC_SIGHUP: the
 * launcher restarts the node when a reload changes them (launcher.c). Everything else that
 * goes on the node's command line is PGC_POSTMASTER. pgraft.request_timeout is for the SQL
 * functions (PGC_USERSET).
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <sys/stat.h>

#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/guc_tables.h"

#include "pgraft.h"

int			pgraft_node_id = 0;
char	   *pgraft_address = NULL;
int			pgraft_port = 7001;
char	   *pgraft_initial_cluster = NULL;
char	   *pgraft_data_dir = NULL;
int			pgraft_election_timeout = 1000;
int			pgraft_heartbeat_interval = 100;
int			pgraft_snapshot_entries = 100000;
int			pgraft_snapshot_bytes = 262144; /* kB */
int			pgraft_snapshot_keep = 5000;
char	   *pgraft_python = NULL;
char	   *pgraft_secret_file = NULL;
char	   *pgraft_tls_cert = NULL;
char	   *pgraft_tls_key = NULL;
char	   *pgraft_tls_ca = NULL;
char	   *pgraft_ha_lease_file = NULL;
int			pgraft_request_timeout_ms = 10000;

/*
 * Is "s" (length len) a host name (RFC 1123 labels) or an IPv4/IPv6 literal that other
 * nodes can dial? Sets *why to a static reason when it is not.
 */
static bool
valid_host(const char *s, size_t len, const char **why)
{
	char		buf[256];
	unsigned char addr[16];
	size_t		label = 0;
	bool		all_digits_label = true;

	if (len == 0)
	{
		*why = "the host is empty";
		return false;
	}
	if (len > 253)
	{
		*why = "the host is longer than 253 characters";
		return false;
	}
	memcpy(buf, s, len);
	buf[len] = '\0';
	if (inet_pton(AF_INET, buf, addr) == 1)
	{
		if (strcmp(buf, "0.0.0.0") == 0)
		{
			*why = "0.0.0.0 is a wildcard address that other nodes cannot dial";
			return false;
		}
		return true;
	}
	if (inet_pton(AF_INET6, buf, addr) == 1)
	{
		static const unsigned char zero[16] = {0};

		if (memcmp(addr, zero, 16) == 0)
		{
			*why = ":: is a wildcard address that other nodes cannot dial";
			return false;
		}
		return true;
	}
	for (size_t i = 0; i <= len; i++)
	{
		char		c = (i < len) ? buf[i] : '.';

		if (c == '.')
		{
			if (label == 0 && !(i == len && i > 0))
			{
				*why = "a host name has an empty label";
				return false;
			}
			if (label > 63)
			{
				*why = "a host name label is longer than 63 characters";
				return false;
			}
			if (label > 0 && (buf[i - 1] == '-' || buf[i - label] == '-'))
			{
				*why = "a host name label starts or ends with '-'";
				return false;
			}
			if (label > 0 && i == len)
			{
				if (all_digits_label)
				{
					*why = "it is neither an IP address nor a host name";
					return false;
				}
			}
			label = 0;
			all_digits_label = true;
			continue;
		}
		if (!(isalnum((unsigned char) c) || c == '-'))
		{
			*why = "a host name may contain only letters, digits, '-' and '.'";
			return false;
		}
		if (!isdigit((unsigned char) c))
			all_digits_label = false;
		label++;
	}
	return true;
}

static bool
check_address(char **newval, void **extra, GucSource source)
{
	const char *why = NULL;

	if (*newval == NULL || !valid_host(*newval, strlen(*newval), &why))
	{
		GUC_check_errdetail("pgraft.address must be a host name or an IP address that the "
							"other nodes can reach: %s.", why ? why : "it is empty");
		return false;
	}
	return true;
}

/*
 * Parse one "ID=HOST:PORT" item of pgraft.initial_cluster. IPv6 hosts are written in
 * brackets: "2=[fd00::2]:7002". Returns false with a palloc'd message in *err.
 */
static bool
parse_member(const char *item, size_t len, long *id_out, char **err)
{
	const char *eq = memchr(item, '=', len);
	const char *host;
	const char *colon;
	size_t		host_len;
	const char *why = NULL;
	char		num[32];
	char	   *end;
	long		id;
	long		port;
	size_t		n;

	if (eq == NULL)
	{
		*err = psprintf("\"%.*s\" is not ID=HOST:PORT", (int) len, item);
		return false;
	}
	n = eq - item;
	if (n == 0 || n >= sizeof(num))
	{
		*err = psprintf("\"%.*s\" has no valid node id before '='", (int) len, item);
		return false;
	}
	memcpy(num, item, n);
	num[n] = '\0';
	errno = 0;
	id = strtol(num, &end, 10);
	if (*end != '\0' || errno != 0 || id < 1 || id > PG_INT32_MAX)
	{
		*err = psprintf("node id \"%s\" is not an integer between 1 and %d", num,
						PG_INT32_MAX);
		return false;
	}
	host = eq + 1;
	/* the port follows the last ':' (after the ']' of a bracketed IPv6 address) */
	colon = NULL;
	for (const char *p = item + len - 1; p > host; p--)
		if (*p == ':')
		{
			colon = p;
			break;
		}
	if (colon == NULL)
	{
		*err = psprintf("\"%.*s\" has no :PORT", (int) len, item);
		return false;
	}
	host_len = colon - host;
	if (host_len >= 2 && host[0] == '[' && host[host_len - 1] == ']')
	{
		host++;
		host_len -= 2;
	}
	else if (memchr(host, ':', host_len) != NULL)
	{
		*err = psprintf("\"%.*s\": write IPv6 addresses in brackets, e.g. 2=[fd00::2]:7002",
						(int) len, item);
		return false;
	}
	if (!valid_host(host, host_len, &why))
	{
		*err = psprintf("\"%.*s\": %s", (int) len, item, why);
		return false;
	}
	n = item + len - colon - 1;
	if (n == 0 || n >= sizeof(num))
	{
		*err = psprintf("\"%.*s\" has no valid port", (int) len, item);
		return false;
	}
	memcpy(num, colon + 1, n);
	num[n] = '\0';
	errno = 0;
	port = strtol(num, &end, 10);
	if (*end != '\0' || errno != 0 || port < 1 || port > 65535)
	{
		*err = psprintf("port \"%s\" of node %ld is not between 1 and 65535", num, id);
		return false;
	}
	*id_out = id;
	return true;
}

/*
 * Validate a whole initial_cluster value; on success, *ids (palloc'd) holds the member ids.
 */
static bool
parse_initial_cluster(const char *value, long **ids, int *nids, char **err)
{
	int			cap = 8;
	const char *p = value;

	*nids = 0;
	*ids = palloc(sizeof(long) * cap);
	while (*p != '\0')
	{
		const char *start;
		const char *stop;
		const char *comma = strchr(p, ',');
		long		id;

		stop = comma ? comma : p + strlen(p);
		start = p;
		while (start < stop && isspace((unsigned char) *start))
			start++;
		while (stop > start && isspace((unsigned char) stop[-1]))
			stop--;
		if (stop == start)
		{
			*err = pstrdup("it has an empty item (two commas in a row, or a trailing comma)");
			return false;
		}
		if (!parse_member(start, stop - start, &id, err))
			return false;
		for (int i = 0; i < *nids; i++)
			if ((*ids)[i] == id)
			{
				*err = psprintf("node id %ld is listed twice", id);
				return false;
			}
		if (*nids == cap)
		{
			cap *= 2;
			*ids = repalloc(*ids, sizeof(long) * cap);
		}
		(*ids)[(*nids)++] = id;
		if (comma == NULL)
			break;
		p = comma + 1;
	}
	return true;
}

static bool
check_initial_cluster(char **newval, void **extra, GucSource source)
{
	long	   *ids;
	int			nids;
	char	   *err = NULL;
	bool		ok;

	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
	ok = parse_initial_cluster(*newval, &ids, &nids, &err);
	if (!ok)
		GUC_check_errdetail("pgraft.initial_cluster must be empty or a list like "
							"'1=10.0.0.11:7001,2=10.0.0.12:7002,3=10.0.0.13:7003': %s.", err);
	return ok;
}

/*
 * Is "path" the directory "dir" or inside it? Both absolute and canonical (no "..", no
 * double or trailing slashes); the comparison is lexical, symbolic links are not followed.
 */
bool
pgraft_path_inside(const char *path, const char *dir)
{
	size_t		n = strlen(dir);

	if (n == 1 && dir[0] == '/')
		return true;
	return strncmp(path, dir, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/*
 * The node's data directory for the value "setting" of pgraft.data_dir: empty means
 * "<data_directory>.pgraft", next to the PostgreSQL data directory. NULL when the default
 * applies and the data directory is not known in this process. The result is canonical.
 */
static char *
resolve_data_dir(const char *setting)
{
	char	   *dir;

	if (setting == NULL || setting[0] == '\0')
	{
		if (DataDir == NULL)
			return NULL;
		dir = psprintf("%s%s", DataDir, PGRAFT_DATA_DIR_SUFFIX);
	}
	else if (is_absolute_path(setting))
		dir = pstrdup(setting);
	else if (DataDir != NULL)
		dir = psprintf("%s/%s", DataDir, setting);	/* refused by check_data_dir */
	else
		return NULL;
	canonicalize_path(dir);
	return dir;
}

char *
pgraft_node_data_dir(void)
{
	return resolve_data_dir(pgraft_data_dir);
}

static bool
check_data_dir(char **newval, void **extra, GucSource source)
{
	char	   *dir;
	char	   *pgdata = NULL;
	bool		ok = true;

	if (*newval == NULL)
		return true;
	for (const char *p = *newval; *p; p++)
		if (iscntrl((unsigned char) *p))
		{
			GUC_check_errdetail("pgraft.data_dir contains a control character.");
			return false;
		}
	if ((*newval)[0] != '\0' && !is_absolute_path(*newval))
	{
		GUC_check_errdetail("pgraft.data_dir must be an absolute path outside the PostgreSQL "
							"data directory, or empty for the default "
							"\"<data_directory>%s\".", PGRAFT_DATA_DIR_SUFFIX);
		return false;
	}
	dir = resolve_data_dir(*newval);
	if (dir == NULL)
		return true;			/* the data directory is not known here */
	if (DataDir != NULL)
	{
		pgdata = pstrdup(DataDir);
		canonicalize_path(pgdata);
	}
	if (pgdata != NULL && pgraft_path_inside(dir, pgdata))
	{
		GUC_check_errdetail("pgraft.data_dir \"%s\" is inside the PostgreSQL data directory "
							"\"%s\".", dir, pgdata);
		GUC_check_errhint("The node's data must be outside the data directory, which base "
						  "backups, pg_rewind and pg_upgrade copy or replace. Leave "
						  "pgraft.data_dir empty for the default \"%s%s\".",
						  pgdata, PGRAFT_DATA_DIR_SUFFIX);
		ok = false;
	}
	else if (strlen(dir) + 1 + strlen(PGRAFT_SOCKET_NAME) > PGRAFT_MAX_SOCKET_PATH)
	{
		GUC_check_errdetail("pgraft.data_dir resolves to \"%s\", which is too long for the "
							"node's Unix socket path (at most %d bytes including \"/%s\").",
							dir, PGRAFT_MAX_SOCKET_PATH, PGRAFT_SOCKET_NAME);
		ok = false;
	}
	pfree(dir);
	if (pgdata)
		pfree(pgdata);
	return ok;
}

/* Snapshot thresholds: 0 turns a trigger off; tiny values would snapshot all the time. */
static bool
check_snapshot_entries(int *newval, void **extra, GucSource source)
{
	if (*newval != 0 && *newval < 100)
	{
		GUC_check_errdetail("pgraft.snapshot_entries must be 0 (no snapshot by entry count) "
							"or at least 100.");
		return false;
	}
	return true;
}

static bool
check_snapshot_bytes(int *newval, void **extra, GucSource source)
{
	if (*newval != 0 && *newval < 1024)
	{
		GUC_check_errdetail("pgraft.snapshot_bytes must be 0 (no snapshot by log size) or "
							"at least 1MB.");
		return false;
	}
	return true;
}

static bool
check_python(char **newval, void **extra, GucSource source)
{
	if (*newval == NULL || !is_absolute_path(*newval))
	{
		GUC_check_errdetail("pgraft.python must be the absolute path of the Python "
							"interpreter that runs the pgraft node (written by `pgraft "
							"postgres install`).");
		return false;
	}
	return true;
}

/*
 * pgraft.secret_file and the TLS files: empty, or an absolute path. The secret file (and the
 * TLS key) must also be private to its owner -- the node refuses it otherwise, so say it here,
 * when the server starts or reloads, with the command that fixes it (README: Security).
 */
static bool
check_security_path(char **newval, const char *name, bool private_file, bool allow_root_group)
{
	struct stat st;

	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
	if (!is_absolute_path(*newval))
	{
		GUC_check_errdetail("%s must be empty or an absolute path.", name);
		return false;
	}
	for (const char *p = *newval; *p; p++)
		if ((unsigned char) *p < 0x20)
		{
			GUC_check_errdetail("%s contains a control character.", name);
			return false;
		}
	if (stat(*newval, &st) != 0 || !S_ISREG(st.st_mode))
	{
		GUC_check_errdetail("%s: \"%s\" is not a readable regular file.", name, *newval);
		return false;
	}
	if (private_file && (st.st_mode & (S_IRWXG | S_IRWXO)) != 0 &&
		!(allow_root_group && st.st_uid == 0 &&
		  (st.st_mode & (S_IWGRP | S_IXGRP | S_IRWXO)) == 0))
	{
		GUC_check_errdetail("%s: \"%s\" is readable or writable by group or others; run "
							"chmod 600 %s.", name, *newval, *newval);
		return false;
	}
	return true;
}

static bool
check_secret_file(char **newval, void **extra, GucSource source)
{
	return check_security_path(newval, "pgraft.secret_file", true, false);
}

static bool
check_tls_cert(char **newval, void **extra, GucSource source)
{
	return check_security_path(newval, "pgraft.tls_cert", false, false);
}

static bool
check_tls_key(char **newval, void **extra, GucSource source)
{
	return check_security_path(newval, "pgraft.tls_key", true, true);
}

static bool
check_tls_ca(char **newval, void **extra, GucSource source)
{
	return check_security_path(newval, "pgraft.tls_ca", false, false);
}

/*
 * pgraft.ha_lease_file: empty (no HA mode) or an absolute path. The file itself may be
 * missing: the node creates it, and until then this server commits no write (fence.c).
 */
static bool
check_ha_lease_file(char **newval, void **extra, GucSource source)
{
	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
	if (!is_absolute_path(*newval))
	{
		GUC_check_errdetail("pgraft.ha_lease_file must be empty or an absolute path (the "
							"`pgraft serve --postgres` node writes it).");
		return false;
	}
	for (const char *p = *newval; *p; p++)
		if (iscntrl((unsigned char) *p))
		{
			GUC_check_errdetail("pgraft.ha_lease_file contains a control character.");
			return false;
		}
	return true;
}

static void
define_settings(void)
{
	DefineCustomIntVariable("pgraft.node_id",
							"Id of this server's pgraft node (0 = no node is started).",
							"Each server of a pgraft cluster has its own positive id.",
							&pgraft_node_id, 0, 0, PG_INT32_MAX,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("pgraft.address",
							   "Host name or IP address of this server's pgraft node.",
							   "The node listens on it and the other nodes dial it.",
							   &pgraft_address, "127.0.0.1",
							   PGC_POSTMASTER, 0, check_address, NULL, NULL);
	DefineCustomIntVariable("pgraft.port",
							"TCP port of this server's pgraft node.",
							NULL,
							&pgraft_port, 7001, 1, 65535,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("pgraft.initial_cluster",
							   "Members of a new cluster: 'ID=HOST:PORT,...'.",
							   "Used only when the node's data directory is empty. Empty: the "
							   "node starts without members and waits to be added with "
							   "pgraft_add_node() on the leader.",
							   &pgraft_initial_cluster, "",
							   PGC_POSTMASTER, 0, check_initial_cluster, NULL, NULL);
	DefineCustomStringVariable("pgraft.data_dir",
							   "Directory of the node's log, state and socket.",
							   "An absolute path outside the PostgreSQL data directory; empty "
							   "(the default) is \"<data_directory>" PGRAFT_DATA_DIR_SUFFIX
							   "\", next to it.",
							   &pgraft_data_dir, "",
							   PGC_POSTMASTER, 0, check_data_dir, NULL, NULL);
	DefineCustomIntVariable("pgraft.election_timeout",
							"Raft election timeout.",
							"A follower that hears nothing from a leader for this long "
							"starts an election. A reload that changes it restarts the node.",
							&pgraft_election_timeout, 1000, 10, 600000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("pgraft.heartbeat_interval",
							"Interval of the leader's heartbeats.",
							"Must be shorter than pgraft.election_timeout. A reload that "
							"changes it restarts the node.",
							&pgraft_heartbeat_interval, 100, 1, 60000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("pgraft.snapshot_entries",
							"Snapshot the applied state every this many applied entries.",
							"The log prefix is then compacted (see pgraft.snapshot_keep). "
							"0 = no snapshot by entry count.",
							&pgraft_snapshot_entries, 100000, 0, PG_INT32_MAX,
							PGC_SIGHUP, 0, check_snapshot_entries, NULL, NULL);
	DefineCustomIntVariable("pgraft.snapshot_bytes",
							"Also snapshot once this much was added to the log.",
							"0 = no snapshot by log size.",
							&pgraft_snapshot_bytes, 262144, 0, PG_INT32_MAX,
							PGC_SIGHUP, GUC_UNIT_KB, check_snapshot_bytes, NULL, NULL);
	DefineCustomIntVariable("pgraft.snapshot_keep",
							"Log entries kept behind a snapshot.",
							"A follower lagging by fewer entries catches up from the log "
							"instead of receiving a snapshot.",
							&pgraft_snapshot_keep, 5000, 0, PG_INT32_MAX,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("pgraft.python",
							   "Python interpreter that runs the pgraft node.",
							   "Written by `pgraft postgres install`; its environment also "
							   "provides the pgraft package to the PL/Python functions.",
							   &pgraft_python, PGRAFT_DEFAULT_PYTHON,
							   PGC_POSTMASTER, 0, check_python, NULL, NULL);
	DefineCustomStringVariable("pgraft.secret_file",
							   "File holding the cluster secret (mode 0600).",
							   "Peers and TCP clients must prove it; empty = no authentication "
							   "(trusted networks only). See README: Security.",
							   &pgraft_secret_file, "",
							   PGC_POSTMASTER, GUC_SUPERUSER_ONLY, check_secret_file, NULL, NULL);
	DefineCustomStringVariable("pgraft.tls_cert",
							   "This node's TLS certificate (PEM); TLS needs tls_key and tls_ca too.",
							   NULL, &pgraft_tls_cert, "",
							   PGC_POSTMASTER, GUC_SUPERUSER_ONLY, check_tls_cert, NULL, NULL);
	DefineCustomStringVariable("pgraft.tls_key",
							   "Private key of pgraft.tls_cert (PEM, mode 0600).",
							   NULL, &pgraft_tls_key, "",
							   PGC_POSTMASTER, GUC_SUPERUSER_ONLY, check_tls_key, NULL, NULL);
	DefineCustomStringVariable("pgraft.tls_ca",
							   "CA certificate(s) that sign the nodes' certificates (PEM).",
							   NULL, &pgraft_tls_ca, "",
							   PGC_POSTMASTER, GUC_SUPERUSER_ONLY, check_tls_ca, NULL, NULL);
	DefineCustomStringVariable("pgraft.ha_lease_file",
							   "HA mode: the primary's lease, written by the pgraft node that "
							   "runs this server.",
							   "Set by `pgraft serve --postgres` in pgraft.conf. When set, the "
							   "launcher starts no node and a transaction that wrote commits "
							   "only while the lease has not expired. Empty = not HA mode.",
							   &pgraft_ha_lease_file, "",
							   PGC_POSTMASTER, GUC_SUPERUSER_ONLY, check_ha_lease_file, NULL,
							   NULL);
	DefineCustomIntVariable("pgraft.request_timeout",
							"How long a pgraft SQL function waits for the node's answer.",
							"A write that is not answered in time has an unknown outcome.",
							&pgraft_request_timeout_ms, 10000, 1, 24 * 3600 * 1000,
							PGC_USERSET, GUC_UNIT_MS, NULL, NULL, NULL);
}

static const char *const setting_names[] = {
	"pgraft.node_id", "pgraft.address", "pgraft.port", "pgraft.initial_cluster",
	"pgraft.data_dir", "pgraft.election_timeout", "pgraft.heartbeat_interval",
	"pgraft.snapshot_entries", "pgraft.snapshot_bytes", "pgraft.snapshot_keep",
	"pgraft.python", "pgraft.secret_file", "pgraft.tls_cert", "pgraft.tls_key",
	"pgraft.tls_ca", "pgraft.ha_lease_file", "pgraft.request_timeout",
};
#define NUM_SETTINGS lengthof(setting_names)

/*
 * At server start: PostgreSQL applies postgresql.conf values of a library's settings when
 * the library defines them, and an invalid one only earns a WARNING and the default. Take
 * the raw values before, and validate them again afterwards with elevel ERROR (FATAL in the
 * postmaster), so that the server refuses to start and says which setting is wrong.
 * Then check what no single setting can: the relations between them.
 */
static void
validate_at_start(char **raw)
{
	struct config_generic **vars;
	int			nvars;

#if PG_VERSION_NUM >= 160000
	vars = get_guc_variables(&nvars);
#else
	vars = get_guc_variables();
	nvars = GetNumConfigOptions();
#endif

	/* a misspelled pgraft.* name is still a placeholder: refuse it rather than ignore it */
	for (int i = 0; i < nvars; i++)
		if ((vars[i]->flags & GUC_CUSTOM_PLACEHOLDER) != 0 &&
			strncmp(vars[i]->name, "pgraft.", 7) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("unrecognized configuration parameter \"%s\"", vars[i]->name),
					 errhint("The pgraft settings are pgraft.node_id, pgraft.address, "
							 "pgraft.port, pgraft.initial_cluster, pgraft.data_dir, "
							 "pgraft.election_timeout, pgraft.heartbeat_interval, "
							 "pgraft.snapshot_entries, pgraft.snapshot_bytes, "
							 "pgraft.snapshot_keep, pgraft.python, pgraft.secret_file, "
							 "pgraft.tls_cert, pgraft.tls_key, pgraft.tls_ca, "
							 "pgraft.ha_lease_file and pgraft.request_timeout.")));

	for (int i = 0; i < (int) NUM_SETTINGS; i++)
		if (raw[i] != NULL)
			(void) set_config_option(setting_names[i], raw[i], PGC_POSTMASTER, PGC_S_FILE,
									 GUC_ACTION_SET, false, ERROR, false);

	if (pgraft_heartbeat_interval >= pgraft_election_timeout)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("pgraft.heartbeat_interval (%d ms) must be shorter than "
						"pgraft.election_timeout (%d ms)",
						pgraft_heartbeat_interval, pgraft_election_timeout),
				 errhint("A heartbeat interval of a tenth of the election timeout is usual.")));

	if ((pgraft_tls_cert[0] != '\0') != (pgraft_tls_key[0] != '\0') ||
		(pgraft_tls_cert[0] != '\0') != (pgraft_tls_ca[0] != '\0'))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("pgraft.tls_cert, pgraft.tls_key and pgraft.tls_ca must be set together"),
				 errhint("The node presents its certificate and verifies its peers' against "
						 "the CA; leave all three empty for no TLS.")));

	/*
	 * HA mode: the node that runs this server is its pgraft node, and it sets
	 * pgraft.data_dir (not pgraft.node_id) so that the SQL functions find its socket. A
	 * node id as well would be a second node for the same server.
	 */
	if (pgraft_node_id > 0 && pgraft_ha_lease_file[0] != '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("pgraft.node_id (%d) and pgraft.ha_lease_file cannot both be set",
						pgraft_node_id),
				 errdetail("With pgraft.ha_lease_file (HA mode) the pgraft node that runs "
						   "this server is its node; the launcher starts none."),
				 errhint("Remove pgraft.node_id from postgresql.conf; `pgraft serve "
						 "--postgres` writes what HA mode needs in pgraft.conf.")));

	if (pgraft_node_id > 0 && pgraft_initial_cluster[0] != '\0')
	{
		long	   *ids;
		int			nids;
		char	   *err;
		bool		listed = false;

		if (parse_initial_cluster(pgraft_initial_cluster, &ids, &nids, &err))
		{
			for (int i = 0; i < nids; i++)
				listed |= (ids[i] == pgraft_node_id);
			if (!listed)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("pgraft.initial_cluster does not list this node "
								"(pgraft.node_id = %d)", pgraft_node_id),
						 errhint("List every member of the new cluster including this one, "
								 "or leave pgraft.initial_cluster empty to start without "
								 "members and be added with pgraft_add_node().")));
		}
	}
}

/*
 * Define the settings. "strict" (the postmaster loading shared_preload_libraries, not in
 * binary-upgrade mode): validate the postgresql.conf values as a whole and refuse to start
 * on any error. "reserve_prefix": a later unknown pgraft.* name is an error.
 */
void
pgraft_settings_init(bool strict, bool reserve_prefix)
{
	char	   *raw[NUM_SETTINGS];

	for (int i = 0; i < (int) NUM_SETTINGS; i++)
	{
		const char *v = strict ? GetConfigOption(setting_names[i], true, false) : NULL;

		raw[i] = v ? pstrdup(v) : NULL;
	}
	define_settings();
	if (strict)
		validate_at_start(raw);
	if (reserve_prefix)
		MarkGUCPrefixReserved("pgraft");
}

void
pgraft_reloadable_current(PgraftReloadable *out)
{
	memset(out, 0, sizeof(*out));
	out->election_timeout = pgraft_election_timeout;
	out->heartbeat_interval = pgraft_heartbeat_interval;
	out->snapshot_entries = pgraft_snapshot_entries;
	out->snapshot_bytes = pgraft_snapshot_bytes;
	out->snapshot_keep = pgraft_snapshot_keep;
}
