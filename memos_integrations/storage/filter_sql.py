"""A :class:`~memos_integrations.textual.filters.MemoryFilter` compiled to a SQL boolean expression.

The filter is validated data (``textual/filters.py``); this module is the one place it becomes SQL.
Everything but the JSON access is portable; the JSON parts are methods of a :class:`FilterDialect`
(SQLite's ``json_extract`` / ``json_type`` / ``json_each`` here; a PostgreSQL backend subclasses it
with ``jsonb`` operators). Every value is a bound parameter; metadata keys were checked against a
safe pattern by the filter, and a JSON path is bound as a parameter too.

Inside ``$and`` / ``$or`` / ``$not`` every leaf is forced to 0/1 (a missing key is false, never SQL
NULL), so ``$not`` negates exactly what the leaf matched.

Example:
    >>> from memos_integrations.textual.filters import MemoryFilter
    >>> f = MemoryFilter(user_id="caroline", metadata={"speaker": "Caroline", "turn": {"$gte": 3}})
    >>> sql, params = compile_filter(f)
    >>> "json_extract" in sql and params[0] == "caroline"
    True
    >>> g = MemoryFilter(metadata={"$or": [{"tags": {"$any": ["a", "b"]}}, {"$not": {"year": {"$lt": 2000}}}]})
    >>> " OR " in compile_filter(g)[0]
    True
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..items import to_epoch
from .sql import marks
from .validity import validity_sql

if TYPE_CHECKING:
    from ..textual.filters import MemoryFilter

BOOLEAN_KEYS = ("$and", "$or", "$not")
_SQL_OPS = {"$eq": "=", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
Sql = tuple[str, list[Any]]


class FilterDialect:
    """The JSON-specific SQL of filters (SQLite's JSON1 functions). Override each method per backend.

    ``m`` is the SQL of the metadata column (``items.metadata``, JSON stored as TEXT); ``path`` is what
    :meth:`path` returned for a dotted key, bound as a parameter. JSON type names are SQLite's
    (``null``, ``true``, ``false``, ``integer``, ``real``, ``text``, ``array``, ``object``); a dialect
    whose database names them otherwise maps them in :meth:`type_of`.
    """

    TRUE = "1"
    FALSE = "0"

    def path(self, key: str) -> Any:
        """The bound parameter that addresses dotted ``key`` inside the metadata object."""
        return "$." + ".".join(f'"{part}"' for part in key.split("."))

    def value(self, m: str) -> str:
        """The SQL value at one bound path (one ``?``), compared with bound scalars."""
        return f"json_extract({m}, ?)"

    def text_value(self, m: str) -> str:
        """The value at one bound path as text, for substring tests and ``= ''`` (one ``?``); SQLite's
        json_extract already gives text for a JSON string (PostgreSQL: ``#>>``)."""
        return self.value(m)

    def type_of(self, m: str) -> str:
        """The JSON type name at one bound path (one ``?``); NULL when the key is missing."""
        return f"json_type({m}, ?)"

    def array_has(self, m: str) -> str:
        """Whether the array at one bound path holds one bound value (two ``?``: path, value)."""
        return f"EXISTS (SELECT 1 FROM json_each({m}, ?) WHERE value = ?)"

    def array_length(self, m: str) -> str:
        """The length of the array at one bound path (one ``?``)."""
        return f"json_array_length({m}, ?)"

    def has_substring(self, haystack: str, needle: str, fold_case: bool = False) -> str:
        """Whether SQL ``haystack`` contains SQL ``needle`` (case-sensitive unless ``fold_case``)."""
        if fold_case:  # SQLite's lower() folds ASCII only: non-ASCII capitals are compared as written
            return f"instr(lower({haystack}), lower({needle})) > 0"
        return f"instr({haystack}, {needle}) > 0"

    def tags_any(self, tags: str, n: int) -> str:
        """Whether the JSON array column ``tags`` holds one of ``n`` bound values."""
        return f"EXISTS (SELECT 1 FROM json_each({tags}) WHERE value IN ({marks(n)}))"

    def tags_has(self, tags: str) -> str:
        """Whether the JSON array column ``tags`` holds one bound value."""
        return f"EXISTS (SELECT 1 FROM json_each({tags}) WHERE value = ?)"

    def param(self, value: Any) -> Any:
        """A scalar as compared with :meth:`value` (SQLite's json_extract gives 1/0 for true/false)."""
        return int(value) if isinstance(value, bool) else value


SQLITE = FilterDialect()


def compile_filter(flt: MemoryFilter, alias: str = "items", dialect: FilterDialect = SQLITE) -> Sql:
    """``flt`` as a boolean SQL expression over table ``alias`` and its parameters."""
    a = alias
    clauses: list[str] = []
    params: list[Any] = []

    def in_clause(column: str, values: Sequence[Any]) -> None:
        if not values:
            clauses.append(dialect.FALSE + " = 1")
            return
        clauses.append(f"{a}.{column} IN ({marks(len(values))})")
        params.extend(values)

    for column in ("user_id", "agent_id", "session_id"):
        values = getattr(flt, column)
        if values is not None:
            in_clause(column, values)
    if flt.ids is not None:
        in_clause("id", flt.ids)  # type: ignore[arg-type]
    if flt.kinds is not None:
        in_clause("kind", [k.value for k in flt.kinds])  # type: ignore[union-attr]
    if flt.states is not None:
        in_clause("state", [s.value for s in flt.states])  # type: ignore[union-attr]
    if flt.parent_id is not None:
        clauses.append(f"{a}.parent_id = ?")
        params.append(flt.parent_id)
    if flt.parent_prefix is not None:
        # [p, p + U+10FFFF): every string that starts with p, using the parent_id index
        clauses.append(f"({a}.parent_id >= ? AND {a}.parent_id < ?)")
        params.extend([flt.parent_prefix, flt.parent_prefix + "\U0010ffff"])
    if flt.tags_any:
        clauses.append(dialect.tags_any(f"{a}.tags", len(flt.tags_any)))
        params.extend(flt.tags_any)
    for tag in flt.tags_all or ():
        clauses.append(dialect.tags_has(f"{a}.tags"))
        params.append(tag)
    if flt.time_from is not None:
        clauses.append(f"COALESCE({a}.event_time, {a}.created_at) >= ?")
        params.append(to_epoch(flt.time_from))
    if flt.time_to is not None:
        clauses.append(f"COALESCE({a}.event_time, {a}.created_at) <= ?")
        params.append(to_epoch(flt.time_to))
    if flt.as_of is not None or flt.current:
        more, values = validity_sql(a, as_of=to_epoch(flt.as_of), now=time.time() if flt.current else None)
        clauses.extend(more)
        params.extend(values)
    c = _Compiler(f"{a}.metadata", dialect)
    for key, cond in (flt.metadata or {}).items():
        sql, p = c.boolean(key, cond) if key in BOOLEAN_KEYS else c.leaf(key, cond)
        clauses.append(sql)
        params.extend(p)
    return (" AND ".join(clauses) or "1 = 1"), params


class _Compiler:
    """Metadata conditions over one metadata column in one dialect."""

    def __init__(self, m: str, d: FilterDialect) -> None:
        self.m, self.d = m, d
        self.value, self.text, self.type = d.value(m), d.text_value(m), d.type_of(m)

    def leaf(self, key: str, cond: Any) -> Sql:
        path = self.d.path(key)
        expr, p = self.value, self.d.param
        if not isinstance(cond, Mapping):
            cond = {"$eq": cond}
        sqls: list[str] = []
        params: list[Any] = []
        for op, value in cond.items():
            if op in _EXTENDED:
                sql, ps = _EXTENDED[op](self, path, value)
                sqls.append(sql)
                params.extend(ps)
            elif op == "$exists":
                sqls.append(f"({self.type} IS {'NOT ' if value else ''}NULL)")
                params.append(path)
            elif op in ("$in", "$nin"):
                neg = "NOT " if op == "$nin" else ""
                null_ok = f" OR {expr} IS NULL" if op == "$nin" else ""
                if value:
                    sqls.append(f"({expr} {neg}IN ({marks(len(value))}){null_ok})")
                    params.extend([path, *map(p, value)] + ([path] if null_ok else []))
                else:  # x IN () is false, x NOT IN () true
                    sqls.append(f"({self.d.TRUE if neg else self.d.FALSE} = 1)")
            elif value is None and op in ("$eq", "$ne"):
                sqls.append(f"({expr} IS {'NOT ' if op == '$ne' else ''}NULL)")
                params.append(path)
            elif op == "$ne":
                sqls.append(f"({expr} IS NULL OR {expr} != ?)")
                params.extend([path, path, p(value)])
            elif op in ("$gt", "$gte", "$lt", "$lte"):
                # compare like with like: SQLite orders every TEXT above every number
                types = "('text')" if isinstance(value, str) else "('integer', 'real')"
                sqls.append(f"({self.type} IN {types} AND {expr} {_SQL_OPS[op]} ?)")
                params.extend([path, path, p(value)])
            else:
                sqls.append(f"({expr} {_SQL_OPS[op]} ?)")
                params.extend([path, p(value)])
        return " AND ".join(sqls), params

    # -- the extended operators: each a two-valued expression (never NULL) over the value at ``path``
    def contains(self, path: Any, value: Any) -> Sql:
        """An array holding ``value``, or (for a string ``value``) a string holding it as a substring."""
        array = f"({self.type} = 'array' AND {self.d.array_has(self.m)})"
        if isinstance(value, str):
            text = f"({self.type} = 'text' AND {self.d.has_substring(self.text, '?')})"
            return f"({array} OR {text})", [path, path, value, path, path, value]
        return array, [path, path, self.d.param(value)]

    def any(self, path: Any, values: Any) -> Sql:
        parts = [self.contains(path, v) for v in values]
        return "(" + (" OR ".join(s for s, _ in parts) or f"{self.d.FALSE} = 1") + ")", [x for _, ps in parts for x in ps]

    def all(self, path: Any, values: Any) -> Sql:
        # an empty list holds for any array or string, as Python's all([]) does, but not for a missing key
        parts = [(f"{self.type} IN ('array', 'text')", [path])]
        parts += [self.contains(path, v) for v in values]
        return "(" + " AND ".join(s for s, _ in parts) + ")", [x for _, ps in parts for x in ps]

    def text_match(self, path: Any, value: Any, fold_case: bool = False) -> Sql:
        return (f"({self.type} = 'text' AND {self.d.has_substring(self.text, '?', fold_case)})",
                [path, path, value])

    def is_empty(self, path: Any, value: Any) -> Sql:
        empty = (f"(COALESCE({self.type}, 'null') = 'null' OR {self.text} = '' "
                 f"OR ({self.type} = 'array' AND {self.d.array_length(self.m)} = 0))")
        return (empty if value else f"(NOT {empty})"), [path, path, path, path]

    # -- composition
    def tree(self, metadata: Mapping[str, Any]) -> Sql:
        """AND of a mapping's conditions, each leaf forced to 0/1 so that NOT is exact."""
        sqls: list[str] = []
        params: list[Any] = []
        for key, cond in metadata.items():
            if key in BOOLEAN_KEYS:
                sql, p = self.boolean(key, cond)
            else:
                sql, p = self.leaf(key, cond)
                sql = f"COALESCE({sql}, {self.d.FALSE} = 1)"
            sqls.append(sql)
            params.extend(p)
        return "(" + (" AND ".join(sqls) or f"{self.d.TRUE} = 1") + ")", params

    def boolean(self, key: str, cond: Any) -> Sql:
        if key == "$not":
            sql, params = self.tree(cond)
            return f"(NOT {sql})", params
        parts = [self.tree(sub) for sub in cond]
        joiner = " AND " if key == "$and" else " OR "
        return "(" + joiner.join(s for s, _ in parts) + ")", [x for _, ps in parts for x in ps]


_EXTENDED = {
    "$contains": _Compiler.contains,
    "$any": _Compiler.any,
    "$all": _Compiler.all,
    "$text_match": _Compiler.text_match,
    "$text_match_insensitive": lambda c, path, value: c.text_match(path, value, fold_case=True),
    "$is_empty": _Compiler.is_empty,
}
