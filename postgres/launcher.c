/*
 * launcher.c -- the "pgraft launcher" background worker: it runs the pgraft node process
 * (node.c), restarts it with exponential backoff when it exits, restarts it when a reload
 * changes its command line, and stops it when PostgreSQL stops (SIGTERM, then SIGKILL after
 * PGRAFT_STOP_TIMEOUT_MS plus two election timeouts, the bound of the node's leadership
 * hand-over). The node never outlives the launcher: it is started with PR_SET_PDEATHSIG.
 *
 * Immediate shutdown and crashes: the postmaster sends SIGQUIT; the launcher passes it on to
 * the node (which exits at once with status 2, without a core dump) and _exit(2)s, like any
 * PostgreSQL process.
 *
 * The launcher reports what it does in pg_stat_activity ("query" holds a short text such as
 * "node 1 running (PID 123)"), and in shared memory for pgraft_launcher_status() (status.c).
 */
#include "postgres.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "access/xact.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "pgraft.h"

#define PGRAFT_STOP_TIMEOUT_MS 10000
#define PGRAFT_BACKOFF_MIN_MS 500
#define PGRAFT_BACKOFF_MAX_MS 30000
/* a node that ran this long before exiting restarts after the minimum backoff again */
#define PGRAFT_STABLE_RUN_MS 30000

static volatile sig_atomic_t stop_requested = false;

/* the reloadable settings the node's command line was built from */
static PgraftReloadable applied;
static char *data_dir = NULL;
/* the data directory is unusable (1.0 layout, inside PGDATA): start nothing until a reload */
static bool blocked = false;
static long backoff_ms = PGRAFT_BACKOFF_MIN_MS;
static TimestampTz started_at = 0;
static TimestampTz next_start = 0;
static char *reported_activity = NULL;

void
pgraft_register_launcher(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));

	/*
	 * A database connection -- to no database: BackgroundWorkerInitializeConnection(NULL,
	 * NULL, 0), like the logical replication launcher -- makes the launcher a backend with
	 * a PGPROC and a pg_stat_activity row (backend_type "pgraft launcher", its state text
	 * in "query", wait_event_type Extension while it waits). InitPostgres reads the shared
	 * catalogs, so such a worker can only start once the server has reached a consistent
	 * state: BgWorkerStart_ConsistentState (BgWorkerStart_PostmasterStart is refused with
	 * BGWORKER_BACKEND_DATABASE_CONNECTION). On a primary that is the end of crash recovery;
	 * on a standby it is when the postmaster starts to accept read-only connections, which
	 * needs hot_standby = on: a standby with hot_standby = off starts no pgraft node until
	 * it is promoted.
	 */
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_ConsistentState;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "pgraft");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "pgraft_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "pgraft launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "pgraft launcher");
	RegisterBackgroundWorker(&worker);
}

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
 * Pass SIGQUIT on to the node (it exits at once) and exit without any cleanup.
 */
static void
launcher_sigquit(SIGNAL_ARGS)
{
	pid_t		pid = pgraft_node_pid();

	if (pid > 0)
		kill(pid, SIGQUIT);
	_exit(2);
}

/* pg_stat_activity: what the launcher is doing, when it changes. */
static void
report_activity(const char *fmt,...)
{
	char		buf[128];
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (reported_activity != NULL && strcmp(reported_activity, buf) == 0)
		return;
	if (reported_activity != NULL)
		pfree(reported_activity);
	reported_activity = MemoryContextStrdup(TopMemoryContext, buf);
	SetCurrentStatementStartTimestamp();	/* query_start: since when */
	pgstat_report_activity(STATE_IDLE, buf);
}

static int
stop_timeout_ms(void)
{
	return PGRAFT_STOP_TIMEOUT_MS + 2 * applied.election_timeout;
}

static void
stop_node(const char *why)
{
	if (!pgraft_node_running())
		return;
	report_activity("stopping node %d (PID %d)", pgraft_node_id, (int) pgraft_node_pid());
	pgraft_node_stop(why, stop_timeout_ms());
}

/* Exit callback: a FATAL error must not leave the node running without its launcher. */
static void
launcher_exit(int code, Datum arg)
{
	stop_node("the pgraft launcher is exiting");
	pgraft_status_launcher(0);
}

