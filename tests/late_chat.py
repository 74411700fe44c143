"""The little chat the ``late`` preset's tests search (tests/unit/test_late_tokens.py, test_adv6c_late.py)."""

from __future__ import annotations

from typing import Any

CHAT = [
    ("Melanie", "I went camping with my kids at the lake last weekend."),
    ("Caroline", "That sounds fun! Did you go swimming too?"),
    ("Melanie", "Yes, and we painted the sunset together on a big canvas."),
    ("Caroline", "I joined a pottery class and made a blue bowl."),
    ("Melanie", "My kids love hiking, so we climbed the hill behind our house."),
]
QUESTION = "What activities does Melanie do with her kids?"


def add_chat(cube: Any, user: str = "u1", session: str = "s1") -> list[str]:
    """Add :data:`CHAT` to ``cube`` as ``user``'s messages of ``session`` (ids ``<user>-<n>``); their ids."""
    msgs = [{"role": "user", "name": w, "content": t, "id": f"{user}-{n}"} for n, (w, t) in enumerate(CHAT)]
    return [it.id for it in cube.add(messages=msgs, user_id=user, session_id=session)]
