"""Hypothesis strategies shared by the codec tests."""

from __future__ import annotations

from hypothesis import strategies as st

UINT64 = (1 << 64) - 1

# Plain data as encode_plain takes it: None, bools, integers from -2**64 to 2**64 - 1, floats
# (no NaN), text, bytes, and lists and maps of them.
plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(1 << 64), UINT64)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.text() | st.integers(-(1 << 64), UINT64) | st.binary(), children, max_size=5
        )
    ),
    max_leaves=30,
)