/* A path for a shell command line: quoted when it has anything but harmless characters. */
static char *
shell_quote(const char *s)
{
	StringInfoData q;
	bool		plain = s[0] != '\0';

	for (const char *p = s; *p && plain; p++)
		plain = strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
					   "/._-+=:,@%", *p) != NULL;
	if (plain)
		return pstrdup(s);
	initStringInfo(&q);
	appendStringInfoChar(&q, '\'');
	for (const char *p = s; *p; p++)
	{
		if (*p == '\'')
			appendStringInfoString(&q, "'\\''");
		else
			appendStringInfoChar(&q, *p);
	}
	appendStringInfoChar(&q, '\'');
	return q.data;
}

/*
 * pgraft 1.0 kept the node's data in "<data_directory>/pgraft". With the default
 * pgraft.data_dir (now "<data_directory>.pgraft") such a directory is the node's real state:
 * starting a fresh node next to it would lose it, so say how to move it and start nothing.
 */
static bool
refuse_old_layout(void)
{
	char	   *old;
	struct stat st;
	char	   *why;

	if (pgraft_data_dir[0] != '\0')
		return false;
	old = psprintf("%s/%s", DataDir, PGRAFT_OLD_DATA_DIR);
	if (lstat(old, &st) != 0)
		return false;
	why = psprintf("not starting pgraft node %d: its data is in \"%s\", inside the "
				   "PostgreSQL data directory (the pgraft 1.0 layout)", pgraft_node_id, old);
	pgraft_status_set_error(why);
	if (lstat(data_dir, &st) == 0)
		ereport(WARNING,
				(errmsg("pgraft launcher: %s", why),
				 errdetail("The node's data directory is now \"%s\", next to the PostgreSQL "
						   "data directory, and it exists as well.", data_dir),
				 errhint("Keep the directory that holds the node's state: if it is \"%s\", "
						 "remove or rename \"%s\" and move it there with mv %s %s, then "
						 "reload the configuration (pg_ctl reload) to start the node.",
						 old, data_dir, shell_quote(old), shell_quote(data_dir))));
	else
		ereport(WARNING,
				(errmsg("pgraft launcher: %s", why),
				 errdetail("Since pgraft 1.1 the node's data directory is \"%s\", next to the "
						   "PostgreSQL data directory, whose contents base backups, pg_rewind "
						   "and pg_upgrade copy or replace.", data_dir),
				 errhint("Move it as the PostgreSQL OS user (the node is not running): "
						 "mv %s %s, then reload the configuration (pg_ctl reload) to start "
						 "the node.", shell_quote(old), shell_quote(data_dir))));
	return true;
}

/*
 * "path" with symbolic links resolved as far as it exists: the real path of its longest
 * existing prefix, followed by the rest. NULL if even that cannot be resolved.
 */
static char *
resolve_path(const char *path)
{
	char	   *head = pstrdup(path);
	char	   *real;
	char	   *result;
	const char *tail;

	for (;;)
	{
		char	   *slash;

		real = realpath(head, NULL);
		if (real != NULL || errno != ENOENT)
			break;
		slash = strrchr(head, '/');
		if (slash == NULL || strcmp(head, "/") == 0)
			break;
		if (slash == head)
			slash++;			/* "/name" -> "/" */
		*slash = '\0';
	}
	if (real == NULL)
		return NULL;
	tail = path + strlen(head);
	result = psprintf("%s%s", real, tail);
	free(real);
	canonicalize_path(result);
	return result;
}

/*
 * The node's data directory, if it resolves (symbolic links followed) into the PostgreSQL
 * data directory -- the check hook compared the paths only: set "blocked", say why.
 */
