"""Every walk of a set of node ids in the Raft core goes in id order, or cannot depend on order.

The simulator promises that a seed replays the same in any process. A set of strings iterates
in the order of the process's string hashing, which is random per process (``PYTHONHASHSEED``),
so a core that sends, picks or breaks a tie while walking a set of ids takes another course in
another process. Session 25 found two such walks (a narrow ReadIndex round's voters) only by a
sweep whose failing seed would not replay. tests/test_sim_determinism.py compares whole traces
across hash seeds for the paths its seeds reach; this test reads every walk in ``univrs/raft``
whatever path reaches it.

What counts as a set of ids: anything the core annotates as a ``set``, ``frozenset`` or
``Collection``/``Iterable``/``AbstractSet`` (``Membership.voters``/``learners``/``members``,
``ConfigHistory.named``, methods that return one, parameters typed so), a local assigned from
one, and ``&``/``|``/``^``/``-`` of them. A walk of one is fine when it is ``sorted(...)``, when
it builds a set, or when it feeds straight into a function whose result ignores order (counts,
``quorum_value``, which sorts). Any other walk must be listed in ``ORDER_FREE_LOOPS`` with the
reason its order cannot matter; a listed walk that no longer exists fails the test too.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "univrs"
# The core, and the simulator that drives it: both decide a seed's course.
SCANNED = ("raft", "sim")

_SET_TYPES = {"set", "frozenset", "AbstractSet", "FrozenSet", "Set"}
# Types that may hold a set: they count when what they hold is a node id.
_MAYBE_SET_TYPES = {"Collection", "Iterable"}
_ID_TYPES = {"NodeId", "str"}
# Functions whose result does not depend on the order of the items they are given.
_ORDER_FREE_CALLS = {
    "sorted",
    "sum",
    "all",
    "any",
    "len",
    "set",
    "frozenset",
    "min",
    "max",
    "quorum_value",
    "has_quorum",
    "quorum_index",
}

# (module, function) -> why its walks of a set of ids cannot depend on the order (or why what
# the check takes for a set is not one: it knows sets by the names the package gives them).
ORDER_FREE_LOOPS: dict[tuple[str, str], str] = {
    ("raft/quorum.py", "vote_result"): "counts granted and rejected votes; only totals are read",
    ("raft/membership.py", "voter_changes"): "adds a count per voter kept under a new incarnation",
    ("sim/statestore.py", "commit"): "puts into one LMDB transaction: the same result in any order",
    ("sim/mirror.py", "__attrs_post_init__"): "the mirror's ``voters`` is a Sequence",
    ("sim/rollback.py", "_room"): "lists the lost members only to count them",
}


def _name(ann: ast.expr) -> str | None:
    if isinstance(ann, ast.Attribute):
        return ann.attr
    if isinstance(ann, ast.Name):
        return ann.id
    return None


def _outer_name(ann: ast.expr | None) -> str | None:
    """The outermost name of an annotation: ``frozenset`` for ``frozenset[NodeId]``.

    ``Collection[NodeId]`` and ``Iterable[NodeId]`` answer ``frozenset`` (they may be one);
    the same of anything else answers their own name."""
    if ann is None:
        return None
    if isinstance(ann, ast.Constant) and isinstance(ann.value, str):
        ann = ast.parse(ann.value, mode="eval").body
    if isinstance(ann, ast.Subscript):
        outer = _name(ann.value)
        if outer in _MAYBE_SET_TYPES and _name(ann.slice) in _ID_TYPES:
            return "frozenset"
        return outer
    return _name(ann)


def set_valued_names(sources: list[str]) -> tuple[set[str], set[str]]:
    """Attributes (fields, properties) and methods of the core that hold or return a set."""
    attrs: set[str] = set()
    funcs: set[str] = set()
    for text in sources:
        tree = ast.parse(text)
        fields = [  # a class's fields, and ``self.x: T`` anywhere (not a function's locals)
            stmt for cls in ast.walk(tree) if isinstance(cls, ast.ClassDef) for stmt in cls.body
        ] + [
            node
            for node in ast.walk(tree)
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Attribute)
        ]
        for stmt in fields:
            if isinstance(stmt, ast.AnnAssign) and _outer_name(stmt.annotation) in _SET_TYPES:
                target = stmt.target
                if isinstance(target, ast.Name):
                    attrs.add(target.id)
                elif isinstance(target, ast.Attribute):
                    attrs.add(target.attr)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and _outer_name(node.returns) in _SET_TYPES:
                decorators = {_outer_name(d) for d in node.decorator_list}
                (attrs if decorators & {"property", "cached_property"} else funcs).add(node.name)
    return attrs, funcs


class _Walks(ast.NodeVisitor):
    """Finds walks of sets of ids that are neither sorted nor order-free, per function."""

    def __init__(self, module: str, attrs: set[str], funcs: set[str]) -> None:
        self.module = module
        self.attrs = attrs
        self.funcs = funcs
        self.function = "<module>"
        self.locals: set[str] = set()
        self.order_free: set[int] = set()  # ids of comprehensions fed to an order-free call
        self.found: list[tuple[str, str, int, str]] = []

    def _is_set(self, expr: ast.expr) -> bool:
        if isinstance(expr, ast.Name):
            return expr.id in self.locals
        if isinstance(expr, ast.Attribute):
            return expr.attr in self.attrs
        if isinstance(expr, ast.Call):
            f = expr.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
            return name in self.funcs
        if isinstance(expr, ast.BinOp) and isinstance(
            expr.op, ast.BitAnd | ast.BitOr | ast.BitXor | ast.Sub
        ):
            return self._is_set(expr.left) or self._is_set(expr.right)
        return False

    def _flag(self, it: ast.expr) -> None:
        if (self.module, self.function) in ORDER_FREE_LOOPS:
            return
        if self._is_set(it):
            self.found.append((self.module, self.function, it.lineno, ast.unparse(it)))

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        saved = (self.function, self.locals)
        self.function = node.name
        self.locals = {
            a.arg
            for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs
            if _outer_name(a.annotation) in _SET_TYPES
        }
        self.generic_visit(node)
        self.function, self.locals = saved

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.generic_visit(node)
        if isinstance(node.target, ast.Name) and self.function != "<module>":
            if _outer_name(node.annotation) in _SET_TYPES:
                self.locals.add(node.target.id)
            else:
                self.locals.discard(node.target.id)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.generic_visit(node)
        for target in node.targets:
            if isinstance(target, ast.Name):
                if self._is_set(node.value):
                    self.locals.add(target.id)
                else:
                    self.locals.discard(target.id)
            elif isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                for t, v in zip(target.elts, node.value.elts, strict=False):
                    if isinstance(t, ast.Name) and self._is_set(v):
                        self.locals.add(t.id)

    def visit_Call(self, node: ast.Call) -> None:
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
        if name in _ORDER_FREE_CALLS:
            for arg in node.args:
                if isinstance(arg, ast.ListComp | ast.GeneratorExp):
                    self.order_free.add(id(arg))
        elif name in ("list", "tuple", "enumerate", "iter", "zip", "dict") and node.args:
            for arg in node.args:
                self._flag(arg)
        self.generic_visit(node)

    def visit_For(self, node: ast.For) -> None:
        self._flag(node.iter)
        self.generic_visit(node)

    def _comprehension(self, node: ast.ListComp | ast.GeneratorExp | ast.DictComp) -> None:
        if id(node) not in self.order_free:
            for gen in node.generators:
                self._flag(gen.iter)
        self.generic_visit(node)

    visit_ListComp = _comprehension
    visit_GeneratorExp = _comprehension
    visit_DictComp = _comprehension
    # A set comprehension builds a set: its order is the result's own, and not kept.


def unordered_walks(sources: dict[str, str]) -> list[tuple[str, str, int, str]]:
    """Each walk of a set of ids in ``sources`` (module name -> text) not known to be safe."""
    attrs, funcs = set_valued_names(list(sources.values()))
    found: list[tuple[str, str, int, str]] = []
    for module, text in sorted(sources.items()):
        walker = _Walks(module, attrs, funcs)
        walker.visit(ast.parse(text))
        found.extend(walker.found)
    return found


def _core_sources() -> dict[str, str]:
    return {
        f"{d}/{p.name}": p.read_text() for d in SCANNED for p in sorted((PACKAGE / d).glob("*.py"))
    }


def test_the_core_walks_sets_of_ids_in_id_order() -> None:
    walks = unordered_walks(_core_sources())
    assert walks == [], "walks of a set of ids in hash order (wrap in sorted(...)):\n" + "\n".join(
        f"  {m}:{line} in {fn}: {src}" for m, fn, line, src in walks
    )


def test_every_listed_order_free_loop_still_exists() -> None:
    sources = _core_sources()
    for (module, function), why in ORDER_FREE_LOOPS.items():
        assert why
        tree = ast.parse(sources[module])
        names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        assert function in names, f"{module}: {function} is gone; drop it from ORDER_FREE_LOOPS"


# The narrow read round as it was before session 25 (9d087c2): its candidates in the voter
# set's own order, which is what made seed 252071 replay differently per process.
_OLD_READ_ROUND = """
class Membership:
    voters: frozenset[str]

