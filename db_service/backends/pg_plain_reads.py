"""Which read-only statements can run on PostgreSQL in one round trip, outside a transaction.

A read marked read-only normally runs as ``BEGIN READ ONLY; SET LOCAL statement_timeout`` and
then the statement: two round trips, and the rollback that follows undoes whatever the
statement changed in the session (``set_config(..., false)``, a session advisory lock) before
another client gets the connection. A *plain read* skips all that: the statement alone, in the
implicit transaction of the extended protocol, with the caller's deadline as a cancel request
sent by the client. That is only sound when the statement's own text can neither write nor
change the session, which this module decides, conservatively, from the text:

- one ``SELECT`` (no ``WITH``, which may carry a data-modifying statement), with no ``INTO``
  (creates a table) and no ``FOR`` (row locks, which a read-only transaction would refuse);
- every function it calls is a side-effect-free built-in from ``SAFE_FUNCTIONS``, called by
  its bare name (no schema, no quoted name), so ``set_config``, the advisory-lock functions,
  ``nextval``, ``pg_sleep`` and any user-defined function take the transactional path;
- only the usual built-in operators (a user-defined operator is a function call in disguise);
- no dollar quotes, no backslash in a string literal, no nested comment: text where a wrong
  guess about the server's string or comment rules could hide code from this check.

Anything else, and anything it cannot lex, is not plain: the transactional path is always
correct, only slower. What the text cannot show is what the database's own objects do when
read (a view, rule or row-security policy defined to call a function that writes or sets a
session setting); such a read runs as the database defines it, as it would for a client
connected directly. Read-only clients and databases keep the engine-enforced READ ONLY
transaction for every statement (see ``PostgresBackend.execute``).

Hand-written rather than a full parser (pglast would need a compiled libpg_query per
platform): a token scan with an allow-list only has to be right about what it lets through,
and its verdicts are cached per SQL text.
"""

from __future__ import annotations

import functools
import re
from typing import Final

