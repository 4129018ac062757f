/*
 * sqlfuncs.c -- the SQL-callable C functions other than pgraft_launcher_status() (status.c):
 *
 *   pgraft_socket_path() text           the node's Unix socket (C symbol pgraft_socket_path)
 *   _pgraft_library_version() text      PGRAFT_VERSION (pgraft_library_version)
 *   _pgraft_request_timeout() int       pgraft.request_timeout in ms (pgraft_request_timeout)
 *   _pgraft_result(outcome jsonb) jsonb the bridge's outcome: its result, or the error it
 *                                       describes raised as a PostgreSQL error (pgraft_result)
 *
 * and, not SQL-callable, pgraft_interrupts_pending(): the PL/Python bridge polls it (through
 * ctypes.CDLL(None)) while it waits for the node, to stop waiting when a cancel or terminate
 * is pending.
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "pgraft.h"

PG_FUNCTION_INFO_V1(pgraft_socket_path);
PG_FUNCTION_INFO_V1(pgraft_library_version);
PG_FUNCTION_INFO_V1(pgraft_request_timeout);
PG_FUNCTION_INFO_V1(pgraft_result);

PGDLLEXPORT int pgraft_interrupts_pending(void);

/*
 * pgraft_socket_path() -> text: the node's Unix socket, so that the SQL functions (and
 * roles that may not read data_directory) find it.
 */
Datum
pgraft_socket_path(PG_FUNCTION_ARGS)
{
	char	   *dir = pgraft_node_data_dir();

	if (dir == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the PostgreSQL data directory is not known in this process")));
	PG_RETURN_TEXT_P(cstring_to_text(psprintf("%s/%s", dir, PGRAFT_SOCKET_NAME)));
}

/* _pgraft_library_version() -> text: the version of this library, e.g. "1.1". */
Datum
pgraft_library_version(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(PGRAFT_VERSION));
}

/* _pgraft_request_timeout() -> int: pgraft.request_timeout in milliseconds. */
Datum
pgraft_request_timeout(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(pgraft_request_timeout_ms);
}

/* Nonzero when a query cancel or a terminate request is pending in this backend. */
int
pgraft_interrupts_pending(void)
{
	return (QueryCancelPending || ProcDiePending) ? 1 : 0;
}

static void
malformed(const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_INTERNAL_ERROR),
			 errmsg("malformed pgraft outcome: %s", what)));
}

static bool
get_key(Jsonb *outcome, const char *key, JsonbValue *out)
{
	return getKeyJsonValueFromContainer(&outcome->root, key, strlen(key), out) != NULL;
}

/* The string value of "key"; NULL when it is absent or JSON null. */
static char *
get_string(Jsonb *outcome, const char *key)
{
	JsonbValue	v;

	if (!get_key(outcome, key, &v) || v.type == jbvNull)
		return NULL;
	if (v.type != jbvString)
		malformed(psprintf("\"%s\" is not a string", key));
	return pnstrdup(v.val.string.val, v.val.string.len);
}

/* "NNNNN", 5 characters of [0-9A-Z] (and not a success class "00"), else XX000 */
static int
parse_sqlstate(const char *s)
{
	if (s == NULL || strlen(s) != 5 || (s[0] == '0' && s[1] == '0'))
		return ERRCODE_INTERNAL_ERROR;
	for (int i = 0; i < 5; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'Z')))
			return ERRCODE_INTERNAL_ERROR;
	return MAKE_SQLSTATE(s[0], s[1], s[2], s[3], s[4]);
}

/*
 * The bridge stopped waiting for the node because PostgreSQL has an interrupt pending:
 * process it here. A cancel or statement timeout (ERROR) is raised again with its SQLSTATE
 * and message, and the bridge's detail and hint (for a write: its outcome is unknown); a
 * terminate (FATAL) ends the backend. Nothing pending any more: 57014 with the bridge's text.
 */
static void
raise_interrupted(const char *message, const char *detail, const char *hint)
{
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		CHECK_FOR_INTERRUPTS();
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		const char *d;
		const char *h;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		d = detail ? detail : edata->detail;
		h = hint ? hint : edata->hint;
		ereport(ERROR,
				(errcode(edata->sqlerrcode),
				 errmsg_internal("%s", edata->message),
				 d ? errdetail_internal("%s", d) : 0,
				 h ? errhint("%s", h) : 0));
	}
	PG_END_TRY();
	ereport(ERROR,
			(errcode(ERRCODE_QUERY_CANCELED),
			 errmsg_internal("%s", message),
			 detail ? errdetail_internal("%s", detail) : 0,
			 hint ? errhint("%s", hint) : 0));
}

/*
 * _pgraft_result(outcome jsonb) -> jsonb:
 *   {"ok": true, "result": X}  -> X (SQL NULL when X is JSON null or absent)
 *   {"ok": false, "sqlstate": S, "message": M, "detail": D, "hint": H} -> ERROR S
 *   {"ok": false, "interrupted": true, "message": M, "detail": D, "hint": H}
 *       -> the pending interrupt is processed (raise_interrupted)
 */
Datum
pgraft_result(PG_FUNCTION_ARGS)
{
	Jsonb	   *outcome;
	JsonbValue	v;
	char	   *message;
	char	   *detail;
	char	   *hint;

	if (PG_ARGISNULL(0))
		malformed("it is NULL");
	outcome = PG_GETARG_JSONB_P(0);
	if (!JB_ROOT_IS_OBJECT(outcome))
		malformed("it is not a JSON object");
	if (!get_key(outcome, "ok", &v) || v.type != jbvBool)
		malformed("\"ok\" is not true or false");
	if (v.val.boolean)
	{
		if (!get_key(outcome, "result", &v) || v.type == jbvNull)
			PG_RETURN_NULL();
		PG_RETURN_JSONB_P(JsonbValueToJsonb(&v));
	}

	message = get_string(outcome, "message");
	if (message == NULL)
		message = "the pgraft node reported an error without a message";
	detail = get_string(outcome, "detail");
	hint = get_string(outcome, "hint");
	if (get_key(outcome, "interrupted", &v) && v.type == jbvBool && v.val.boolean)
		raise_interrupted(message, detail, hint);
	ereport(ERROR,
			(errcode(parse_sqlstate(get_string(outcome, "sqlstate"))),
			 errmsg_internal("%s", message),
			 detail ? errdetail_internal("%s", detail) : 0,
			 hint ? errhint("%s", hint) : 0));
	PG_RETURN_NULL();			/* not reached */
}
