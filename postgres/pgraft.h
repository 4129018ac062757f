/*
 * pgraft.h -- what the files of the pgraft library share.
 *
 *   pgraft.c    _PG_init: defines the settings, requests shared memory, registers the launcher
 *   settings.c  the pgraft.* settings (GUCs): definitions, check hooks, validation at start
 *   launcher.c  the "pgraft launcher" background worker: when to start, restart, stop the node
 *   node.c      the node process: its command line, fork/exec, its output pipe, reap and stop
 *   nodelog.c   the node's log records (read from the pipe) into the server log
 *   status.c    the launcher's status in shared memory and pgraft_launcher_status()
 *   fence.c     HA mode: no commit without the primary's lease (pgraft.ha_lease_file)
 *   sqlfuncs.c  the other SQL-callable functions
 */
#ifndef PGRAFT_H
#define PGRAFT_H

#include "datatype/timestamp.h"

#if PG_VERSION_NUM < 150000
#error "pgraft needs PostgreSQL 15 or later"
#endif

#ifndef PGRAFT_VERSION
#error "PGRAFT_VERSION must be defined (the Makefile takes it from pgraft.control)"
#endif

#ifndef PGRAFT_DEFAULT_PYTHON
#define PGRAFT_DEFAULT_PYTHON "/opt/pgraft/venv/bin/python"
#endif

#define PGRAFT_SOCKET_NAME "node.sock"
/* sizeof(struct sockaddr_un.sun_path) - 1 on Linux */
#define PGRAFT_MAX_SOCKET_PATH 107
/* the default node data directory is "<data_directory>" PGRAFT_DATA_DIR_SUFFIX */
#define PGRAFT_DATA_DIR_SUFFIX ".pgraft"
/* pgraft 1.0 kept the node's data in "<data_directory>/" PGRAFT_OLD_DATA_DIR */
#define PGRAFT_OLD_DATA_DIR "pgraft"

/* ---------------------------------------------------------------- settings.c */
extern int	pgraft_node_id;
extern char *pgraft_address;
extern int	pgraft_port;
extern char *pgraft_initial_cluster;
extern char *pgraft_data_dir;
extern int	pgraft_election_timeout;
extern int	pgraft_heartbeat_interval;
extern int	pgraft_snapshot_entries;
extern int	pgraft_snapshot_bytes;	/* kB */
extern int	pgraft_snapshot_keep;
extern char *pgraft_python;
extern char *pgraft_secret_file;
extern char *pgraft_tls_cert;
extern char *pgraft_tls_key;
extern char *pgraft_tls_ca;
extern char *pgraft_ha_lease_file;	/* "": not HA mode */
extern int	pgraft_request_timeout_ms;	/* ms */

/*
 * The settings a reload may change (PGC_SIGHUP). The launcher keeps the values the running
 * node was started with, so that an invalid reload leaves the node's command line alone.
 */
typedef struct PgraftReloadable
{
	int			election_timeout;	/* ms */
	int			heartbeat_interval; /* ms */
	int			snapshot_entries;
	int			snapshot_bytes; /* kB */
	int			snapshot_keep;
} PgraftReloadable;

extern void pgraft_settings_init(bool strict, bool reserve_prefix);
extern void pgraft_reloadable_current(PgraftReloadable *out);
extern char *pgraft_node_data_dir(void);
extern bool pgraft_path_inside(const char *path, const char *dir);

/* ---------------------------------------------------------------- status.c */
typedef enum PgraftState
{
	PGRAFT_STATE_DISABLED,		/* pgraft.node_id is not set */
	PGRAFT_STATE_RUNNING,		/* the node process is running */
	PGRAFT_STATE_WAITING,		/* until next_start */
	PGRAFT_STATE_STOPPING,		/* SIGTERM sent, waiting for it to exit */
	PGRAFT_STATE_STOPPED,		/* not running and not going to be started by itself */
	PGRAFT_STATE_HA				/* HA mode: the node runs this server, no launcher */
} PgraftState;

extern void pgraft_status_install_hooks(void);
extern void pgraft_status_launcher(pid_t launcher_pid);
extern void pgraft_status_node_started(pid_t node_pid, TimestampTz at);
extern void pgraft_status_node_exited(const char *how, TimestampTz at);
extern void pgraft_status_set_state(PgraftState state, TimestampTz next_start);
extern void pgraft_status_set_error(const char *message);

/* ---------------------------------------------------------------- nodelog.c */
extern void pgraft_node_log_line(const char *line, size_t len);

/* ---------------------------------------------------------------- node.c */
extern void pgraft_node_build_args(const PgraftReloadable *r, const char *data_dir);
extern const char *pgraft_node_command(void);
extern bool pgraft_node_start(void);
extern bool pgraft_node_running(void);
extern pid_t pgraft_node_pid(void);
extern int	pgraft_node_output_fd(void);
extern void pgraft_node_drain_output(void);
extern bool pgraft_node_reap(pid_t *pid, char **how);
extern void pgraft_node_stop(const char *why, int timeout_ms);

/* ---------------------------------------------------------------- fence.c */
extern void pgraft_fence_install(void);

/* ---------------------------------------------------------------- launcher.c */
extern void pgraft_register_launcher(void);
extern PGDLLEXPORT void pgraft_launcher_main(Datum main_arg);

#endif							/* PGRAFT_H */
