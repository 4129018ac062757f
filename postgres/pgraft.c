/*
 * pgraft.c -- the PostgreSQL side of pgraft: _PG_init.
 *
 * With shared_preload_libraries = 'pgraft' the postmaster defines the pgraft.* settings
 * (settings.c; an invalid value stops the server from starting), reserves the launcher's
 * status in shared memory (status.c) and registers the background worker "pgraft launcher"
 * (launcher.c), which runs this server's pgraft node process (node.c). In HA mode
 * (pgraft.ha_lease_file set) a `pgraft serve --postgres` node runs this server instead: no
 * launcher is registered, and every backend checks the node's lease before it commits a
 * write (fence.c). Loaded into a backend only (no preload), the library defines the
 * settings and serves the SQL functions (sqlfuncs.c); pgraft_launcher_status() then says
 * that it is not preloaded.
 * The files and what they share: pgraft.h.
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"

#include "pgraft.h"

PG_MODULE_MAGIC;

PGDLLEXPORT void _PG_init(void);

void
_PG_init(void)
{
	bool		preloading = process_shared_preload_libraries_in_progress;

	/*
	 * pg_upgrade runs the old and the new server in binary-upgrade mode, with their
	 * postgresql.conf (so with pgraft preloaded). Define the settings, so that their values
	 * are accepted, but refuse nothing and start no node: the node must not run while its
	 * server is being upgraded (its system identifier changes; see `pgraft storage
	 * rebind-postgres`).
	 */
	if (IsBinaryUpgrade)
	{
		pgraft_settings_init(false, false);
		return;
	}
	pgraft_settings_init(preloading, true);
	if (!preloading)
		return;
	pgraft_status_install_hooks();
	if (pgraft_ha_lease_file[0] != '\0')
		pgraft_fence_install();
	else
		pgraft_register_launcher();
}