# Built-in functions that neither write nor change the session: aggregates, window functions,
# and pure text, number, date, JSON and array functions.
SAFE_FUNCTIONS: Final = frozenset(
    [
        "abs",
        "age",
        "array_agg",
        "array_length",
        "array_position",
        "array_to_string",
        "avg",
        "bool_and",
        "bool_or",
        "btrim",
        "cardinality",
        "ceil",
        "ceiling",
        "char_length",
        "character_length",
        "coalesce",
        "concat",
        "concat_ws",
        "count",
        "cume_dist",
        "date_part",
        "date_trunc",
        "dense_rank",
        "every",
        "exp",
        "extract",
        "first_value",
        "floor",
        "format",
        "greatest",
        "initcap",
        "json_agg",
        "json_array_length",
        "json_build_array",
        "json_build_object",
        "json_object_agg",
        "jsonb_agg",
        "jsonb_array_length",
        "jsonb_build_array",
        "jsonb_build_object",
        "jsonb_extract_path",
        "jsonb_extract_path_text",
        "jsonb_object_agg",
        "jsonb_typeof",
        "lag",
        "last_value",
        "lead",
        "least",
        "left",
        "length",
        "ln",
        "log",
        "lower",
        "lpad",
        "ltrim",
        "make_date",
        "make_interval",
        "make_time",
        "make_timestamp",
        "make_timestamptz",
        "max",
        "md5",
        "min",
        "mod",
        "now",
        "nth_value",
        "ntile",
        "nullif",
        "octet_length",
        "percent_rank",
        "position",
        "power",
        "rank",
        "regexp_replace",
        "repeat",
        "replace",
        "reverse",
        "right",
        "round",
        "row_number",
        "row_to_json",
        "rpad",
        "rtrim",
        "sign",
        "split_part",
        "sqrt",
        "starts_with",
        "string_agg",
        "strpos",
        "substr",
        "sum",
        "to_char",
        "to_date",
        "to_json",
        "to_jsonb",
        "to_number",
        "to_timestamp",
        "trim",
        "trunc",
        "unnest",
        "upper",
        "generate_series",
        # Facts about the session, read only.
        "current_database",
        "current_schema",
        "current_setting",
        "pg_backend_pid",
        "version",
    ]
)
# Keywords and type names that a parenthesis may follow without a function call.
_PAREN_KEYWORDS: Final = frozenset(
    [
        "all",
        "and",
        "any",
        "array",
        "as",
        "between",
        "by",
        "case",
        "cast",
        "distinct",
        "else",
        "exists",
        "filter",
        "from",
        "group",
        "having",
        "in",
        "is",
        "join",
        "lateral",
        "like",
        "ilike",
        "not",
        "on",
        "or",
        "order",
        "over",
        "partition",
        "row",
        "select",
        "some",
        "then",
        "union",
        "intersect",
        "except",
        "using",
        "values",
        "when",
        "where",
        "within",
        "bit",
        "char",
        "character",
        "decimal",
        "float",
        "interval",
        "numeric",
        "time",
        "timestamp",
        "timestamptz",
        "timetz",
        "varbit",
        "varchar",
    ]
)
# Keywords that make a SELECT more than a read, or a statement other than a SELECT.
_REFUSED_WORDS: Final = frozenset(
    [
        "into",
        "for",
        "insert",
        "update",
        "delete",
        "merge",
        "copy",
        "call",
        "do",
        "lock",
        "with",
        "returning",
    ]
)
_SAFE_OPERATORS: Final = frozenset(
    [
        "=",
        "<>",
        "!=",
        "<",
        ">",
        "<=",
        ">=",
        "+",
        "-",
        "*",
        "/",
        "%",
        "||",
        "->",
        "->>",
        "#>",
        "#>>",
        "@>",
        "<@",
        "&&",
        "~~",
        "!~~",
        "~~*",
        "!~~*",
    ]
)
_TOKEN: Final = re.compile(
    r"""
      (?P<space>\s+|--[^\n]*)
    | (?P<comment>/\*(?:[^*/]|\*(?!/)|/(?!\*))*\*/)
    | (?P<string>'(?:[^'\\]|'')*')
    | (?P<quoted>"(?:[^"]|"")*")
    | (?P<param>\$[0-9]+)
    | (?P<number>[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?)
    | (?P<word>[A-Za-z_][A-Za-z_0-9]*)
    | (?P<cast>::)
    | (?P<operator>[-+*/<>=~!@\#%^&|`?]+)
    | (?P<punct>[(),.;\[\]:])
    """,
    re.VERBOSE,
)
# Letters that give the string literal right after them other rules. A word followed by a
# string is otherwise a typed literal (``DATE '2024-01-01'``), whose string is ordinary.
_STRING_PREFIXES: Final = frozenset("ebxn")
_CACHE_SIZE: Final = 4096


@functools.lru_cache(maxsize=_CACHE_SIZE)
def is_plain_read(sql: str) -> bool:
    """Whether ``sql`` can run as a plain read (see the module docstring); cached per text."""
    tokens = _tokens(sql)
    if tokens is None or not tokens or tokens[0] != ("word", "select"):
        return False
    if any(kind == "punct" and text == ";" for kind, text in tokens[:-1]):
        return False  # a second statement (the extended protocol refuses it anyway)
    for index, (kind, text) in enumerate(tokens):
        if kind == "word" and text in _REFUSED_WORDS:
            return False
        if kind == "operator" and text not in _SAFE_OPERATORS:
            return False
        if (kind, text) != ("punct", "(") or index == 0:
            continue
        before_kind, before = tokens[index - 1]
        if before_kind == "quoted":
            return False  # a function called by a quoted name
        if before_kind != "word":
            continue  # a parenthesised expression or subquery
        qualified = index >= 2 and tokens[index - 2] == ("punct", ".")
        if qualified or (before not in SAFE_FUNCTIONS and before not in _PAREN_KEYWORDS):
            return False
    return True


def _tokens(sql: str) -> list[tuple[str, str]] | None:
    """The significant tokens of ``sql`` (words lowercased), or None where it cannot lex."""
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(sql):
        match = _TOKEN.match(sql, position)
        if match is None:
            return None  # a dollar quote, E'...', a backslash, an unknown character
        kind = match.lastgroup or ""
        position = match.end()
        if kind in ("space", "comment"):
            continue
        text = match.group()
        if kind == "word":
            text = text.lower()
            if text in _STRING_PREFIXES and sql.startswith("'", position):
                return None  # E'...' (backslash escapes), B'...', X'...', N'...'
        tokens.append((kind, text))
    return tokens
