"""The cost bound on CEL policy conditions.

The engine has no cost limit and holds the GIL while it evaluates, so nothing can stop a rule once it
runs. Each condition is therefore parsed again here and given a cost estimate, in steps (~10 ns), as
a polynomial in the sizes of its inputs: the CEL spec's cost model (langdef.md, "Performance") with
the costs the Rust engine was measured to have. A condition over COST_LIMIT for a reference call is
rejected when the project loads; one whose cost multiplies input sizes, or walks an input many times,
is estimated again with each call's own sizes and denies the call when over the limit.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

MAX_NESTING = 32  # brackets, calls and comprehensions inside one another (the CEL spec's minimum)
COST_LIMIT = 4_000_000  # estimated steps (about 10 ns each) a condition may take: about 40 ms
LINEAR_PASSES = 100  # steps per unit of input below which a linear rule needs no per-call check


class CostExceeded(Exception):
    """This call's inputs make a rule's estimated cost go over COST_LIMIT (the rule denies)."""


_REFERENCE_ROWS = 1000  # the default max_rows
_REFERENCE_ROW = 21  # a row of 10 columns: a key and a short value each, plus the row itself
_REFERENCE_VALUE = 100  # the size and length assumed for `user` and for each argument
_CHARS_PER_UNIT = 64  # a string's size counts one unit per 64 characters (scanning them costs about a step)
_COPY = 8  # steps to copy one unit of size: the engine copies values it selects, binds or appends
_COMPARE = 2  # steps to compare one unit of size (==, <, in, ...)
_ITERATION = 4  # a comprehension's own steps for each element, besides copying it into its variable
_REGEX_BASE = 2_000  # the engine compiles a `matches` pattern again at every evaluation: ~20 µs at least
_REGEX_CLASS = 1_500  # `.` or a class [...]
_REGEX_UNICODE = 30_000  # \w, \d, \s, \p{..} and their negations: 0.2-0.3 ms each
_REGEX_DYNAMIC = 8_000_000  # a pattern only known at call time can take ~80 ms (the regex crate's size limit)
_MAX_TERMS = 128  # terms in an estimate: typical rules have a handful

Poly = dict[tuple[tuple[str, int], ...], int]  # monomial (symbol, exponent)... -> coefficient
_Est = tuple[Poly, Poly, Poly]  # cost, size of the value, length of the value
_Node = tuple[Any, ...]


class TooCostly(Exception):
    """A condition over a limit, or one that cannot be estimated (it is rejected: the bound fails closed)."""


_TOKEN = re.compile(
    r"(?P<skip>[ \t\n\r\f]+|//[^\n\r]*)"
    # string and bytes literals: raw ones end at their quote, the others skip escapes
    r"|(?P<str>[bB]?[rR](?:'''[\s\S]*?'''|\"\"\"[\s\S]*?\"\"\"|'[^'\n\r]*'|\"[^\"\n\r]*\")"
    r"|[bB]?(?:'''(?:\\[\s\S]|[^\\])*?'''|\"\"\"(?:\\[\s\S]|[^\\])*?\"\"\""
    r"|'(?:\\[\s\S]|[^\\'\n\r])*'|\"(?:\\[\s\S]|[^\\\"\n\r])*\"))"
    r"|(?P<num>0[xX][0-9a-fA-F]+[uU]?|(?:\d+\.\d+|\.\d+)(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\d+[uU]?)"
    r"|(?P<ident>[_a-zA-Z][_a-zA-Z0-9]*)"
    r"|(?P<op>==|!=|<=|>=|&&|\|\||[-+*/%!<>?:.,()\[\]{}])"
)
_KEYWORDS = {"in": "in", "true": "const", "false": "const", "null": "const"}
_MACROS = {"all", "exists", "exists_one", "filter", "map"}


def tokens(text: str) -> list[tuple[str, str]]:
    """A condition's CEL tokens as (kind, text); TooCostly when some of it is not CEL."""
    out = []
    pos = 0
    for m in _TOKEN.finditer(text):
        if m.start() != pos:  # finditer skips what no token matches
            break
        pos = m.end()
        kind, value = m.lastgroup, m.group()
        if kind == "ident":
            out.append((_KEYWORDS.get(value, kind), value))
        elif kind == "op":
            out.append((value, value))
        elif kind != "skip":
            out.append((kind or "", value))
    if pos != len(text):
        raise TooCostly(f"cannot be analysed for its cost (at character {pos + 1})")
    return out