static bool
refuse_inside(void)
{
	char	   *real_dir = resolve_path(data_dir);
	char	   *real_pgdata = resolve_path(DataDir);
	char	   *why;

	if (real_dir == NULL || real_pgdata == NULL || !pgraft_path_inside(real_dir, real_pgdata))
		return false;
	why = psprintf("not starting pgraft node %d: its data directory \"%s\" is inside "
				   "the PostgreSQL data directory", pgraft_node_id, data_dir);
	pgraft_status_set_error(why);
	ereport(WARNING,
			(errmsg("pgraft launcher: %s", why),
			 errdetail("\"%s\" resolves to \"%s\", inside \"%s\".", data_dir, real_dir,
					   real_pgdata),
			 errhint("Set pgraft.data_dir to a directory outside the data directory, or "
					 "leave it empty for the default \"%s%s\", and restart PostgreSQL.",
					 DataDir, PGRAFT_DATA_DIR_SUFFIX)));
	blocked = true;
	return true;
}

/*
 * Before a start: the node's data directory is not the 1.0 one, does not resolve into the
 * PostgreSQL data directory (checked before and after creating it) and exists. Returns
 * false having set "blocked" when it must not be used, and false with "blocked" unset when
 * it could not be created (retried after the backoff).
 */
static bool
prepare_data_dir(void)
{
	char	   *copy = pstrdup(data_dir);
	char	   *why;

	if (refuse_old_layout())
	{
		blocked = true;
		return false;
	}
	if (refuse_inside())
		return false;
	if (pg_mkdir_p(copy, S_IRWXU) != 0 && errno != EEXIST)
	{
		why = psprintf("could not create pgraft.data_dir \"%s\": %s", data_dir,
					   strerror(errno));
		pgraft_status_set_error(why);
		ereport(LOG,
				(errmsg("pgraft launcher: %s", why),
				 errhint("Create it as a directory the PostgreSQL OS user owns (mode 0700), "
						 "or set pgraft.data_dir to one it may create.")));
		return false;
	}
	return !refuse_inside();
}

static void
describe_change(StringInfo s, const char *name, int before, int after, const char *unit)
{
	if (before == after)
		return;
	appendStringInfo(s, "%s%s %d%s -> %d%s", s->len ? ", " : "", name, before, unit, after,
					 unit);
}

/*
 * After a reload: the reloadable settings may have changed the node's command line. Then
 * restart the node with it (no backoff) -- unless the new combination is invalid, which is
 * logged while the node keeps running with what it has.
 */
static void
apply_reload(void)
{
	PgraftReloadable now;
	StringInfoData changes;

	if (blocked)
	{
		/* the operator may have moved the 1.0 directory away: try again */
		blocked = false;
		next_start = 0;
	}
	pgraft_reloadable_current(&now);
	if (memcmp(&now, &applied, sizeof(now)) == 0)
		return;
	initStringInfo(&changes);
	describe_change(&changes, "pgraft.election_timeout", applied.election_timeout,
					now.election_timeout, " ms");
	describe_change(&changes, "pgraft.heartbeat_interval", applied.heartbeat_interval,
					now.heartbeat_interval, " ms");
	describe_change(&changes, "pgraft.snapshot_entries", applied.snapshot_entries,
					now.snapshot_entries, "");
	describe_change(&changes, "pgraft.snapshot_bytes", applied.snapshot_bytes,
					now.snapshot_bytes, " kB");
	describe_change(&changes, "pgraft.snapshot_keep", applied.snapshot_keep,
					now.snapshot_keep, "");
	if (now.heartbeat_interval >= now.election_timeout)
	{
		char	   *why = psprintf("ignoring the changed settings (%s): "
								   "pgraft.heartbeat_interval (%d ms) must be shorter than "
								   "pgraft.election_timeout (%d ms)", changes.data,
								   now.heartbeat_interval, now.election_timeout);

		pgraft_status_set_error(why);
		ereport(LOG,
				(errmsg("pgraft launcher: %s", why),
				 errdetail("The pgraft node keeps running with pgraft.election_timeout = "
						   "%d ms and pgraft.heartbeat_interval = %d ms.",
						   applied.election_timeout, applied.heartbeat_interval),
				 errhint("A heartbeat interval of a tenth of the election timeout is usual.")));
		return;
	}
	applied = now;
	pgraft_node_build_args(&applied, data_dir);
	backoff_ms = PGRAFT_BACKOFF_MIN_MS;
	next_start = 0;
	if (pgraft_node_running())
	{
		ereport(LOG, (errmsg("pgraft launcher: restarting pgraft node %d with the changed "
							 "settings: %s", pgraft_node_id, changes.data)));
		stop_node("its settings changed");
	}
	else
		ereport(LOG, (errmsg("pgraft launcher: pgraft node %d will start with the changed "
							 "settings: %s", pgraft_node_id, changes.data)));
}

