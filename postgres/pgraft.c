/*
 * pgraft.c -- the PostgreSQL side of pgraft: settings (GUCs), the launcher background
 * worker that runs the pgraft node process, and pgraft_socket_path() for the SQL functions.
 *
 * With shared_preload_libraries = 'pgraft' the postmaster starts the background worker
 * "pgraft launcher". The launcher fork/execs
 *
 *     <pgraft.python> -m pgraft serve --id N --address HOST --port PORT --data-dir DIR
 *         [--initial-cluster SPEC] --election-timeout MS --heartbeat-interval MS
 *         --snapshot-entries N --snapshot-bytes BYTES --snapshot-keep N
 *
 * restarts it with exponential backoff when it exits, and stops it when PostgreSQL stops
 * (SIGTERM, then SIGKILL after PGRAFT_STOP_TIMEOUT_MS). The node never outlives the launcher:
 * it is started with PR_SET_PDEATHSIG, so an immediate shutdown or a postmaster crash that
 * kills the launcher also terminates the node.
 *
 * Settings are validated by check hooks (syntax and ranges) and, at server start, once more
 * as a whole: an invalid pgraft.* value in postgresql.conf stops the server from starting
 * with a message that names the setting, instead of being silently replaced by its default.
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/guc_tables.h"
#include "utils/timestamp.h"

PG_MODULE_MAGIC;

#ifndef PGRAFT_DEFAULT_PYTHON
#define PGRAFT_DEFAULT_PYTHON "/opt/pgraft/venv/bin/python"
#endif

#define PGRAFT_SOCKET_NAME "node.sock"
/* sizeof(struct sockaddr_un.sun_path) - 1 on Linux */
#define PGRAFT_MAX_SOCKET_PATH 107
#define PGRAFT_STOP_TIMEOUT_MS 10000
#define PGRAFT_BACKOFF_MIN_MS 500
#define PGRAFT_BACKOFF_MAX_MS 30000
/* a node that ran this long before exiting restarts after the minimum backoff again */
#define PGRAFT_STABLE_RUN_MS 30000

void		_PG_init(void);
PGDLLEXPORT void pgraft_launcher_main(Datum main_arg);

PG_FUNCTION_INFO_V1(pgraft_socket_path);

/* ---------------------------------------------------------------- settings */
static int	pgraft_node_id = 0;
static char *pgraft_address = NULL;
static int	pgraft_port = 7001;
static char *pgraft_initial_cluster = NULL;
static char *pgraft_data_dir = NULL;
static int	pgraft_election_timeout = 1000;
static int	pgraft_heartbeat_interval = 100;
static int	pgraft_snapshot_entries = 100000;
static int	pgraft_snapshot_bytes = 262144;	/* kB */
static int	pgraft_snapshot_keep = 5000;
static char *pgraft_python = NULL;
static char *pgraft_secret_file = NULL;
static char *pgraft_tls_cert = NULL;
static char *pgraft_tls_key = NULL;
static char *pgraft_tls_ca = NULL;

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

/* The node's data directory: pgraft.data_dir, relative to the PostgreSQL data directory. */
static char *
node_data_dir(const char *setting)
{
	if (is_absolute_path(setting))
		return pstrdup(setting);
	if (DataDir == NULL)
		return NULL;
	return psprintf("%s/%s", DataDir, setting);
}

