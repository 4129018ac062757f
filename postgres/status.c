/*
 * status.c -- the launcher's status in shared memory, and pgraft_launcher_status().
 *
 * The launcher writes the struct (its own PID, the node's PID, the state, the restart
 * count, the last exit and the last warning-or-worse line the node logged); any backend
 * reads it. A spinlock guards it: the critical sections only copy a few bytes.
 * The shared memory exists only when pgraft is in shared_preload_libraries.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "pgraft.h"

PG_FUNCTION_INFO_V1(pgraft_launcher_status);

#define PGRAFT_LAST_EXIT_LEN 128
#define PGRAFT_LAST_ERROR_LEN 1024

typedef struct PgraftStatus
{
	slock_t		mutex;
	pid_t		launcher_pid;	/* 0: not running */
	pid_t		node_pid;		/* 0: not running */
	PgraftState state;
	int64		starts;			/* node processes started since the server started */
	TimestampTz started_at;		/* of the running node; 0: none */
	TimestampTz last_exit_at;	/* 0: never exited */
	TimestampTz next_start;		/* in state 'waiting' */
	char		last_exit[PGRAFT_LAST_EXIT_LEN];
	char		last_error[PGRAFT_LAST_ERROR_LEN];
} PgraftStatus;

static PgraftStatus *status = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
status_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(PgraftStatus)));
}

/* In the postmaster at start and after a crash restart (shared memory is new then). */
static void
status_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	status = ShmemInitStruct("pgraft launcher status", sizeof(PgraftStatus), &found);
	if (!found)
	{
		memset(status, 0, sizeof(PgraftStatus));
		SpinLockInit(&status->mutex);
		if (pgraft_ha_lease_file[0] != '\0')
			status->state = PGRAFT_STATE_HA;
		else if (pgraft_node_id > 0)
			status->state = PGRAFT_STATE_STOPPED;
		else
			status->state = PGRAFT_STATE_DISABLED;
	}
	LWLockRelease(AddinShmemInitLock);
}

/* From _PG_init while loading shared_preload_libraries. */
void
pgraft_status_install_hooks(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = status_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = status_shmem_startup;
}

/* Copy "src" into a buffer of "size" bytes, cut at a character boundary. */
static void
copy_clipped(char *dst, const char *src, size_t size)
{
	int			len = strlen(src);

	if (len >= (int) size)
		len = pg_mbcliplen(src, len, size - 1);
	memcpy(dst, src, len);
	dst[len] = '\0';
}

void
pgraft_status_launcher(pid_t launcher_pid)
{
	if (status == NULL)
		return;
	SpinLockAcquire(&status->mutex);
	status->launcher_pid = launcher_pid;
	if (launcher_pid == 0)
	{
		status->node_pid = 0;
		status->started_at = 0;
		status->next_start = 0;
		if (status->state != PGRAFT_STATE_DISABLED)
			status->state = PGRAFT_STATE_STOPPED;
	}
	SpinLockRelease(&status->mutex);
}

void
pgraft_status_node_started(pid_t node_pid, TimestampTz at)
{
	if (status == NULL)
		return;
	SpinLockAcquire(&status->mutex);
	status->node_pid = node_pid;
	status->started_at = at;
	status->next_start = 0;
	status->state = PGRAFT_STATE_RUNNING;
	status->starts++;
	SpinLockRelease(&status->mutex);
}

void
pgraft_status_node_exited(const char *how, TimestampTz at)
{
	char		buf[PGRAFT_LAST_EXIT_LEN];

	if (status == NULL)
		return;
	copy_clipped(buf, how, sizeof(buf));
	SpinLockAcquire(&status->mutex);
	status->node_pid = 0;
	status->started_at = 0;
	status->last_exit_at = at;
	memcpy(status->last_exit, buf, sizeof(buf));
	SpinLockRelease(&status->mutex);
}

void
pgraft_status_set_state(PgraftState state, TimestampTz next_start)
{
	if (status == NULL)
		return;
	SpinLockAcquire(&status->mutex);
	status->state = state;
	status->next_start = (state == PGRAFT_STATE_WAITING) ? next_start : 0;
	SpinLockRelease(&status->mutex);
}

void
pgraft_status_set_error(const char *message)
{
	char		buf[PGRAFT_LAST_ERROR_LEN];

	if (status == NULL)
		return;
	copy_clipped(buf, message, sizeof(buf));
	SpinLockAcquire(&status->mutex);
	memcpy(status->last_error, buf, sizeof(buf));
	SpinLockRelease(&status->mutex);
}

static const char *
state_name(PgraftState state)
{
	switch (state)
	{
		case PGRAFT_STATE_DISABLED:
			return "disabled";
		case PGRAFT_STATE_RUNNING:
			return "running";
		case PGRAFT_STATE_WAITING:
			return "waiting";
		case PGRAFT_STATE_STOPPING:
			return "stopping";
		case PGRAFT_STATE_STOPPED:
			return "stopped";
		case PGRAFT_STATE_HA:
			return "ha mode";
	}
	return "unknown";
}

/*
 * pgraft_launcher_status() -> one row: launcher_pid int, node_pid int, state text,
 * restarts bigint, started_at timestamptz, last_exit text, last_exit_at timestamptz,
 * next_start timestamptz, last_error text. NULL where a value does not apply.
 * Declared RETURNS TABLE (a set) or RETURNS record with OUT parameters: one row either way.
 */
Datum
pgraft_launcher_status(PG_FUNCTION_ARGS)
{
	PgraftStatus copy;
	TupleDesc	tupdesc;
	Datum		values[9];
	bool		nulls[9];

	if (status == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pgraft is not loaded by shared_preload_libraries"),
				 errdetail("The pgraft launcher and its status exist only when the library "
						   "is preloaded by the postmaster."),
				 errhint("Add pgraft to shared_preload_libraries in postgresql.conf and "
						 "restart PostgreSQL.")));
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("function returning record called in context that cannot accept "
						"type record")));
	if (tupdesc->natts != 9)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("pgraft_launcher_status() must be declared with 9 result columns, "
						"not %d", tupdesc->natts),
				 errhint("Update the pgraft extension (ALTER EXTENSION pgraft UPDATE).")));
	tupdesc = BlessTupleDesc(tupdesc);

	SpinLockAcquire(&status->mutex);
	memcpy(&copy, status, sizeof(copy));
	SpinLockRelease(&status->mutex);

	memset(nulls, 0, sizeof(nulls));
	values[0] = Int32GetDatum((int32) copy.launcher_pid);
	nulls[0] = copy.launcher_pid == 0;
	values[1] = Int32GetDatum((int32) copy.node_pid);
	nulls[1] = copy.node_pid == 0;
	values[2] = CStringGetTextDatum(state_name(copy.state));
	values[3] = Int64GetDatum(copy.starts > 0 ? copy.starts - 1 : 0);
	values[4] = TimestampTzGetDatum(copy.started_at);
	nulls[4] = copy.started_at == 0;
	values[5] = CStringGetTextDatum(copy.last_exit);
	nulls[5] = copy.last_exit[0] == '\0';
	values[6] = TimestampTzGetDatum(copy.last_exit_at);
	nulls[6] = copy.last_exit_at == 0;
	values[7] = TimestampTzGetDatum(copy.next_start);
	nulls[7] = copy.next_start == 0;
	values[8] = CStringGetTextDatum(copy.last_error);
	nulls[8] = copy.last_error[0] == '\0';

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