static void
schedule_start(TimestampTz now)
{
	next_start = TimestampTzPlusMilliseconds(now, backoff_ms);
	backoff_ms = Min(backoff_ms * 2, PGRAFT_BACKOFF_MAX_MS);
	pgraft_status_set_state(PGRAFT_STATE_WAITING, next_start);
}

void
pgraft_launcher_main(Datum main_arg)
{
	MemoryContext loop_cxt;

	pqsignal(SIGTERM, launcher_sigterm);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGINT, SIG_IGN);
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
		proc_exit(0);			/* exit code 0: the postmaster does not start it again */
	}

	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgraft_status_launcher(MyProcPid);
	before_shmem_exit(launcher_exit, (Datum) 0);
	/* inherited by the node: its log records reach the pipe as they are written */
	setenv("PYTHONUNBUFFERED", "1", 1);

	data_dir = MemoryContextStrdup(TopMemoryContext, pgraft_node_data_dir());
	pgraft_reloadable_current(&applied);
	pgraft_node_build_args(&applied, data_dir);
	loop_cxt = AllocSetContextCreate(TopMemoryContext, "pgraft launcher",
									 ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(loop_cxt);

	for (;;)
	{
		int			rc;
		int			events = WL_LATCH_SET | WL_POSTMASTER_DEATH;
		long		timeout = -1;
		TimestampTz now;
		pid_t		pid;
		char	   *how;

		MemoryContextReset(loop_cxt);
		CHECK_FOR_INTERRUPTS();
		if (stop_requested)
		{
			stop_node("PostgreSQL is shutting down");
			ereport(LOG, (errmsg("pgraft launcher: exiting")));
			/* exit code 1: if this was pg_terminate_backend(), the postmaster restarts us */
			proc_exit(1);
		}
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			apply_reload();
		}
		pgraft_node_drain_output();
		if (pgraft_node_reap(&pid, &how))
		{
			long		ran;

			now = GetCurrentTimestamp();
			ran = TimestampDifferenceMilliseconds(started_at, now);
			ereport(LOG, (errmsg("pgraft launcher: pgraft node (PID %d) %s; it will be "
								 "restarted", (int) pid, how)));
			if (ran >= PGRAFT_STABLE_RUN_MS)
				backoff_ms = PGRAFT_BACKOFF_MIN_MS;
			ereport(LOG, (errmsg("pgraft launcher: restarting the pgraft node in %ld ms",
								 backoff_ms)));
			schedule_start(now);
		}

		now = GetCurrentTimestamp();
		if (!pgraft_node_running() && !blocked && now >= next_start)
		{
			if (prepare_data_dir() && pgraft_node_start())
				started_at = now;
			else if (!blocked)
			{
				ereport(LOG, (errmsg("pgraft launcher: retrying in %ld ms", backoff_ms)));
				schedule_start(now);
			}
		}

		if (pgraft_node_running())
		{
			report_activity("node %d running (PID %d)", pgraft_node_id,
							(int) pgraft_node_pid());
			timeout = 1000;		/* also poll, in case a SIGCHLD raced with the latch */
		}
		else if (blocked)
		{
			pgraft_status_set_state(PGRAFT_STATE_STOPPED, 0);
			report_activity("node %d not started: see pgraft_launcher_status()",
							pgraft_node_id);
		}
		else
		{
			report_activity("waiting to restart node %d", pgraft_node_id);
			timeout = Max(TimestampDifferenceMilliseconds(GetCurrentTimestamp(),
														  next_start), 1);
		}
		if (timeout >= 0)
			events |= WL_TIMEOUT;
		if (pgraft_node_output_fd() >= 0)
			events |= WL_SOCKET_READABLE;
		rc = WaitLatchOrSocket(MyLatch, events, pgraft_node_output_fd(), timeout,
							   PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		if (rc & WL_POSTMASTER_DEATH)
		{
			stop_node("the postmaster died");
			proc_exit(1);
		}
	}
}