static bool
check_data_dir(char **newval, void **extra, GucSource source)
{
	char	   *dir;

	if (*newval == NULL || (*newval)[0] == '\0')
	{
		GUC_check_errdetail("pgraft.data_dir must not be empty; the default is 'pgraft' "
							"inside the PostgreSQL data directory.");
		return false;
	}
	for (const char *p = *newval; *p; p++)
		if (iscntrl((unsigned char) *p))
		{
			GUC_check_errdetail("pgraft.data_dir contains a control character.");
			return false;
		}
	dir = node_data_dir(*newval);
	if (dir != NULL && strlen(dir) + 1 + strlen(PGRAFT_SOCKET_NAME) > PGRAFT_MAX_SOCKET_PATH)
	{
		GUC_check_errdetail("pgraft.data_dir resolves to \"%s\", which is too long for the "
							"node's Unix socket path (at most %d bytes including \"/%s\").",
							dir, PGRAFT_MAX_SOCKET_PATH, PGRAFT_SOCKET_NAME);
		pfree(dir);
		return false;
	}
	if (dir)
		pfree(dir);
	return true;
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
							   "A relative path is inside the PostgreSQL data directory.",
							   &pgraft_data_dir, "pgraft",
							   PGC_POSTMASTER, 0, check_data_dir, NULL, NULL);
	DefineCustomIntVariable("pgraft.election_timeout",
							"Raft election timeout.",
							"A follower that hears nothing from a leader for this long "
							"starts an election.",
							&pgraft_election_timeout, 1000, 10, 600000,
							PGC_POSTMASTER, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("pgraft.heartbeat_interval",
							"Interval of the leader's heartbeats.",
							"Must be shorter than pgraft.election_timeout.",
							&pgraft_heartbeat_interval, 100, 1, 60000,
							PGC_POSTMASTER, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("pgraft.snapshot_entries",
							"Snapshot the applied state every this many applied entries.",
							"The log prefix is then compacted (see pgraft.snapshot_keep). "
							"0 = no snapshot by entry count.",
							&pgraft_snapshot_entries, 100000, 0, PG_INT32_MAX,
							PGC_POSTMASTER, 0, check_snapshot_entries, NULL, NULL);
	DefineCustomIntVariable("pgraft.snapshot_bytes",
							"Also snapshot once this much was added to the log.",
							"0 = no snapshot by log size.",
							&pgraft_snapshot_bytes, 262144, 0, PG_INT32_MAX,
							PGC_POSTMASTER, GUC_UNIT_KB, check_snapshot_bytes, NULL, NULL);
	DefineCustomIntVariable("pgraft.snapshot_keep",
							"Log entries kept behind a snapshot.",
							"A follower lagging by fewer entries catches up from the log "
							"instead of receiving a snapshot.",
							&pgraft_snapshot_keep, 5000, 0, PG_INT32_MAX,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
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
}

static const char *const setting_names[] = {
	"pgraft.node_id", "pgraft.address", "pgraft.port", "pgraft.initial_cluster",
	"pgraft.data_dir", "pgraft.election_timeout", "pgraft.heartbeat_interval",
	"pgraft.snapshot_entries", "pgraft.snapshot_bytes", "pgraft.snapshot_keep",
	"pgraft.python", "pgraft.secret_file", "pgraft.tls_cert", "pgraft.tls_key",
	"pgraft.tls_ca",
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
	struct config_generic **vars = get_guc_variables();
	int			nvars = GetNumConfigOptions();

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
							 "pgraft.tls_cert, pgraft.tls_key and pgraft.tls_ca.")));

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

void
_PG_init(void)
{
	char	   *raw[NUM_SETTINGS];
	BackgroundWorker worker;

	for (int i = 0; i < (int) NUM_SETTINGS; i++)
	{
		const char *v = GetConfigOption(setting_names[i], true, false);

		raw[i] = v ? pstrdup(v) : NULL;
	}
	define_settings();

	if (!process_shared_preload_libraries_in_progress)
	{
		MarkGUCPrefixReserved("pgraft");
		return;
	}

	validate_at_start(raw);
	MarkGUCPrefixReserved("pgraft");

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS;
	worker.bgw_start_time = BgWorkerStart_PostmasterStart;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "pgraft");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "pgraft_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "pgraft launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "pgraft launcher");
	RegisterBackgroundWorker(&worker);
}

/* ---------------------------------------------------------------- SQL */

/*
 * pgraft_socket_path() -> text: the node's Unix socket, so that the SQL functions (and
 * roles that may not read data_directory) find it.
 */
Datum
pgraft_socket_path(PG_FUNCTION_ARGS)
{
	char	   *dir = node_data_dir(pgraft_data_dir);

	if (dir == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the PostgreSQL data directory is not known in this process")));
	PG_RETURN_TEXT_P(cstring_to_text(psprintf("%s/%s", dir, PGRAFT_SOCKET_NAME)));
}

/* ---------------------------------------------------------------- launcher */
static volatile sig_atomic_t stop_requested = false;
static volatile pid_t node_pid = 0;

static void
launcher_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	stop_requested = true;
	SetLatch(MyLatch);
	errno = save_errno;
}

static void
launcher_sigchld(SIGNAL_ARGS)
{
	int			save_errno = errno;

	SetLatch(MyLatch);
	errno = save_errno;
}

/*
 * Immediate shutdown or a crash of another process: the postmaster wants us gone now.
 * Ask the node to stop (it also gets SIGTERM from PR_SET_PDEATHSIG once we are gone).
 */
static void
launcher_sigquit(SIGNAL_ARGS)
{
	pid_t		pid = node_pid;

	if (pid > 0)
		kill(pid, SIGTERM);
	_exit(2);
}

static char *
describe_exit(int status)
{
	if (WIFEXITED(status))
		return psprintf("exited with exit code %d", WEXITSTATUS(status));
	if (WIFSIGNALED(status))
		return psprintf("was terminated by signal %d: %s", WTERMSIG(status),
						pg_strsignal(WTERMSIG(status)));
	return psprintf("exited with unrecognized status %d", status);
}

typedef struct NodeArgs
{
	char	   *argv[48];
	int			argc;
	char	   *display;
} NodeArgs;

