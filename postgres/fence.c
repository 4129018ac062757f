/*
 * fence.c -- HA mode's fencing: a server whose pgraft node no longer holds the primary's
 * lease commits nothing.
 *
 * In HA mode (pgraft.ha_lease_file set) a `pgraft serve --postgres` node runs this server
 * and keeps the primary's lease in a file of 16 bytes that it writes in place:
 *
 *     bytes 0..7   the ASCII magic "PGRAFTL1"
 *     bytes 8..15  the deadline: a little-endian signed int64, nanoseconds of CLOCK_BOOTTIME
 *                  (Python's time.clock_gettime_ns(time.CLOCK_BOOTTIME); one clock for all
 *                  processes, monotonic, and -- unlike CLOCK_MONOTONIC -- counting the time
 *                  the machine was suspended, so a primary whose machine sleeps through its
 *                  lease wakes up fenced)
 *
 * The node creates the file once and then renews the lease with one 8-byte pwrite() at
 * offset 8 (never a rename), so a backend keeps the file open and reads 16 bytes per check.
 *
 * pwrite() and pread() of the same bytes are not atomic against each other (the kernel
 * copies bytes), so a read that overlaps a renewal may mix the old and the new deadline's
 * bytes. That decides only the one check that overlapped the write: while the node renews
 * (a new deadline in the future) the commit may pass either way, and at worst a torn read
 * refuses one commit. A lease is revoked by writing 0, never a negative value: a read torn
 * between a deadline and 0 is at most that deadline.
 *
 * Checked, in every backend where the library is preloaded:
 *   - XACT_EVENT_PRE_COMMIT, XACT_EVENT_PARALLEL_PRE_COMMIT and XACT_EVENT_PRE_PREPARE of a
 *     transaction that has an xid (it wrote something): read-only transactions are never
 *     checked and cost nothing;
 *   - COMMIT PREPARED (a ProcessUtility hook): it writes its commit record while it runs,
 *     before the pre-commit callbacks of the transaction it runs in.
 * A deadline that has passed, or a missing, unreadable or malformed file, is an ERROR with
 * SQLSTATE 25006 (read_only_sql_transaction, what a standby answers to a write): the
 * transaction aborts, so a primary that was paused past its lease and resumes cannot commit.
 *
 * Cost: fstat() (has the file been removed or replaced? then reopen it) and pread() of 16
 * bytes, plus clock_gettime() (vDSO, no system call): measured at 1.5-1.9 us per writing
 * commit on the development machine (a 2-core VM, where each of the two system calls costs
 * about 0.8 us; 0.8-0.9 us with the pread alone), against a commit's WAL flush of tens of
 * microseconds to milliseconds.
 *
 * What remains (postgres/README.md, "HA mode"): the window between the check and the commit
 * record's flush, and the reads, which are not fenced.
 */
#include "postgres.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "access/xact.h"
#include "nodes/parsenodes.h"
#include "storage/fd.h"
#include "tcop/utility.h"

#include "pgraft.h"

#define PGRAFT_LEASE_MAGIC "PGRAFTL1"
#define PGRAFT_LEASE_SIZE 16

/* the lease file, kept open across transactions; -1 when not open */
static int	lease_fd = -1;
static ProcessUtility_hook_type prev_process_utility = NULL;

static void
close_lease(void)
{
	if (lease_fd < 0)
		return;
	close(lease_fd);
	ReleaseExternalFD();
	lease_fd = -1;
}

static bool
open_lease(char **why)
{
	int			save_errno;

	/* counted by fd.c, which keeps PostgreSQL's own files under max_files_per_process */
	ReserveExternalFD();
	lease_fd = open(pgraft_ha_lease_file, O_RDONLY | O_CLOEXEC);
	if (lease_fd >= 0)
		return true;
	save_errno = errno;
	ReleaseExternalFD();
	*why = psprintf("The lease file \"%s\" could not be opened: %s.", pgraft_ha_lease_file,
					strerror(save_errno));
	return false;
}

