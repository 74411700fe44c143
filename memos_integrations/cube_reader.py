"""The reader half of :class:`~memos_integrations.cube.MemCube`: :class:`ReaderMixin`.

Split out of :mod:`.cube` so the cube's storage API reads on its own: attaching an LLM reader
(``MemCube.open(path, reader=...)``, :meth:`ReaderMixin.use_reader`), the reader engine that reads
queued message windows in the background, and what callers do with it (``feedback``, ``wait``,
``pending``, ``retry_failed``). ``MemCube`` inherits it; the methods are MemCube's public API.
"""

from __future__ import annotations

import logging
from functools import cached_property
from typing import TYPE_CHECKING, Any, Self, cast

from .items import MemoryItem

if TYPE_CHECKING:
    from .config import CubeConfig
    from .cube import MemCube
    from .cubelock import CubeHold


class ReaderMixin:
    """Reader methods of ``MemCube`` (needs its ``config``, ``_hold``, ``add`` and ``close``)."""

    if TYPE_CHECKING:
        config: CubeConfig
        _hold: CubeHold | None

        def add(self, *args: Any, **kwargs: Any) -> Any: ...

        def close(self) -> None: ...

    # -- the LLM reader (readers/) -------------------------------------------------------------
    _reader: Any = None

    def _attach_reader(self, reader: Any) -> Self:
        try:
            if reader is None and not isinstance(self.config.reader, str) and self.config.reader.provider == "openai":
                from .errors import ReaderError
                from .readers.reader import LLMReader

                try:
                    reader = LLMReader.from_config(self.config.reader)  # the key from the environment, now
                except ReaderError as exc:  # the cube opens; windows wait in the queue until a reader is given
                    logging.getLogger("memos_integrations.cube").warning("%s; this cube reads in fast mode until cube.use_reader(...)", exc)
            if reader is not None or not isinstance(self.config.reader, str):
                self.use_reader(reader)
        except BaseException:
            self._hold, hold = None, self._hold
            self.close()
            self._hold = hold  # the caller releases it
            raise
        return self

    def use_reader(self, reader: Any) -> None:
        """Read messages with ``reader`` (an ``LLMReader``) from now on; resumes windows left queued."""
        self._reader = reader
        engine = self.__dict__.get("reader_engine")
        if engine is not None:
            engine.reader = reader
            engine.start()
        else:
            _ = self.reader_engine  # resumes queued windows

    @property
    def reader(self) -> Any:
        return self._reader

    @cached_property
    def reader_engine(self) -> Any:
        from .readers.engine import ReaderEngine

        return ReaderEngine(cast("MemCube", self), self._reader)

    def feedback(self, text: str, *, user_id: str | None = None, session_id: str | None = None, timestamp: Any = None,
                 principal: str | None = None) -> list[MemoryItem]:
        """Correct memories in words ("No, I moved to Porto in May"): stored as a message, then read and
        reconciled (fine mode) against the memories it names.

        Args:
            text: the correction, in the user's words.
            user_id: whose memories it corrects (the model names the user by this id).
            session_id: the session it was said in.
            timestamp: when it was said (a SUPERSEDE closes the old memory at this time).
            principal: who is acting (recorded as ``created_by``).

        Returns:
            An ``AddResult``: the stored message, the memories written, ``operations``, ``usage``, ``note``.

        Raises:
            InvalidInputError: the cube has no reader (``MemCube.open(path, reader=...)``), or the text is empty.
        """
        message = {"role": "user", "content": text, "metadata": {"feedback": True}, **({"name": user_id} if user_id else {})}
        return self.add(messages=[message], user_id=user_id,
                        session_id=session_id, timestamp=timestamp, principal=principal, mode="fine")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every queued window is read (True) or ``timeout`` seconds pass (False)."""
        return bool(self.reader_engine.wait(timeout))

    def pending(self, user_id: str | None = None) -> list[Any]:
        """Windows not read yet (queued, running, or failed with their ``error``), oldest first."""
        return list(self.reader_engine.pending(user_id))

    def retry_failed(self) -> int:
        """Queue failed windows again (after raising a budget, or fixing the endpoint); returns how many."""
        n = int(self.reader_engine.jobs.retry("read"))
        self.reader_engine.start()
        return n