static void
build_node_args(NodeArgs *a, const char *data_dir)
{
	StringInfoData s;

	a->argc = 0;
	a->argv[a->argc++] = pgraft_python;
	a->argv[a->argc++] = "-m";
	a->argv[a->argc++] = "pgraft";
	a->argv[a->argc++] = "serve";
	a->argv[a->argc++] = "--id";
	a->argv[a->argc++] = psprintf("%d", pgraft_node_id);
	a->argv[a->argc++] = "--address";
	a->argv[a->argc++] = pgraft_address;
	a->argv[a->argc++] = "--port";
	a->argv[a->argc++] = psprintf("%d", pgraft_port);
	a->argv[a->argc++] = "--data-dir";
	a->argv[a->argc++] = pstrdup(data_dir);
	if (pgraft_initial_cluster[0] != '\0')
	{
		a->argv[a->argc++] = "--initial-cluster";
		a->argv[a->argc++] = pgraft_initial_cluster;
	}
	a->argv[a->argc++] = "--election-timeout";
	a->argv[a->argc++] = psprintf("%d", pgraft_election_timeout);
	a->argv[a->argc++] = "--heartbeat-interval";
	a->argv[a->argc++] = psprintf("%d", pgraft_heartbeat_interval);
	a->argv[a->argc++] = "--snapshot-entries";
	a->argv[a->argc++] = psprintf("%d", pgraft_snapshot_entries);
	a->argv[a->argc++] = "--snapshot-bytes";
	a->argv[a->argc++] = psprintf("%lld", (long long) pgraft_snapshot_bytes * 1024);
	a->argv[a->argc++] = "--snapshot-keep";
	a->argv[a->argc++] = psprintf("%d", pgraft_snapshot_keep);
	if (pgraft_secret_file != NULL && pgraft_secret_file[0] != '\0')
	{
		a->argv[a->argc++] = "--secret-file";
		a->argv[a->argc++] = pgraft_secret_file;
	}
	if (pgraft_tls_cert != NULL && pgraft_tls_cert[0] != '\0')
	{
		a->argv[a->argc++] = "--tls-cert";
		a->argv[a->argc++] = pgraft_tls_cert;
		a->argv[a->argc++] = "--tls-key";
		a->argv[a->argc++] = pgraft_tls_key;
		a->argv[a->argc++] = "--tls-ca";
		a->argv[a->argc++] = pgraft_tls_ca;
	}
	a->argv[a->argc] = NULL;

	initStringInfo(&s);
	for (int i = 0; i < a->argc; i++)
		appendStringInfo(&s, i ? " %s" : "%s", a->argv[i]);
	a->display = s.data;
}

/* In the child, between fork() and exec(): only async-signal-safe calls. */
static void
exec_node(NodeArgs *a, pid_t launcher)
{
	sigset_t	none;
	int			devnull;

	for (int sig = 1; sig < NSIG; sig++)
		signal(sig, SIG_DFL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
#ifdef __linux__
	(void) prctl(PR_SET_PDEATHSIG, SIGTERM);
#endif
	if (getppid() != launcher)
		_exit(1);				/* the launcher is already gone */
	devnull = open("/dev/null", O_RDONLY);
	if (devnull >= 0 && devnull != 0)
	{
		dup2(devnull, 0);
		close(devnull);
	}
	/* keep stdout/stderr (the server log); close everything else PostgreSQL had open */
	for (int fd = 3; fd < 65536; fd++)
		(void) close(fd);
	setenv("PYTHONUNBUFFERED", "1", 1);
	execv(a->argv[0], a->argv);
	{
		static const char msg[] = "pgraft launcher: could not execute the pgraft node\n";

		if (write(2, msg, sizeof(msg) - 1) < 0)
			_exit(127);
	}
	_exit(127);
}

static pid_t
start_node(NodeArgs *a, const char *data_dir)
{
	pid_t		pid;
	pid_t		self = getpid();

	if (access(pgraft_python, X_OK) != 0)
	{
		ereport(LOG,
				(errmsg("pgraft launcher: cannot run pgraft.python \"%s\": %m", pgraft_python),
				 errhint("Run `pgraft postgres install`, or set pgraft.python to the "
						 "interpreter of an environment where pgraft is installed.")));
		return -1;
	}
	if (pg_mkdir_p(pstrdup(data_dir), S_IRWXU) != 0 && errno != EEXIST)
	{
		ereport(LOG,
				(errmsg("pgraft launcher: could not create pgraft.data_dir \"%s\": %m",
						data_dir)));
		return -1;
	}
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0)
	{
		ereport(LOG, (errmsg("pgraft launcher: could not fork the pgraft node: %m")));
		return -1;
	}
	if (pid == 0)
		exec_node(a, self);
	node_pid = pid;
	ereport(LOG, (errmsg("pgraft launcher: started pgraft node %d (PID %d): %s",
						 pgraft_node_id, (int) pid, a->display)));
	return pid;
}