class Heartbeats:
    def _send_read_round(self) -> None:
        voters, progress = self._configs.current.voters, self._progress
        need = majority(len(voters)) - (1 if self.id in voters else 0)
        candidates = [v for v in voters if v != self.id and v in progress]
        for peer in candidates[:need]:
            self._send_heartbeat(peer)

    def _widen_read_rounds(self) -> None:
        for peer in self._configs.current.voters:
            self._send_heartbeat(peer)
"""


def test_the_check_catches_the_walks_session_25_fixed() -> None:
    walks = unordered_walks({"heartbeat.py": _OLD_READ_ROUND})
    assert [(fn, src) for _, fn, _, src in walks] == [
        ("_send_read_round", "voters"),
        ("_widen_read_rounds", "self._configs.current.voters"),
    ]
    fixed = _OLD_READ_ROUND.replace("in voters if", "in sorted(voters) if").replace(
        "in self._configs.current.voters:", "in sorted(self._configs.current.voters):"
    )
    assert unordered_walks({"heartbeat.py": fixed}) == []


def test_the_check_sees_set_algebra_methods_and_conversions() -> None:
    text = """
class M:
    learners: frozenset[str]
    @property
    def members(self) -> frozenset[str]:
        return self.voters | self.learners

class N:
    def _peers(self) -> set[str]:
        return set()

    def a(self, ids: Collection[str]) -> None:
        first = next(iter(ids))
        both = {p: 1 for p in self.members - self.learners}
        order = list(self._peers())
        fine = sum(1 for p in self.members if p) + len({p for p in ids})
        alsofine = quorum_value([self.rank(p) for p in self.members])
        done = [p for p in sorted(self.members)]
"""
    walks = unordered_walks({"x.py": text})
    assert [src for *_, src in walks] == ["ids", "self.members - self.learners", "self._peers()"]