class _Parser:
    """CEL's grammar (langdef.md) to a tree of tuples. Operator chains stay flat and `?:` chains are
    looped over, so only brackets recurse, and they are limited to MAX_NESTING."""

    def __init__(self, text: str) -> None:
        self.tokens = tokens(text)
        self.i = 0
        self.depth = 0

    def parse(self) -> _Node:
        node = self.expr()
        if self.i != len(self.tokens):
            self.fail()
        return node

    def fail(self) -> NoReturn:
        raise TooCostly(f"cannot be analysed for its cost (at token {self.i + 1})")

    def peek(self) -> str:
        return self.tokens[self.i][0] if self.i < len(self.tokens) else ""

    def take(self, kind: str | None = None) -> str:
        if self.i >= len(self.tokens) or (kind is not None and self.tokens[self.i][0] != kind):
            self.fail()
        self.i += 1
        return self.tokens[self.i - 1][1]

    def nest(self, by: int) -> None:
        self.depth += by
        if self.depth > MAX_NESTING:
            raise TooCostly(f"nests brackets, calls and comprehensions more than {MAX_NESTING} deep")

    def expr(self) -> _Node:
        branches = []
        node = self.or_()
        while self.peek() == "?":
            self.take()
            then = self.or_()
            self.take(":")
            branches.append((node, then))
            node = self.or_()
        return ("cond", branches, node) if branches else node

    def or_(self) -> _Node:
        items = [self.and_()]
        while self.peek() == "||":
            self.take()
            items.append(self.and_())
        return ("logic", items) if len(items) > 1 else items[0]

    def and_(self) -> _Node:
        items = [self.rel()]
        while self.peek() == "&&":
            self.take()
            items.append(self.rel())
        return ("logic", items) if len(items) > 1 else items[0]

    def rel(self) -> _Node:
        first, rest = self.add(), []
        while self.peek() in ("==", "!=", "<", "<=", ">", ">=", "in"):
            op = self.take()
            rest.append((op, self.add()))
        return ("rel", first, rest) if rest else first

    def add(self) -> _Node:
        first, rest = self.mul(), []
        while self.peek() in ("+", "-"):
            op = self.take()
            rest.append((op, self.mul()))
        return ("add", first, rest) if rest else first

    def mul(self) -> _Node:
        items = [self.unary()]
        while self.peek() in ("*", "/", "%"):
            self.take()
            items.append(self.unary())
        return ("logic", items) if len(items) > 1 else items[0]

    def unary(self) -> _Node:
        count = 0
        while self.peek() in ("!", "-"):
            self.take()
            count += 1
        node = self.member()
        return ("unary", count, node) if count else node

    def member(self) -> _Node:
        node, steps = self.primary(), list[_Node]()
        while self.peek() in (".", "[", "{"):
            kind = self.take()
            if kind == ".":
                name = self.take("ident")
                steps.append(("call", name, self.items(")")) if self.peek() == "(" else ("select", name))
            elif kind == "[":
                self.nest(1)
                steps.append(("index", self.expr()))
                self.take("]")
                self.nest(-1)
            else:  # a message `Name{field: value}`: the engine fails it when it runs, but it parses
                steps.append(("fields", self.items("}", opened=True)))
        return ("member", node, steps) if steps else node

    def primary(self) -> _Node:
        if self.peek() == ".":  # `.name`: a name from the root scope
            self.take()
        kind = self.peek()
        if kind == "ident":
            name = self.take()
            return ("call", name, self.items(")")) if self.peek() == "(" else ("ident", name)
        if kind == "(":
            self.take()
            self.nest(1)
            node = self.expr()
            self.take(")")
            self.nest(-1)
            return node
        if kind in ("[", "{"):
            self.take()
            return ("list", self.items("]" if kind == "[" else "}", opened=True))
        if kind == "str":
            text = self.take()
            return ("lit", 1 + len(text) // _CHARS_PER_UNIT, text)
        if kind in ("num", "const"):
            self.take()
            return ("lit", 1)
        self.fail()

    def items(self, close: str, opened: bool = False) -> list[_Node]:
        """Expressions up to `close`, separated by `,` or `:` (map entries, message fields)."""
        if not opened:
            self.take("(")
        self.nest(1)
        out = []
        if self.peek() == "," and close != ")":  # `[,]` and `{,}` are valid
            self.take()
        while self.peek() != close:
            out.append(self.expr())
            if self.peek() not in (",", ":"):
                break
            self.take()
        self.take(close)
        self.nest(-1)
        return out


def _const(c: int) -> Poly:
    return {(): c}


def _var(symbol: str) -> Poly:
    return {((symbol, 1),): 1}


_ONE = _const(1)


def _add(*polys: Poly) -> Poly:
    out: Poly = {}
    for p in polys:
        for mono, c in p.items():
            out[mono] = out.get(mono, 0) + c
    return _bounded(out)


def _mul(a: Poly, b: Poly) -> Poly:
    out: Poly = {}
    for ma, ca in a.items():
        for mb, cb in b.items():
            exps = dict(ma)
            for s, k in mb:
                exps[s] = exps.get(s, 0) + k
            mono = tuple(sorted(exps.items()))
            out[mono] = out.get(mono, 0) + ca * cb
    return _bounded(out)


def _bounded(p: Poly) -> Poly:
    if len(p) > _MAX_TERMS:  # keeps estimating fast: such a rule is far over the limit anyway
        raise TooCostly(f"is too complex to estimate: its cost has over {_MAX_TERMS} terms in the sizes of its inputs")
    return p


def _copy(p: Poly) -> Poly:
    return _mul(p, _const(_COPY))


def _sum_over(p: Poly, symbol: str, length: Poly, size: Poly) -> Poly:
    """Σ of `p` over the elements of a list: `length` of them, whose sizes (`symbol`) add up to `size`.

    A term without the element's size counts once per element; a term with size^k at most size^k, as
    k-th powers add up to no more than the k-th power of their sum.
    """
    terms = []
    for mono, c in p.items():
        k = dict(mono).get(symbol, 0)
        factor = length
        for n in range(k):
            factor = size if n == 0 else _mul(factor, size)
        terms.append(_mul({tuple(m for m in mono if m[0] != symbol): c}, factor))
    return _add(*terms)


def _input_degree(mono: tuple[tuple[str, int], ...]) -> int:
    return sum(k for s, k in mono if not s.startswith("E:"))


def _smaller(a: Poly, b: Poly) -> Poly:
    """A bound on min(a, b): either one is; keep the one that grows less with the inputs."""
    def rank(p: Poly) -> tuple[int, int]:
        return max(map(_input_degree, p), default=0), max(map(len, p), default=0)
    return a if rank(a) <= rank(b) else b


class _Estimator:
    """Cost, size and length of each node, as polynomials in the input sizes.

    `S:name` and `L:name` are the size and length of the input `name`: a size counts one unit per
    scalar, list, map and map key, and one per _CHARS_PER_UNIT characters of a string. `E:n` is the size
    of the n-th comprehension's element, summed away when that comprehension closes.
    """

    def __init__(self) -> None:
        self.scopes: list[tuple[str, str]] = []
        self.comprehensions = 0
        self.notes: dict[str, None] = {}  # what the rejection message should explain, in order

    def estimate(self, node: _Node) -> _Est:
        kind = node[0]
        if kind == "lit":
            return _ONE, _const(node[1]), _const(node[1])
        if kind == "ident":
            symbol = next((s for name, s in reversed(self.scopes) if name == node[1]), None)
            if symbol is not None:
                return _ONE, _var(symbol), _var(symbol)
            return _ONE, _var("S:" + node[1]), _var("L:" + node[1])
        if kind == "list":  # list and map literals copy their values in
            parts = [self.estimate(n) for n in node[1]]
            size = _add(_ONE, *(s for _, s, _ in parts))
            return _add(_ONE, *(c for c, _, _ in parts), _copy(size)), size, _const(len(parts))
        if kind == "logic":  # && || * / %
            parts = [self.estimate(n) for n in node[1]]
            return _add(_const(len(parts)), *(c for c, _, _ in parts)), _ONE, _ONE
        if kind == "unary":
            return _add(self.estimate(node[2])[0], _const(node[1])), _ONE, _ONE
        if kind == "cond":  # one branch runs: the sum of them all bounds it
            conds = [self.estimate(n) for n, _ in node[1]]
            values = [self.estimate(n) for _, n in node[1]] + [self.estimate(node[2])]
            return (_add(_const(len(conds)), *(c for c, _, _ in conds + values)),
                    _add(*(s for _, s, _ in values)), _add(*(n for _, _, n in values)))
        if kind == "rel":
            cost, size, _ = self.estimate(node[1])
            for op, right in node[2]:
                rc, rs, _ = self.estimate(right)
                # `in` compares with every element (or hashes the key); the others stop at the shorter side
                work = _add(size, rs) if op == "in" else _smaller(size, rs)
                cost, size = _add(cost, rc, _mul(work, _const(_COMPARE)), _ONE), _ONE
            return cost, _ONE, _ONE
        if kind == "add":
            cost, size, length = self.estimate(node[1])
            for op, right in node[2]:
                rc, rs, rn = self.estimate(right)
                if op == "+":  # concatenating strings or lists copies both sides (measured: twice a copy)
                    size, length = _add(size, rs), _add(length, rn)
                    cost = _add(cost, rc, _mul(size, _const(2 * _COPY)))
                else:
                    cost, size, length = _add(cost, rc, _ONE), _ONE, _ONE
            return cost, size, length
        if kind == "call":
            return self.call(node[1], None, node[2])
        est = self.estimate(node[1])  # "member": a chain of selections, indexes and calls
        for step in node[2]:
            cost, size, _ = est
            if step[0] == "select":  # the engine copies the selected value out of its map
                est = _add(cost, _ONE, _copy(size)), size, size
            elif step[0] == "index":
                ic, isz, _ = self.estimate(step[1])
                est = _add(cost, ic, isz, _ONE, _copy(size)), size, size
            elif step[0] == "fields":
                est = self.call("", est, step[1])
            else:
                est = self.call(step[1], est, step[2])
        return est

    def call(self, name: str, receiver: _Est | None, args: list[_Node]) -> _Est:
        if (receiver is not None and name in _MACROS and args and args[0][0] == "ident"
                and len(args) in ((2, 3) if name == "map" else (2,))):
            return self.comprehension(name, receiver, args[0][1], args[1:])
        parts = ([receiver] if receiver else []) + [self.estimate(a) for a in args]
        cost = _add(_ONE, *(c for c, _, _ in parts))
        sizes = [s for _, s, _ in parts]
        if name == "has":
            return cost, _ONE, _ONE
        if name == "size":  # a string's length is counted character by character
            return _add(cost, *sizes[:1]), _ONE, _ONE
        if name in ("contains", "startsWith", "endsWith"):
            return _add(cost, *sizes), _ONE, _ONE
        if name == "matches" and len(parts) == 2:
            pattern = args[-1]
            if pattern[0] == "lit" and len(pattern) == 3:
                steps = _regex_cost(pattern[2])
                if _UNICODE_ESCAPE.search(pattern[2]):
                    self.notes["a Unicode class such as \\w, \\d or \\s compiles to a large automaton "
                               "(write [A-Za-z0-9_], [0-9] or [ \\t] instead)"] = None
            else:
                steps = _REGEX_DYNAMIC
                self.notes["matches() needs a string literal pattern: one only known when the rule runs "
                           "can take up to 80 ms to compile"] = None
            return _add(cost, _const(steps), _mul(sizes[0], _const(1 + steps // 10_000))), _ONE, _ONE
        total = _add(_ONE, *sizes)  # conversions and the rest: about the size of what they are given
        return _add(cost, _copy(total)), total, total

    def comprehension(self, name: str, range_: _Est, var: str, bodies: list[_Node]) -> _Est:
        self.comprehensions += 1
        symbol = f"E:{self.comprehensions}"
        self.scopes.append((var, symbol))
        parts = [self.estimate(b) for b in bodies]
        self.scopes.pop()
        rc, rs, rn = range_
        cost = _add(rc, _sum_over(_add(_const(_ITERATION), _copy(_var(symbol)), *(c for c, _, _ in parts)),
                                  symbol, rn, rs))
        if name not in ("map", "filter"):
            return cost, _ONE, _ONE
        # map and filter append to their result by copying it: each step copies all it has built so far
        self.notes["map() and filter() copy their partial result at every step, so their cost grows with "
                   "the square of the list (all(), exists() and exists_one() do not)"] = None
        made = _sum_over(parts[-1][1], symbol, rn, rs) if name == "map" else rs
        return _add(cost, _copy(_mul(rn, made))), _add(_ONE, made), rn


_UNICODE_ESCAPE = re.compile(r"\\[pPwWdDsS]")
_REGEX_ATOM = re.compile(r"\\[pP](?:\{[^}]*\}|.)|\\[wWdDsS]|\\.|\[\^?\]?(?:\\.|\[:\w+:\]|[^\]])*\]|\{(\d+)(,\d*)?\}|.",
                         re.DOTALL)


def _regex_cost(literal: str) -> int:
    """Steps to compile a literal `matches` pattern (measured: small patterns ~5-20 µs, \\w ~0.2 ms)."""
    body = literal.lstrip("bBrR")
    quotes = 3 if body[:3] in ("'''", '"""') else 1
    pattern = body[quotes:-quotes]
    if "r" not in literal[:len(literal) - len(body)].lower():
        pattern = re.sub(r"\\(.)", r"\1", pattern, flags=re.DOTALL)  # CEL's escapes: '\\w' is the pattern \w
    groups = [[_REGEX_BASE, 0]]  # per open group: its cost, and the cost of its last atom
    for m in _REGEX_ATOM.finditer(pattern):
        atom, repeat = m.group(), m.group(1)
        if repeat is not None:  # {n}, {n,}, {n,m}: the engine copies the atom that many times
            low, high = int(repeat), m.group(2)
            times = low + 1 if high == "," else max(low, int(high[1:])) if high else low
            groups[-1][0] += groups[-1][1] * max(times - 1, 0)
            continue
        if atom == "(":
            groups.append([0, 0])
            continue
        if atom == ")" and len(groups) > 1:
            inner = groups.pop()[0]
            cost = inner
        elif _UNICODE_ESCAPE.search(atom):
            cost = _REGEX_UNICODE
        elif atom == "." or (atom.startswith("[") and len(atom) > 1):
            cost = _REGEX_CLASS
        else:
            cost = 10
        groups[-1][0] += cost
        groups[-1][1] = cost
    return sum(g[0] for g in groups) * (4 if "(?i" in pattern else 1)


def _reference(symbol: str) -> int:
    kind, name = symbol.split(":", 1)
    if name == "response":
        return _REFERENCE_ROWS if kind == "L" else 1 + _REFERENCE_ROWS * _REFERENCE_ROW
    return _REFERENCE_VALUE


def _steps(cost: Poly, size: Callable[[str], int]) -> int:
    total = 0
    for mono, c in cost.items():
        for symbol, k in mono:
            c *= size(symbol) ** k
        total += c
    return total


def _describe(mono: tuple[tuple[str, int], ...]) -> str:
    if not mono:
        return "does not depend on the inputs"
    parts = []
    for symbol, k in mono:
        kind, name = symbol.split(":", 1)
        what = f"the {'length' if kind == 'L' else 'total size'} of `{name}`"
        parts.append(what + (" squared" if k == 2 else f" to the power {k}" if k > 2 else ""))
    return "grows with " + " times ".join(parts)


def cost_bound(condition: str) -> Poly | None:
    """The estimated cost of `condition` if it must be checked at each call (None when it need not be);
    raises TooCostly when it nests too deep or costs more than COST_LIMIT for the reference call."""
    estimator = _Estimator()
    cost = estimator.estimate(_Parser(condition).parse())[0]
    steps = _steps(cost, _reference)
    if steps > COST_LIMIT:
        worst = max(cost, key=lambda m: _steps({m: cost[m]}, _reference))
        notes = "".join(f"; {note}" for note in estimator.notes)
        shown = f"{steps:,}" if steps < 10**12 else "over 10^12"
        raise TooCostly(f"is too costly: an estimated {shown} steps for a reference call (a 1,000-row response), "
                         f"over the limit of {COST_LIMIT:,}; its cost {_describe(worst)}{notes}")
    passes: dict[str, int] = {}
    for mono, c in cost.items():
        if _input_degree(mono) > 1:
            return cost
        for symbol, _ in mono:
            passes[symbol[2:]] = passes.get(symbol[2:], 0) + c
    # linear in its inputs, few steps per unit: at most a few times what converting them for CEL costs
    return cost if any(p > LINEAR_PASSES for p in passes.values()) else None


def _measure(value: Any) -> tuple[int, int]:
    """The size and length of a plain JSON value, as the estimate counts them."""
    size, stack = 0, [value]
    while stack:
        v = stack.pop()
        size += 1
        if isinstance(v, str):
            size += len(v) // _CHARS_PER_UNIT
        elif isinstance(v, dict):
            stack += v
            stack += v.values()
        elif isinstance(v, list):
            stack += v
    return size, len(value) if isinstance(value, list | dict) else size


def check_cost(cost: Poly, variables: Mapping[str, Any]) -> None:
    """Deny (PolicyEvalError) when the estimate for this call's own input sizes is over COST_LIMIT."""
    measured: dict[str, tuple[int, int]] = {}

    def size(symbol: str) -> int:
        kind, name = symbol.split(":", 1)
        if name not in measured:
            measured[name] = _measure(variables[name]) if name in variables else (1, 1)
        return measured[name][1 if kind == "L" else 0]

    steps = _steps(cost, size)
    if steps > COST_LIMIT:
        raise CostExceeded(f"its estimated cost for this call's inputs is {steps:,} steps, over the limit "
                              f"of {COST_LIMIT:,}")
