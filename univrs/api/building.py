"""A write built from a request's operation and arguments, for writes that share their
operation and caller (``WriteBuilder``: univrs/api/service.py ``_check_frame``, s18-ingress).

What ``ApiService._build_write`` did per write and depends on the operation and the caller
alone (the key rule of a session operation, whether the caller's identity is held to the owner
of its sessions, the kind of renderer) is decided once per operation and caller of a frame;
the rest (the arguments checked and the command built, the key checked, the session's owner
checked, the envelope and the ``Write``) per write, as before. The envelope is built slot by
slot (univrs/sm/builders.py): the same frozen object as ``Envelope(...)`` makes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from univrs.api.answers import WorkloadAnswers
from univrs.api.auth import Caller
from univrs.api.opargs import check_key
from univrs.api.ops import UNKEYED, Handler, render_minimal, render_workload_encoded
from univrs.api.writes import Write, check_session_owner, held_to_owner
from univrs.errors import InvalidArgument
from univrs.sm.builders import slot_builder
from univrs.sm.commands import CloseSession, Envelope, OpenSession
from univrs.sm.responses import Response
from univrs.sm.state import ClusterStateMachine
from univrs.sm.validate import MAX_VERSION, VALID_IDS

if TYPE_CHECKING:
    from univrs.service.node import NodeHandle

__all__ = ["WriteBuilder"]


_new_envelope = slot_builder(Envelope)  # (command, client_id, seq, owner): attrs' field order
# ``Write(**fields)`` as its ``__init__`` called on a new instance: the same object (an
# ``attrs.define`` class: no ``__new__`` of its own), without the dict of keyword arguments a
# call of the class makes for ``__init__`` (``Write`` is ``kw_only``): 0.1 µs a write (s31).
_new_write = object.__new__
_init_write = Write.__init__


@attrs.define(eq=False, slots=True)
class WriteBuilder:
    """``ApiService._build_write`` for the writes of one operation by one caller: what
    depends on those alone is decided once (the key rule of a session operation, whether
    the caller is held to its sessions' owner, the renderer's kind), ``build`` does the rest
    per write (s18-ingress: a frame's writes built as a vector)."""

    node: NodeHandle
    answers_cache: WorkloadAnswers  # the service's (univrs/api/answers.py)
    op: Handler
    caller: Caller
    owner: str
    encoded: bool
    sm: ClusterStateMachine  # the applied state the session-owner check reads
    unkeyed: bool = attrs.field(init=False)
    held: bool = attrs.field(init=False)  # a token identity: held to its sessions' owner
    answers: WorkloadAnswers | None = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        op = self.op
        assert op.build is not None and op.render is not None
        self.unkeyed = op.name in UNKEYED
        self.held = held_to_owner(self.owner)
        encoded_answer = (
            self.encoded and op.workload_answer and op.finish is None and op.leader_step is None
        )
        self.answers = self.answers_cache if encoded_answer else None

    def build(
        self, args: dict[str, Any], key: tuple[str, int] | None, minimal: bool = False
    ) -> Write:
        """Check one write's arguments and key, and build it (``minimal``: answered with
        ``ops.render_minimal``'s ``{"id", "version"}``, s18-answers)."""
        op, owner = self.op, self.owner
        build = op.build
        assert build is not None
        if key is not None:
            if self.unkeyed:
                raise InvalidArgument(f"{op.name} takes no idempotency key", field="key")
            # ``check_key``'s passing case written out (a remembered valid client id, a seq
            # in range); any other key goes to it, for the same error (s31: two calls less).
            client_id, seq = key
            if not (
                type(client_id) is str
                and client_id in VALID_IDS
                and type(seq) is int
                and 1 <= seq <= MAX_VERSION
            ):
                check_key(key)
            if self.held:
                check_session_owner(self.sm, client_id, owner)
        command, built = build(args)
        # Only the session operations (``UNKEYED``: ``session.open``, ``session.close``) build
        # these commands (univrs/api/ops.py): no ``isinstance`` calls for any other write.
        if self.unkeyed:
            if isinstance(command, OpenSession):
                command = OpenSession(owner=owner)  # bounds the sessions one caller holds
            elif isinstance(command, CloseSession):
                command = CloseSession(client_id=command.client_id, owner=owner)  # its own only
        # The state machine refuses the command under another owner's session (s14-owner;
        # the leader drops it while a member predates payload version 3).
        envelope = (
            _new_envelope(command, None, None, None)
            if key is None
            else _new_envelope(command, key[0], key[1], owner if self.held else None)
        )
        answers = self.answers
        if minimal:

            def rendered(response: Response, state: ClusterStateMachine) -> Any:
                return render_minimal(command, response)

        elif answers is not None:

            def rendered(response: Response, state: ClusterStateMachine) -> Any:
                return render_workload_encoded(command, response, state, answers)

        else:
            render, finish = op.render, op.finish
            assert render is not None

            def rendered(response: Response, state: ClusterStateMachine) -> Any:
                result = render(command, response, state)
                return result if finish is None else finish(built, result, state)

        step, node = op.leader_step, self.node
        write = _new_write(Write)
        _init_write(  # ``Write(...)`` (see ``_init_write``)
            write,
            envelope=envelope,
            op=op.name,
            args=built,
            caller=self.caller,
            allowed_when_full=op.allowed_when_full,
            render=rendered,
            leader_step=None if step is None else (lambda state: step(command, state, node)),
            minimal=minimal,
        )
        return write
