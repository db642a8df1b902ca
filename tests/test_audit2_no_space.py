"""s13-audit2: a retry refused for the storage quota after an attempt that may have applied
is an unknown outcome, not ``no-space``.

``no-space`` (507) says the write was refused: nothing applied. A keyed write whose first
attempt may have applied (its answer lost with the connection, a deadline, a snapshot that
covered its entry) is retried with its key; when the retry meets the NOSPACE alarm (raised
by the first attempt's own write, say) it is refused before it is proposed, so that refusal
is about the retry only. The node and the client answered it as it was: a write that may
have applied reported as refused (the class of the "gone" finding, chaos seed 502). Both now
answer ``outcome-unknown`` once an attempt may have applied, as for ``session-expired``.
"""

from __future__ import annotations

import pytest
import trio

from tests.api.test_client_retries import MINT, SESSION, Answer, scripted
from tests.api.test_write_outcomes import forwarding_follower
from univrs.errors import (
    NoSpace,
    OutcomeUnknown,
    PermissionDenied,
    Timeout,
    Unauthenticated,
    UnivrsError,
)

# Refusals of a retry made before it is proposed: the quota's, and the caller's rights (its
# token revoked, or its role taken, between two attempts of one write).
REFUSALS = [
    NoSpace("the storage quota is exceeded"),
    Unauthenticated("the token is unknown"),
    PermissionDenied("the token lacks the role 'write'"),
]


@pytest.mark.parametrize("refusal", REFUSALS, ids=lambda e: e.code)
async def test_the_client_answers_a_refused_retry_after_an_unknown_attempt_as_unknown(
    refusal: UnivrsError, autojump_clock: trio.abc.Clock
) -> None:
    script: dict[str, list[Answer]] = {
        "session.open": [SESSION],
        "credits.mint": [Timeout("deadline"), refusal],
    }
    async with scripted(script) as client:
        with pytest.raises(OutcomeUnknown):
            await client.write("credits.mint", MINT)


@pytest.mark.parametrize("refusal", REFUSALS, ids=lambda e: e.code)
async def test_a_follower_answers_a_refused_retry_after_an_unknown_attempt_as_unknown(
    refusal: UnivrsError, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    f = await forwarding_follower(nursery)
    follower, forwarder, sent_then_lost = f.follower, f.forwarder, f.sent_then_lost
    forwarder.script = [sent_then_lost, refusal]
    with pytest.raises(UnivrsError) as info:
        await follower.execute(
            "credits.mint", {"to_peer": "p", "amount": 1, "reason": "r"}, key=("c9", 1)
        )
    assert info.value.code == "outcome-unknown" and forwarder.calls == 2
