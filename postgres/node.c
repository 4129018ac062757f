/*
 * node.c -- the pgraft node process, as the launcher runs it:
 *
 *     <pgraft.python> -m pgraft serve --id N --address HOST --port PORT --data-dir DIR
 *         [--initial-cluster SPEC] --election-timeout MS --heartbeat-interval MS
 *         --snapshot-entries N --snapshot-bytes BYTES --snapshot-keep N
 *         --log-format launcher --pg-system-id ID
 *         [--secret-file F] [--tls-cert F --tls-key F --tls-ca F]
 *
 * Its stdout and stderr are one pipe that the launcher drains (non-blocking, whenever the
 * launcher's wait says it is readable, and also while it waits for the node to stop, so that
 * the node can never block on a full pipe); nodelog.c turns the lines into server log
 * records. stdin is /dev/null, every other descriptor PostgreSQL had open is closed.
 *
 * Signals: the node is exec'd with SIGQUIT ignored (so that a SIGQUIT that arrives before the
 * node has installed its own handler cannot dump core) and every other signal at its default;
 * PR_SET_PDEATHSIG sends it SIGTERM if the launcher dies. It stays in the launcher's process
 * group, so the postmaster's signals to the launcher (which are sent to the whole group)
 * reach it too: SIGTERM at a fast shutdown, SIGQUIT at an immediate shutdown or a crash of
 * another process, and the final SIGKILL.
 */
#include "postgres.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "access/xlog.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "storage/pmsignal.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "pgraft.h"

/* a longer line of the node's output is logged in pieces */
#define PGRAFT_MAX_LINE 65536
/* what one drain call reads at most, so that the launcher stays responsive to a flood */
#define PGRAFT_DRAIN_CHUNKS 64

typedef struct NodeArgs
{
	char	   *argv[64];
	int			argc;
	char	   *display;
} NodeArgs;

static NodeArgs args;
static MemoryContext args_cxt = NULL;

/* read by the launcher's SIGQUIT handler */
static volatile pid_t node_pid = 0;
/* the read end of the node's stdout/stderr pipe; -1 when none is open */
static int	out_fd = -1;
/* a partial line of the node's output */
static StringInfoData linebuf;
static bool linebuf_ready = false;

static void
add_arg(const char *arg)
{
	Assert(args.argc < (int) lengthof(args.argv) - 1);
	args.argv[args.argc++] = pstrdup(arg);
}

/* The node's command line from the PGC_POSTMASTER settings and the given reloadable ones. */
void
pgraft_node_build_args(const PgraftReloadable *r, const char *data_dir)
{
	MemoryContext old;
	StringInfoData s;

	if (args_cxt == NULL)
		args_cxt = AllocSetContextCreate(TopMemoryContext, "pgraft node command line",
										 ALLOCSET_SMALL_SIZES);
	else
		MemoryContextReset(args_cxt);
	old = MemoryContextSwitchTo(args_cxt);

	args.argc = 0;
	add_arg(pgraft_python);
	add_arg("-m");
	add_arg("pgraft");
	add_arg("serve");
	add_arg("--id");
	add_arg(psprintf("%d", pgraft_node_id));
	add_arg("--address");
	add_arg(pgraft_address);
	add_arg("--port");
	add_arg(psprintf("%d", pgraft_port));
	add_arg("--data-dir");
	add_arg(data_dir);
	if (pgraft_initial_cluster[0] != '\0')
	{
		add_arg("--initial-cluster");
		add_arg(pgraft_initial_cluster);
	}
	add_arg("--election-timeout");
	add_arg(psprintf("%d", r->election_timeout));
	add_arg("--heartbeat-interval");
	add_arg(psprintf("%d", r->heartbeat_interval));
	add_arg("--snapshot-entries");
	add_arg(psprintf("%d", r->snapshot_entries));
	add_arg("--snapshot-bytes");
	add_arg(psprintf("%lld", (long long) r->snapshot_bytes * 1024));
	add_arg("--snapshot-keep");
	add_arg(psprintf("%d", r->snapshot_keep));
	add_arg("--log-format");
	add_arg("launcher");
	add_arg("--pg-system-id");
	add_arg(psprintf(UINT64_FORMAT, GetSystemIdentifier()));
	if (pgraft_secret_file != NULL && pgraft_secret_file[0] != '\0')
	{
		add_arg("--secret-file");
		add_arg(pgraft_secret_file);
	}
	if (pgraft_tls_cert != NULL && pgraft_tls_cert[0] != '\0')
	{
		add_arg("--tls-cert");
		add_arg(pgraft_tls_cert);
		add_arg("--tls-key");
		add_arg(pgraft_tls_key);
		add_arg("--tls-ca");
		add_arg(pgraft_tls_ca);
	}
	args.argv[args.argc] = NULL;

	initStringInfo(&s);
	for (int i = 0; i < args.argc; i++)
		appendStringInfo(&s, i ? " %s" : "%s", args.argv[i]);
	args.display = s.data;
	MemoryContextSwitchTo(old);
}