/*
 * Read the lease's deadline into *deadline. False with a palloc'd sentence in *why when the
 * file is missing, unreadable or not a lease file.
 */
static bool
read_lease(int64 *deadline, char **why)
{
	unsigned char buf[PGRAFT_LEASE_SIZE];
	ssize_t		n = 0;
	int			save_errno = 0;
	uint64		value = 0;
	struct stat st;

	/* removed, or replaced by a rename: the lease is now whatever the path holds */
	if (lease_fd >= 0 && (fstat(lease_fd, &st) != 0 || st.st_nlink == 0))
		close_lease();
	for (int attempt = 0; attempt < 2; attempt++)
	{
		if (lease_fd < 0 && !open_lease(why))
			return false;
		n = pread(lease_fd, buf, sizeof(buf), 0);
		if (n == (ssize_t) sizeof(buf))
			break;
		save_errno = errno;
		close_lease();			/* reopen once: the file may have been recreated */
	}
	if (n < 0)
	{
		*why = psprintf("The lease file \"%s\" could not be read: %s.", pgraft_ha_lease_file,
						strerror(save_errno));
		return false;
	}
	if (n != (ssize_t) sizeof(buf))
	{
		*why = psprintf("The lease file \"%s\" has %d bytes instead of %d.",
						pgraft_ha_lease_file, (int) n, PGRAFT_LEASE_SIZE);
		return false;
	}
	if (memcmp(buf, PGRAFT_LEASE_MAGIC, 8) != 0)
	{
		close_lease();
		*why = psprintf("The file \"%s\" does not start with \"%s\": it is not a pgraft lease "
						"file.", pgraft_ha_lease_file, PGRAFT_LEASE_MAGIC);
		return false;
	}
	for (int i = PGRAFT_LEASE_SIZE - 1; i >= 8; i--)
		value = (value << 8) | buf[i];
	*deadline = (int64) value;
	return true;
}

static int64
lease_clock_ns(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_BOOTTIME, &ts) != 0)
		elog(ERROR, "clock_gettime(CLOCK_BOOTTIME) failed: %m");
	return (int64) ts.tv_sec * INT64CONST(1000000000) + ts.tv_nsec;
}

/* ERROR 25006 unless the lease is held now; "action" completes "cannot ..." */
static void
check_lease(const char *action)
{
	int64		deadline;
	int64		now;
	char	   *why = NULL;

	if (read_lease(&deadline, &why))
	{
		now = lease_clock_ns();
		if (now < deadline)
			return;
		why = psprintf("The primary lease in \"%s\" expired %lld ms ago.",
					   pgraft_ha_lease_file, (long long) ((now - deadline) / 1000000));
	}
	ereport(ERROR,
			(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
			 errmsg("cannot %s: this server no longer holds the pgraft primary lease", action),
			 errdetail_internal("%s", why),
			 errhint("Connect to the current primary: pgraft_get_leader() names it, or use "
					 "target_session_attrs=read-write.")));
}

static void
fence_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PARALLEL_PRE_COMMIT:
			if (TransactionIdIsValid(GetTopTransactionIdIfAny()))
				check_lease("commit");
			break;
		case XACT_EVENT_PRE_PREPARE:
			if (TransactionIdIsValid(GetTopTransactionIdIfAny()))
				check_lease("prepare the transaction");
			break;
		default:
			break;
	}
}

static void
fence_process_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
					  ProcessUtilityContext context, ParamListInfo params,
					  QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *stmt = pstmt->utilityStmt;

	if (IsA(stmt, TransactionStmt) &&
		((TransactionStmt *) stmt)->kind == TRANS_STMT_COMMIT_PREPARED)
		check_lease("commit the prepared transaction");
	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context, params, queryEnv,
							 dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params, queryEnv,
								dest, qc);
}

/*
 * From _PG_init in the postmaster (shared_preload_libraries) in HA mode: every backend it
 * forks inherits the callback and the hook.
 */
void
pgraft_fence_install(void)
{
	RegisterXactCallback(fence_xact_callback, NULL);
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = fence_process_utility;
}
