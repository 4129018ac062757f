/*
 * nodelog.c -- the node's log records into the server log.
 *
 * The node runs with --log-format launcher: each record is one line "LEVEL:message" on its
 * stderr (a pipe read by the launcher, node.c), LEVEL one of DEBUG, INFO, WARNING, ERROR,
 * CRITICAL; inside the message a backslash is written "\\" and a newline "\n". Each record is
 * ereported as "pgraft node <id>: <message>" at DEBUG1 (DEBUG), LOG (INFO) or WARNING
 * (WARNING, ERROR, CRITICAL), so that PostgreSQL adds its log_line_prefix and applies
 * log_min_messages. Any other line (a Python crash before logging was set up, output of a
 * library) is logged at LOG as it is. The last warning-or-worse record is kept in shared
 * memory for pgraft_launcher_status().last_error.
 */
#include "postgres.h"

#include "lib/stringinfo.h"

#include "pgraft.h"

typedef struct NodeLevel
{
	const char *prefix;
	int			elevel;
} NodeLevel;

static const NodeLevel node_levels[] = {
	{"DEBUG:", DEBUG1},
	{"INFO:", LOG},
	{"WARNING:", WARNING},
	{"ERROR:", WARNING},
	{"CRITICAL:", WARNING},
};

/* "\\" -> "\", "\n" -> newline; any other backslash is kept as it is. */
static void
unescape(StringInfo out, const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
	{
		if (s[i] == '\\' && i + 1 < len && (s[i + 1] == '\\' || s[i + 1] == 'n'))
		{
			appendStringInfoChar(out, s[i + 1] == 'n' ? '\n' : '\\');
			i++;
		}
		else
			appendStringInfoChar(out, s[i]);
	}
}

/*
 * One line of the node's output, without its newline. NUL bytes and invalid encoding are
 * the node's business; the server log gets the bytes up to the first NUL.
 */
void
pgraft_node_log_line(const char *line, size_t len)
{
	StringInfoData msg;
	int			elevel = LOG;
	bool		record = false;

	if (len > 0 && line[len - 1] == '\r')
		len--;
	initStringInfo(&msg);
	for (int i = 0; i < (int) lengthof(node_levels); i++)
	{
		size_t		n = strlen(node_levels[i].prefix);

		if (len >= n && memcmp(line, node_levels[i].prefix, n) == 0)
		{
			elevel = node_levels[i].elevel;
			unescape(&msg, line + n, len - n);
			record = true;
			break;
		}
	}
	if (!record)
		appendBinaryStringInfo(&msg, line, (int) len);
	if (elevel >= WARNING)
		pgraft_status_set_error(msg.data);
	ereport(elevel,
			(errmsg_internal("pgraft node %d: %s", pgraft_node_id, msg.data),
			 errhidestmt(true)));
	pfree(msg.data);
}