const char *
pgraft_node_command(void)
{
	return args.display;
}

bool
pgraft_node_running(void)
{
	return node_pid > 0;
}

/* Async-signal-safe: the launcher's SIGQUIT handler calls it. */
pid_t
pgraft_node_pid(void)
{
	return node_pid;
}

int
pgraft_node_output_fd(void)
{
	return out_fd;
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

/*
 * In the child, between fork() and exec(): only async-signal-safe calls. On failure the
 * child writes its errno to "errfd" (close-on-exec, so the launcher reads EOF on success).
 */
static void
exec_node(int outfd, int errfd, int maxfd, pid_t launcher)
{
	sigset_t	none;
	int			devnull;
	int			e;

	/* first, so that no SIGQUIT finds its default action (core) */
	signal(SIGQUIT, SIG_IGN);	/* the node installs its own handler (exit 2, no core) */
	for (int sig = 1; sig < NSIG; sig++)
		if (sig != SIGQUIT)
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
	if (dup2(outfd, 1) < 0 || dup2(outfd, 2) < 0)
	{
		e = errno;
		if (write(errfd, &e, sizeof(e)) < 0)
			_exit(127);
		_exit(127);
	}
	/* close everything else PostgreSQL had open */
	for (int fd = 3; fd < maxfd; fd++)
		if (fd != errfd)
			(void) close(fd);
	execv(args.argv[0], args.argv);
	e = errno;
	if (write(errfd, &e, sizeof(e)) < 0)
		_exit(127);
	_exit(127);
}

/*
 * Fork and exec the node. Returns false (having logged why, and set last_error) when it
 * could not be started; the launcher retries later.
 */
bool
pgraft_node_start(void)
{
	int			out[2];
	int			errpipe[2];
	int			child_errno = 0;
	ssize_t		n;
	pid_t		pid;
	pid_t		self = getpid();
	long		maxfd = sysconf(_SC_OPEN_MAX);
	char	   *why;

	Assert(node_pid == 0);
	if (access(pgraft_python, X_OK) != 0)
	{
		why = psprintf("cannot run pgraft.python \"%s\": %s", pgraft_python, strerror(errno));
		pgraft_status_set_error(why);
		ereport(LOG,
				(errmsg("pgraft launcher: %s", why),
				 errhint("Run `pgraft postgres install`, or set pgraft.python to the "
						 "interpreter of an environment where pgraft is installed.")));
		return false;
	}
	if (maxfd < 0 || maxfd > 65536)
		maxfd = 65536;
	if (pipe2(out, O_CLOEXEC) != 0)
	{
		why = psprintf("could not create a pipe for the pgraft node's output: %s",
					   strerror(errno));
		pgraft_status_set_error(why);
		ereport(LOG, (errmsg("pgraft launcher: %s", why)));
		return false;
	}
	if (pipe2(errpipe, O_CLOEXEC) != 0)
	{
		why = psprintf("could not create a pipe: %s", strerror(errno));
		close(out[0]);
		close(out[1]);
		pgraft_status_set_error(why);
		ereport(LOG, (errmsg("pgraft launcher: %s", why)));
		return false;
	}
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid == 0)
		exec_node(out[1], errpipe[1], (int) maxfd, self);
	close(out[1]);
	close(errpipe[1]);
	if (pid < 0)
	{
		why = psprintf("could not fork the pgraft node: %s", strerror(errno));
		close(out[0]);
		close(errpipe[0]);
		pgraft_status_set_error(why);
		ereport(LOG, (errmsg("pgraft launcher: %s", why)));
		return false;
	}
	/* EOF: exec succeeded (close-on-exec); an int: the child's errno */
	do
		n = read(errpipe[0], &child_errno, sizeof(child_errno));
	while (n < 0 && errno == EINTR);
	close(errpipe[0]);
	if (n == sizeof(child_errno))
	{
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		close(out[0]);
		why = psprintf("could not execute the pgraft node \"%s\": %s", args.argv[0],
					   strerror(child_errno));
		pgraft_status_set_error(why);
		ereport(LOG, (errmsg("pgraft launcher: %s", why)));
		return false;
	}
	if (fcntl(out[0], F_SETFL, O_NONBLOCK) != 0)
		ereport(LOG, (errmsg("pgraft launcher: could not make the pgraft node's output "
							 "non-blocking: %m")));
	out_fd = out[0];
	node_pid = pid;
	pgraft_status_node_started(pid, GetCurrentTimestamp());
	ereport(LOG, (errmsg("pgraft launcher: started pgraft node %d (PID %d): %s",
						 pgraft_node_id, (int) pid, args.display)));
	return true;
}