/* Reap the node if it has exited; returns true (and logs) when it has. */
static bool
reap_node(bool expected)
{
	int			status;
	pid_t		pid = node_pid;
	pid_t		r;

	if (pid <= 0)
		return true;
	r = waitpid(pid, &status, WNOHANG);
	if (r == 0 || (r < 0 && errno == EINTR))
		return false;
	node_pid = 0;
	if (r < 0)
	{
		ereport(LOG, (errmsg("pgraft launcher: lost track of pgraft node (PID %d): %m",
							 (int) pid)));
		return true;
	}
	if (expected)
		ereport(LOG, (errmsg("pgraft launcher: pgraft node (PID %d) %s", (int) pid,
							 describe_exit(status))));
	else
		ereport(LOG, (errmsg("pgraft launcher: pgraft node (PID %d) %s; it will be restarted",
							 (int) pid, describe_exit(status))));
	return true;
}

static void
stop_node(const char *why)
{
	pid_t		pid = node_pid;
	TimestampTz deadline;

	if (pid <= 0)
		return;
	ereport(LOG, (errmsg("pgraft launcher: stopping pgraft node (PID %d): %s", (int) pid,
						 why)));
	kill(pid, SIGTERM);
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), PGRAFT_STOP_TIMEOUT_MS);
	while (!reap_node(true))
	{
		if (GetCurrentTimestamp() >= deadline)
		{
			ereport(LOG, (errmsg("pgraft launcher: pgraft node (PID %d) did not stop within "
								 "%d ms; killing it", (int) pid, PGRAFT_STOP_TIMEOUT_MS)));
			kill(pid, SIGKILL);
			while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
				;
			node_pid = 0;
			return;
		}
		pg_usleep(20 * 1000L);
	}
}

void
pgraft_launcher_main(Datum main_arg)
{
	NodeArgs	args;
	char	   *data_dir;
	long		backoff_ms = PGRAFT_BACKOFF_MIN_MS;
	TimestampTz started_at = 0;
	TimestampTz next_start = 0;

	pqsignal(SIGTERM, launcher_sigterm);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGCHLD, launcher_sigchld);
	pqsignal(SIGQUIT, launcher_sigquit);
	BackgroundWorkerUnblockSignals();

	if (pgraft_node_id <= 0)
	{
		ereport(LOG,
				(errmsg("pgraft launcher: pgraft.node_id is not set; no pgraft node is "
						"started on this server"),
				 errhint("Set pgraft.node_id (and pgraft.address, pgraft.port, "
						 "pgraft.initial_cluster) in postgresql.conf and restart.")));
		proc_exit(0);
	}
	data_dir = node_data_dir(pgraft_data_dir);
	build_node_args(&args, data_dir);

	for (;;)
	{
		int			rc;
		long		timeout = -1;

		if (stop_requested)
		{
			stop_node("PostgreSQL is shutting down");
			ereport(LOG, (errmsg("pgraft launcher: exiting")));
			proc_exit(0);
		}
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (node_pid > 0 && reap_node(false))
		{
			long		ran = (long) ((GetCurrentTimestamp() - started_at) / 1000);

			if (ran >= PGRAFT_STABLE_RUN_MS)
				backoff_ms = PGRAFT_BACKOFF_MIN_MS;
			next_start = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), backoff_ms);
			ereport(LOG, (errmsg("pgraft launcher: restarting the pgraft node in %ld ms",
								 backoff_ms)));
			backoff_ms = Min(backoff_ms * 2, PGRAFT_BACKOFF_MAX_MS);
		}
		if (node_pid <= 0)
		{
			TimestampTz now = GetCurrentTimestamp();

			if (now >= next_start)
			{
				started_at = now;
				if (start_node(&args, data_dir) < 0)
				{
					next_start = TimestampTzPlusMilliseconds(now, backoff_ms);
					ereport(LOG, (errmsg("pgraft launcher: retrying in %ld ms", backoff_ms)));
					backoff_ms = Min(backoff_ms * 2, PGRAFT_BACKOFF_MAX_MS);
				}
			}
			if (node_pid <= 0)
			{
				long		wait_us = (long) (next_start - GetCurrentTimestamp());

				timeout = Max(wait_us / 1000, 1);
			}
		}
		if (node_pid > 0)
			timeout = 1000;		/* also poll, in case a SIGCHLD raced with the latch */

		rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_POSTMASTER_DEATH,
					   timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		if (rc & WL_POSTMASTER_DEATH)
		{
			stop_node("the postmaster died");
			proc_exit(1);
		}
		CHECK_FOR_INTERRUPTS();
	}
}
