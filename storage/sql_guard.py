"""Which SQL a user may run over the traces: ClickHouse parses it, GenOps walks the tree.

Every path that runs a user's SQL (the admin SQL endpoint, ``genops sql``) passes the
statement through :func:`check_query` first. The decision is made on ClickHouse's own
syntax tree, never on the text, so comments, case, quoting, nesting, aliases and
subqueries cannot slip something past:

1. ``formatQuerySingleLine(<the text as a string literal>)`` parses the text without
   running it. It fails on a syntax error and on more than one statement, and returns
   the statement in ClickHouse's canonical spelling. That canonical statement is what
   is checked and then run, so what runs is exactly what was checked.
2. ``EXPLAIN AST <canonical>`` gives the tree (one node a line, indented by depth).
3. :func:`refusal` walks the tree: only read statements (``SELECT``/``WITH``/``SHOW``/
   ``DESCRIBE``/``EXISTS``/``EXPLAIN``); tables only in GenOps's database, the schema
   views and a list of harmless system tables; table functions only from a list that
   touches no file, network, process or other database (``numbers``, ``values``, ...);
   no function that reads files, dictionaries or join tables; no ``SETTINGS``,
   ``FORMAT`` or ``INTO OUTFILE``.

``readonly=2`` is still set on every query as a second wall, but on its own it stops
none of the above in chDB (the issue that introduced this module has the probes).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from genops.storage.sql_text import quote


class QueryError(ValueError):
    """The query was refused or failed; the message is one line (ClickHouse's own, where it comes from there)."""

#: Statements a user may run (the tree's root node types; ``ShowTables`` also covers
#: ``SHOW DATABASES`` and ``SHOW SETTINGS``).
READ_ROOTS = frozenset({
    "SelectWithUnionQuery", "Explain", "ShowTables", "ShowColumns", "ShowCreateTableQuery", "DescribeQuery",
    "ExistsTableQuery", "ShowProcesslistQuery", "ShowFunctions",
})
ALLOWED_STATEMENTS = ("only SELECT, WITH, SHOW (TABLES, DATABASES, COLUMNS, CREATE TABLE, PROCESSLIST, FUNCTIONS, "
                      "SETTINGS), DESCRIBE, EXISTS and EXPLAIN of those are allowed")
#: Table functions that read nothing outside the query itself.
SAFE_TABLE_FUNCTIONS = (
    "numbers", "numbers_mt", "zeros", "zeros_mt", "generate_series", "generateSeries", "values", "null", "view",
    "generateRandom", "format", "primes",
)
_SAFE_TABLE_FUNCTIONS = frozenset(name.lower() for name in SAFE_TABLE_FUNCTIONS)
#: Scalar functions that read outside the query: ``file('path')`` returns a file's content;
#: dictionaries and join tables can be backed by any source.
_SCALAR_PREFIXES_DENIED = ("dictget", "dicthas", "dictisin", "joinget")
_SCALAR_DENIED = frozenset({"file", "catboostevaluate", "modelevaluate", "naivebayesclassifier"})
#: Databases a query may name.
SCHEMA_DATABASES = frozenset({"information_schema", "INFORMATION_SCHEMA"})
#: System tables a user needs to find their way (schema, parts, merges, metrics) and
#: that hold no secret (no users, grants, named collections, server settings, logs).
SYSTEM_TABLES = frozenset({
    "one", "numbers", "numbers_mt", "zeros", "zeros_mt", "tables", "columns", "databases", "parts",
    "parts_columns", "projection_parts", "data_skipping_indices", "merges", "mutations", "metrics", "events",
    "asynchronous_metrics", "processes", "functions", "table_functions", "table_engines", "formats",
    "data_type_families", "time_zones", "settings", "aggregate_function_combinators", "keywords",
})
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_TABLE = re.compile(rf"^(?:(?P<db>{_NAME})\.)?(?P<table>{_NAME})$")
_NODE = re.compile(r"^(?P<indent> *)(?P<type>\S+)(?: (?P<rest>.*?))?(?: \(children \d+\))?$")


class QueryRefused(QueryError):
    """The statement is not a read GenOps allows; the message names what was refused (HTTP 403)."""


@dataclass
class Node:
    """One node of ClickHouse's ``EXPLAIN AST`` tree: its type, the rest of its line, its children."""

    type: str
    detail: str
    children: list[Node]

    def walk(self) -> Iterator[tuple[Node, Node | None]]:
        """Every node of the subtree with its parent, depth first."""
        stack: list[tuple[Node, Node | None]] = [(self, None)]
        while stack:
            node, parent = stack.pop()
            yield node, parent
            stack.extend((child, node) for child in reversed(node.children))

    @property
    def name(self) -> str:
        """The node's name without its alias: ``Function file (alias f)`` -> ``file``."""
        return self.detail.split(" (alias ", 1)[0].strip()


def parse_ast(lines: list[str]) -> Node:
    """The tree of ``EXPLAIN AST`` output (one node a line, one space of indent per level)."""
    root: Node | None = None
    stack: list[tuple[int, Node]] = []
    for line in lines:
        if not line.strip():
            continue
        match = _NODE.match(line)
        if match is None or any(ord(c) < 32 for c in line):
            raise QueryRefused(f"refused: cannot read ClickHouse's syntax tree line {line[:100]!r}")
        depth = len(match["indent"])
        node = Node(match["type"], match["rest"] or "", [])
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            stack[-1][1].children.append(node)
        elif root is None:
            root = node
        else:
            raise QueryRefused("only one statement per request")
        stack.append((depth, node))
    if root is None:
        raise QueryRefused("empty query")
    return root


def _table_refusal(text: str, database: str) -> str | None:
    """Why a table named ``db.table`` (or ``table``) may not be read, or None."""
    match = _TABLE.match(text)
    if match is None:
        return f"table name {text!r}: only plain names (letters, digits, _) can be checked, so others are refused"
    db, table = match["db"], match["table"]
    if db is None or db == database or db in SCHEMA_DATABASES:
        return None
    if db == "system":
        if table in SYSTEM_TABLES:
            return None
        return f"system.{table} is not readable here (allowed: system.{', system.'.join(sorted(SYSTEM_TABLES))})"
    return _database_refusal(db, database)


def _database_refusal(db: str, database: str) -> str | None:
    """Why database ``db`` may not be named, or None."""
    if db in (database, "system") or db in SCHEMA_DATABASES:
        return None
    return f"database {db!r}: only {database!r}, system and information_schema can be read"


def refusal(root: Node, database: str) -> str | None:
    """Why the statement ``root`` may not run, or None when it is a read GenOps allows."""
    if root.type not in READ_ROOTS:
        return f"{_statement(root)}: {ALLOWED_STATEMENTS}"
    for node, parent in root.walk():
        kind = node.type
        if kind == "Set":
            return "SETTINGS: a query cannot change settings here (limits are GenOps's: GENOPS_SQL_*)"
        if kind == "Explain":
            if node is not root:
                return "EXPLAIN inside a query"
            statements = [child for child in node.children if child.type != "Set"]
            if statements and (statements[0].type not in READ_ROOTS or statements[0].type == "Explain"):
                return f"EXPLAIN {_statement(statements[0])}: {ALLOWED_STATEMENTS}"
        if kind == "SelectWithUnionQuery" and len(node.children) > 1:
            extra = node.children[1].type
            if extra == "Literal":
                return "INTO OUTFILE: results cannot be written to files"
            if extra == "Identifier":
                return "FORMAT: the result format is GenOps's (genops sql --format table|json|csv)"
            return f"a {extra} clause after the query"
        if kind == "Function":
            name = node.name.lower()
            in_from = parent is not None and parent.type == "TableExpression"
            if in_from and name not in _SAFE_TABLE_FUNCTIONS:
                return (f"table function {node.name}(): it reads files, the network, processes or other databases "
                        f"(allowed: {', '.join(SAFE_TABLE_FUNCTIONS)})")
            if not in_from and (name in _SCALAR_DENIED or name.startswith(_SCALAR_PREFIXES_DENIED)):
                return f"function {node.name}(): it reads files, dictionaries or other tables"
        if kind == "TableIdentifier":
            reason = _table_refusal(node.name, database)
            if reason:
                return reason
        if kind in {"ShowTables", "ShowCreateTableQuery", "ExistsTableQuery"} and node.children:
            names = [child.name for child in node.children if child.type == "Identifier"]
            if kind == "ShowTables":  # SHOW TABLES FROM <database>
                reason = _database_refusal(names[0], database) if names else None
            else:
                reason = _table_refusal(".".join(names), database) if names else None
            if reason:
                return reason
    return None


def _statement(node: Node) -> str:
    """A statement's kind for humans: ``InsertQuery`` -> ``INSERT``."""
    kind = node.type
    if kind == "SYSTEM":
        return "SYSTEM"
    if kind == "Set":
        return "SET"
    words = {"InsertQuery": "INSERT", "CreateQuery": "CREATE", "AlterQuery": "ALTER", "DropQuery": "DROP",
             "KillQueryQuery": "KILL", "UseQuery": "USE", "OptimizeQuery": "OPTIMIZE", "CheckQuery": "CHECK",
             "RenameQuery": "RENAME", "ShowGrantsQuery": "SHOW GRANTS", "ShowAccessQuery": "SHOW ACCESS"}
    if kind in words:
        return words[kind]
    plain = re.sub(r"(Query|Statement)$", "", kind)
    return plain.upper() if plain.isalpha() and plain[:1].isupper() and plain[1:].islower() else kind


def canonical_statement(client: Any, sql: str) -> str:
    """``sql`` parsed by ClickHouse into one statement in its canonical spelling (nothing runs).

    Raises :class:`QueryRefused` for several statements, :class:`QueryError` for text
    ClickHouse cannot parse.
    """
    text = sql.strip()
    if not text.rstrip(";").strip():
        raise QueryError("empty query")
    try:
        result = client.query(f"SELECT formatQuerySingleLine({quote(text)})")
    except Exception as exc:  # noqa: BLE001 - the driver raises several types; all mean "cannot parse"
        message = first_line(exc)
        if "Multi-statements are not allowed" in message:
            raise QueryRefused("more than one statement: send one statement per request") from None
        raise QueryError(message) from None
    return str(result.result_rows[0][0])


@dataclass(frozen=True)
class CheckedStatement:
    """A statement that passed :func:`check_query`: its canonical text and its kind (the tree's root node type)."""

    text: str
    kind: str

    @property
    def is_select(self) -> bool:
        """True for ``SELECT``/``WITH`` (which can be streamed), False for ``SHOW``, ``DESCRIBE``, ..."""
        return self.kind == "SelectWithUnionQuery"


def check_query(client: Any, sql: str, database: str) -> CheckedStatement:
    """The canonical statement to run for the user's ``sql``, once ClickHouse's parser agrees it is an allowed read.

    Raises :class:`QueryRefused` (what was refused) or :class:`QueryError` (ClickHouse cannot parse it).
    """
    statement = canonical_statement(client, sql)
    try:
        # command(), not query(): query() appends its own FORMAT clause, which would show in the tree
        output = client.command(f"EXPLAIN AST {statement}")
    except Exception as exc:  # noqa: BLE001 - same as above
        # The statement parsed, so only its own SETTINGS clause can make EXPLAIN fail (e.g. max_query_size = 1).
        raise QueryRefused(f"refused: the statement cannot be checked: {first_line(exc)}") from None
    text = "\n".join(map(str, output)) if isinstance(output, (list, tuple)) else str(output)
    # One node a line: newlines inside literals arrive escaped (TabSeparated). A SETTINGS clause
    # could ask for CRLF line ends; a line that is still not a node is refused by parse_ast.
    lines = [line.rstrip("\r") for line in text.split("\n")]
    root = parse_ast(lines)
    reason = refusal(root, database)
    if reason:
        raise QueryRefused(f"refused: {reason}")
    return CheckedStatement(statement, root.type)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (ClickHouse's own text), or its type."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