/* Complete lines of the node's output to the server log; keep the rest. */
static void
feed_output(const char *data, size_t len)
{
	int			start = 0;
	char	   *nl;

	if (!linebuf_ready)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		initStringInfo(&linebuf);
		MemoryContextSwitchTo(old);
		linebuf_ready = true;
	}
	appendBinaryStringInfo(&linebuf, data, (int) len);
	while ((nl = memchr(linebuf.data + start, '\n', linebuf.len - start)) != NULL)
	{
		int			end = nl - linebuf.data;

		if (end > start)
			pgraft_node_log_line(linebuf.data + start, end - start);
		start = end + 1;
	}
	if (start > 0)
	{
		memmove(linebuf.data, linebuf.data + start, linebuf.len - start);
		linebuf.len -= start;
		linebuf.data[linebuf.len] = '\0';
	}
	if (linebuf.len >= PGRAFT_MAX_LINE)
	{
		pgraft_node_log_line(linebuf.data, linebuf.len);
		resetStringInfo(&linebuf);
	}
}

static void
close_output(void)
{
	if (linebuf_ready && linebuf.len > 0)
	{
		pgraft_node_log_line(linebuf.data, linebuf.len);
		resetStringInfo(&linebuf);
	}
	if (out_fd >= 0)
		close(out_fd);
	out_fd = -1;
}

/*
 * Read what the node wrote, up to PGRAFT_DRAIN_CHUNKS reads ("all": until the pipe is
 * empty, after the node exited). Closes the pipe at EOF.
 */
static void
drain(bool all)
{
	char		buf[8192];

	for (int i = 0; out_fd >= 0 && (all || i < PGRAFT_DRAIN_CHUNKS); i++)
	{
		ssize_t		n = read(out_fd, buf, sizeof(buf));

		if (n > 0)
			feed_output(buf, (size_t) n);
		else if (n == 0)
			close_output();
		else if (errno == EINTR)
			continue;
		else if (errno == EAGAIN || errno == EWOULDBLOCK)
			return;
		else
		{
			ereport(LOG, (errmsg("pgraft launcher: could not read the pgraft node's "
								 "output: %m")));
			close_output();
		}
		/* a process the node left behind may keep writing; do not read it forever */
		if (all && i >= 16 * PGRAFT_DRAIN_CHUNKS)
			return;
	}
}

void
pgraft_node_drain_output(void)
{
	drain(false);
}

/* The node has exited: log what is left of its output, close the pipe. */
static void
node_gone(void)
{
	node_pid = 0;
	drain(true);
	close_output();
}

/*
 * Reap the node if it has exited: returns true with its PID and a description of the exit
 * ("exited with exit code 1", palloc'd) in *how, after its remaining output was logged.
 */
bool
pgraft_node_reap(pid_t *pid_out, char **how)
{
	int			status;
	pid_t		pid = node_pid;
	pid_t		r;

	if (pid <= 0)
		return false;
	r = waitpid(pid, &status, WNOHANG);
	if (r == 0 || (r < 0 && errno == EINTR))
		return false;
	if (r < 0)
		*how = psprintf("could not be waited for: %s", strerror(errno));
	else
		*how = describe_exit(status);
	node_gone();
	*pid_out = pid;
	pgraft_status_node_exited(*how, GetCurrentTimestamp());
	return true;
}

/*
 * Stop the node: SIGTERM, then SIGKILL after timeout_ms. Its output is drained all along.
 * Logs the stop and the exit.
 */
void
pgraft_node_stop(const char *why, int timeout_ms)
{
	pid_t		pid = node_pid;
	pid_t		reaped;
	char	   *how;
	TimestampTz deadline;

	if (pid <= 0)
		return;
	ereport(LOG, (errmsg("pgraft launcher: stopping pgraft node (PID %d): %s", (int) pid,
						 why)));
	pgraft_status_set_state(PGRAFT_STATE_STOPPING, 0);
	kill(pid, SIGTERM);
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	for (;;)
	{
		long		left_ms;

		drain(false);
		if (pgraft_node_reap(&reaped, &how))
		{
			ereport(LOG, (errmsg("pgraft launcher: pgraft node (PID %d) %s", (int) reaped,
								 how)));
			return;
		}
		left_ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (left_ms <= 0)
			break;
		if (!PostmasterIsAlive())
			pg_usleep(20 * 1000L);	/* WaitLatch would return at once, every time */
		else
		{
			int			events = WL_LATCH_SET | WL_TIMEOUT | WL_POSTMASTER_DEATH;

			if (out_fd >= 0)
				events |= WL_SOCKET_READABLE;
			(void) WaitLatchOrSocket(MyLatch, events, out_fd, Min(left_ms, 1000),
									 PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
	}

	ereport(LOG, (errmsg("pgraft launcher: pgraft node (PID %d) did not stop within %d ms; "
						 "killing it", (int) pid, timeout_ms)));
	kill(pid, SIGKILL);
	{
		int			status = 0;
		pid_t		r;

		while ((r = waitpid(pid, &status, 0)) < 0 && errno == EINTR)
			;
		how = r < 0 ? psprintf("could not be waited for: %s", strerror(errno)) :
			describe_exit(status);
	}
	node_gone();
	pgraft_status_node_exited(how, GetCurrentTimestamp());
	ereport(LOG, (errmsg("pgraft launcher: pgraft node (PID %d) %s", (int) pid, how)));
}
