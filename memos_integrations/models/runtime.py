"""LocalRuntime: memory-augmented generation with a local transformers model.

Where it sits: the runtime is the one place where the three memories meet a model. For each turn
it retrieves plaintext memories from the cube (``cube.search``), routes the user's LoRA adapter
(``cube.para_mem``), reuses the thread's KV cache (``cube.act_mem``), prefills only the uncached
tail, then decodes token by token, streaming text. The LangChain face
(:class:`memos_integrations.langchain.chat_model.MemOSChatModel`) and ``MOS.chat`` call it.

Prompt layout, chosen so that caches stay reusable turn after turn::

    [system prompt + pinned/hot memories]   shared prefix, prefilled once per user and forked per thread
    [earlier turns]                         plain: the memories an earlier turn saw are not kept
    [memories for this turn + message]      retrieved memories go *after* the history, not in the system
    [assistant header]                      prompt, so a new retrieval never invalidates the cached history

Prompt hygiene: a memory already in the shared prefix (pinned) is not repeated in the retrieved
block; the block is cut to ``memory_token_budget`` tokens (best memories first); and an earlier
turn's block is dropped from the history (``turn_memories="drop"``), so the history does not grow by a
block every turn. Dropping is exact for the cache (reuse is by token identity: the cache is reused up
to that turn's message and the rest is prefilled, in the background when next-turn preloading is on,
see :mod:`memos_integrations.activation.preload`). ``turn_memories="keep"`` re-renders every earlier
turn with the block it saw (remembered in the thread's cache metadata), so the whole history is a
cache hit but grows by a block per turn.

Sync core: one lock serialises forward passes (adapter routing is global state of the model);
async callers (LangChain's ``ainvoke``/``astream``) run this in a worker thread.
"""

from __future__ import annotations

import hashlib
import inspect
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError, require
from ..prompting import bullet_list

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant with a long-term memory of this user."
_MAX_CONTEXTS = 256  # turns whose injected memories a thread remembers


@dataclass
class Generation:
    """One finished turn: the text and what memory did for it."""

    text: str
    token_ids: list[int]
    prompt_tokens: int
    reused_tokens: int
    cache_source: str
    finish_reason: str
    adapter: str | None = None
    memory_ids: list[str] = field(default_factory=list)
    ttft_s: float = 0.0
    total_s: float = 0.0
    cache_reason: str = ""
    #: next-turn preloading: "hit", "partial", "miss", "discarded: ..." or "" (no prediction)
    preload: str = ""
    #: the prompt's token ids (system prefix, history, memory block, message, assistant header)
    prompt_ids: list[int] = field(default_factory=list, repr=False)

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)


@dataclass
class StreamEvent:
    """A text delta; the last event of a stream also carries the finished :class:`Generation`."""

    text: str
    generation: Generation | None = None


@dataclass
class _Turn:
    """What one turn decided before decoding (the arguments of :meth:`LocalRuntime._decode`)."""

    model: Any
    ids: list[int]
    lease: Any
    key: str
    thread_id: str | None
    user_id: str | None
    messages: list[dict[str, str]]
    contexts: dict[str, str]
    query: str
    context: str
    adapter: str | None
    mem_ids: list[str]
    t_start: float
    preload: str
    max_new_tokens: int
    temperature: float
    stop: list[str]
    seed: int


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class LocalRuntime:
    """A local causal LM with the cube's three memories.

    Setup: ``pip install 'memos-integrations[local]'``.

    Instantiate::

        runtime = LocalRuntime.from_pretrained("Qwen/Qwen2.5-0.5B-Instruct", cube=cube)
        # or, offline, a tiny random-weight model:
        from memos_integrations.models.testing import byte_tokenizer, tiny_causal_lm
        runtime = LocalRuntime(tiny_causal_lm(), byte_tokenizer(), cube=cube)

    Generate::

        gen = runtime.generate([{"role": "user", "content": "hi"}], thread_id="t1", user_id="alice")
        gen.text, gen.reused_tokens, gen.cache_source
    """

    def __init__(self, model: Any, tokenizer: Any, *, cube: Any = None, act_mem: Any = None,
                 para_mem: Any = None, system_prompt: str = DEFAULT_SYSTEM_PROMPT, top_k: int = 5,
                 pin_memories: bool = True, max_new_tokens: int = 128, temperature: float = 0.0,
                 seed: int = 0, prefix_memories: Callable[[str | None], list[str]] | None = None,
                 memory_token_budget: int | None = 256, turn_memories: str = "drop",
                 preload: bool = False, preload_top_k: int | None = None) -> None:
        """Args: see the class docstring; the less obvious ones:

        Args:
            memory_token_budget: tokens the retrieved-memory block may take (``None``: no limit).
            turn_memories: ``"drop"`` (default) leaves earlier turns' memory blocks out of the
                history; ``"keep"`` keeps them (every earlier turn re-rendered as it was).
            preload: after each reply on a thread, predict and prefill the next turn's memories in
                a background thread (:class:`~memos_integrations.activation.preload.Preloader`).
            preload_top_k: memories predicted per thread (default ``4 * top_k``, cut to
                ``memory_token_budget``).
        """
        require("torch", "local")
        from ..activation import ActivationMemory

        if max_new_tokens < 1:
            raise InvalidInputError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        if turn_memories not in ("drop", "keep"):
            raise InvalidInputError(f"turn_memories must be 'drop' or 'keep', got {turn_memories!r}")
        if memory_token_budget is not None and memory_token_budget < 1:
            raise InvalidInputError(f"memory_token_budget must be positive or None, got {memory_token_budget}")
        self.tokenizer = tokenizer
        self.cube = cube
        if act_mem is None:
            act_mem = cube.act_mem if cube is not None else ActivationMemory()
        self.act_mem = act_mem
        if para_mem is None and cube is not None:
            para_mem = cube.para_mem
        self.para_mem = para_mem
        if para_mem is not None:
            para_mem.bind(model, tokenizer)
        self._base_model = model.eval()
        self.system_prompt = system_prompt
        self.top_k = top_k
        self.pin_memories = pin_memories
        self.prefix_memories = prefix_memories
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.seed = seed
        # A plain Lock, not an RLock: LangChain's astream resumes this generator on different
        # worker threads, and only a Lock may be released by a thread other than its acquirer.
        self._lock = threading.Lock()
        self._eos = self._eos_ids()
        self.memory_token_budget = memory_token_budget
        self.turn_memories = turn_memories
        from ..activation.preload import Preloader

        self.preloader = Preloader(self, top_k=preload_top_k) if preload else None

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, *, cube: Any = None, gguf_file: str | None = None,
                        device: str | None = None, **kwargs: Any) -> LocalRuntime:
        """Load a checkpoint folder, a hub id or a GGUF file, and its tokenizer.

        Args:
            name_or_path: a checkpoint folder, a hub id, or a ``.gguf`` file (a GGUF file is
                de-quantised on every load; :func:`~memos_integrations.models.loading.convert_gguf`
                converts it once to a folder that loads in a fraction of the time).
            cube: the MemCube whose memories the runtime uses.
            gguf_file: the GGUF file inside ``name_or_path`` when that is a folder or hub repo.
            device: a torch device to move the model to.
            **kwargs: arguments of :class:`LocalRuntime` (``system_prompt``, ``top_k``,
                ``max_new_tokens``, ...) go to the runtime; every other one (``revision``,
                ``attn_implementation``, ``dtype``, ``quantization_config``, ...) to
                ``AutoModelForCausalLM.from_pretrained``.

        Returns:
            The runtime, with the weights in eval mode.

        Raises:
            ModelNotFoundError: a local path that does not exist.
            ModelLoadError: not a model, a GGUF file this gguf/transformers cannot read, or offline.
        """
        from .loading import load_model

        own = set(inspect.signature(cls.__init__).parameters) - {"self", "model", "tokenizer"}
        runtime_kwargs = {k: v for k, v in kwargs.items() if k in own}
        loader_kwargs = {k: v for k, v in kwargs.items() if k not in own}
        model, tokenizer = load_model(name_or_path, gguf_file=gguf_file, device=device, **loader_kwargs)
        return cls(model, tokenizer, cube=cube, **runtime_kwargs)

    @property
    def model(self) -> Any:
        """The model forward passes go through (the PEFT wrapper once adapters are loaded)."""
        return self.para_mem.model if self.para_mem is not None else self._base_model

    @property
    def model_name(self) -> str:
        return str(getattr(self._base_model.config, "_name_or_path", "") or
                   self._base_model.config.model_type)

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        for src in (getattr(self._base_model, "generation_config", None), self._base_model.config):
            value = getattr(src, "eos_token_id", None)
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(int(v) for v in value)
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        return ids

    # -- prompt ----------------------------------------------------------------------------------
    def pinned_memories(self, user_id: str | None, limit: int = 32) -> list[str]:
        """Memories that belong in the shared prefix, or what the ``prefix_memories`` callable returns.

        Pinned means tagged ``pinned``, flagged ``metadata["pinned"]``, or frozen by the scheduler;
        hot means activated (promoted by :class:`~memos_integrations.schedule.MemScheduler` because
        searches keep returning it). Indexed queries in creation order: the prefix, and so its KV
        cache, stays the same until those memories change.
        """
        if not self.pin_memories:
            return []
        if self.prefix_memories is not None:
            return list(self.prefix_memories(user_id))
        if self.cube is None:
            return []
        from ..items import Lifecycle
        from ..textual.filters import MemoryFilter

        found: dict[str, tuple[float, str]] = {}
        for flt in (MemoryFilter(user_id=user_id, tags_any=["pinned"]),
                    MemoryFilter(user_id=user_id, metadata={"pinned": True}),
                    MemoryFilter(user_id=user_id, states=[Lifecycle.FROZEN, Lifecycle.ACTIVATED])):
            for item in self.cube.text_mem.list_items(flt, limit=limit):
                found[item.id] = (item.created_at.timestamp(), item.text)
        return [text for _, text in sorted(found.values())[:limit]]

    def retrieve(self, query: str, user_id: str | None, *, top_k: int | None = None,
                 exclude: Sequence[str] = ()) -> tuple[list[str], list[str]]:
        """``(ids, texts)`` of the cube memories relevant to ``query``, leaving out texts in ``exclude``
        (the pinned memories already in the shared prefix), cut to ``memory_token_budget``."""
        k = self.top_k if top_k is None else top_k
        if self.cube is None or k <= 0 or not query.strip():
            return [], []
        skip = {t.strip() for t in exclude}
        hits = self.cube.search(query, user_id=user_id, top_k=k + len(skip))
        pairs = [(h.item.id, h.item.text) for h in hits if h.item.text.strip() not in skip][:k]
        return self.fit_block([i for i, _ in pairs], [t for _, t in pairs])

    def fit_block(self, ids: Sequence[str], texts: Sequence[str]) -> tuple[list[str], list[str]]:
        """The leading memories whose block fits ``memory_token_budget`` tokens."""
        budget = self.memory_token_budget
        out_ids: list[str] = []
        out_texts: list[str] = []
        spent = len(self.tokenizer("Relevant memories:", add_special_tokens=False)["input_ids"])
        for mid, text in zip(ids, texts, strict=True):
            cost = len(self.tokenizer(f"\n- {text}", add_special_tokens=False)["input_ids"])
            if budget is not None and spent + cost > budget:
                break
            out_ids.append(mid)
            out_texts.append(text)
            spent += cost
        return out_ids, out_texts

    def system_text(self, user_id: str | None, system: str | None = None,
                    pinned: Sequence[str] | None = None) -> str:
        text = system if system is not None else self.system_prompt
        pinned = self.pinned_memories(user_id) if pinned is None else pinned
        if pinned:
            text += "\n\n" + bullet_list("What you know about the user:", pinned)
        return text

    def encode(self, messages: Sequence[dict[str, str]], *, generation_prompt: bool = True) -> list[int]:
        """Token ids of a chat (with the assistant header), via the tokenizer's chat template."""
        text = self._chat_text(messages, generation_prompt=generation_prompt)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _chat_text(self, messages: Sequence[dict[str, str]], *, generation_prompt: bool) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return str(self.tokenizer.apply_chat_template(list(messages), tokenize=False,
                                                          add_generation_prompt=generation_prompt))
        # base models without a template: a plain transcript
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
        return text + ("assistant:" if generation_prompt else "")

    def render(self, messages: Sequence[dict[str, str]], *, user_id: str | None = None,
               contexts: dict[str, str] | None = None, memories: Sequence[str] = (),
               pinned: Sequence[str] | None = None) -> tuple[list[dict[str, str]], list[dict[str, str]], str]:
        """``(chat, prefix_chat, context)``: the full chat to encode, its shared-prefix part, and
        the memory block injected into the last user message."""
        if not messages:
            raise InvalidInputError("messages is empty; pass at least one user message")
        msgs = [dict(m) for m in messages]
        system = None
        if msgs[0]["role"] == "system":
            system = msgs.pop(0)["content"]
        head = [{"role": "system", "content": self.system_text(user_id, system, pinned)}]
        contexts = (contexts or {}) if self.turn_memories == "keep" else {}
        last_user = max((i for i, m in enumerate(msgs) if m["role"] == "user"), default=None)
        context = bullet_list("Relevant memories:", memories)
        for i, m in enumerate(msgs):
            if m["role"] != "user":
                continue
            block = context if i == last_user else contexts.get(_digest(m["content"]), "")
            if block:
                m["content"] = f"{block}\n\n{m['content']}"
        return head + msgs, head, context

    # -- generation ------------------------------------------------------------------------------
    def generate(self, messages: Sequence[dict[str, str]], **kwargs: Any) -> Generation:
        """Run one turn to completion (see :meth:`stream` for the arguments)."""
        final: Generation | None = None
        for event in self.stream(messages, **kwargs):
            final = event.generation or final
        assert final is not None
        return final

    def stream(self, messages: Sequence[dict[str, str]], *, thread_id: str | None = None,
               user_id: str | None = None, max_new_tokens: int | None = None,
               temperature: float | None = None, stop: Sequence[str] | None = None,
               top_k: int | None = None, seed: int | None = None) -> Iterator[StreamEvent]:
        """Yield text deltas for one turn; the last event carries the :class:`Generation`.

        Args:
            messages: the chat so far, ending with the user's new message.
            thread_id: selects the KV cache (no thread: no reuse, nothing stored).
            user_id: scopes retrieval, pinned memories and the adapter.
            max_new_tokens: tokens to generate at most (default: the runtime's).
            temperature: 0 decodes greedily.
            stop: stop sequences.
            top_k: memories retrieved (0 turns retrieval off).
            seed: sampling seed when ``temperature > 0``.

        Returns:
            An iterator of :class:`StreamEvent`.
        """
        import torch

        with self._lock:
            if self.preloader is not None and thread_id is not None:
                self.preloader.cancel(thread_id)  # a prediction still in the making stops here
            t_start = time.perf_counter()
            last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=len(messages))
            query = messages[last_user]["content"] if last_user < len(messages) else ""
            # with para_mem.use_router(...), the adapter applies only when the request is about what it holds
            route = self.para_mem.route(user_id, query) if self.para_mem is not None else None
            model = self.model
            key = self.act_mem.model_key(model, route.digest if route is not None else None)
            pinned = self.pinned_memories(user_id)
            mem_ids, mem_texts = self.retrieve(query, user_id, top_k=top_k, exclude=pinned)
            also: list[str] = []
            preload = ""
            if self.preloader is not None and thread_id is not None:
                from ..activation.memory import PRELOAD_THREAD

                prediction, preload = self.preloader.take(thread_id, user_id, messages[:last_user], key)
                if prediction is not None:
                    mem_ids, mem_texts, preload = self._merge_prediction(prediction, mem_ids, mem_texts)
                    also = [PRELOAD_THREAD + thread_id]
            meta = self.act_mem.thread_meta(thread_id, model_key=key) if thread_id is not None else {}
            # the memories recalled for a thread's earlier turns are its user's: another user naming
            # the same thread id gets none of them (and their turn keeps the thread as theirs)
            contexts = meta.get("contexts", {}) if meta.get("user_id") == user_id else {}
            chat, head, context = self.render(messages, user_id=user_id, contexts=contexts,
                                              memories=mem_texts, pinned=pinned)
            ids = self.encode(chat)
            with self._adapter_scope(model, route):
                if head[0]["content"]:
                    self.act_mem.set_prefix(model, self.encode(head, generation_prompt=False),
                                            name=f"user:{user_id or ''}", model_key=key)
                lease = self.act_mem.lookup(model, thread_id or "__scratch__", ids, model_key=key, also=also)
                turn = _Turn(model=model, ids=ids, lease=lease, key=key, thread_id=thread_id, user_id=user_id,
                             messages=list(messages), contexts=contexts, query=query, context=context,
                             adapter=route.name if route is not None else None, mem_ids=mem_ids,
                             t_start=t_start, preload=preload,
                             max_new_tokens=max_new_tokens or self.max_new_tokens,
                             temperature=self.temperature if temperature is None else temperature,
                             stop=list(stop or []), seed=self.seed if seed is None else seed)
                yield from self._decode(turn, torch)

    def preload_next(self, messages: Sequence[dict[str, str]], *, thread_id: str, user_id: str | None,
                     query: str | None = None) -> None:
        """Schedule next-turn preloading for ``messages`` (ending with the reply the user saw).

        A turn schedules it by itself with the reply it generated; call this when the reply kept in
        the thread differs (edited, post-processed, or a replayed transcript), or to predict for a
        ``query`` you expect (a suggested follow-up, a draft) instead of the last exchange.

        Args:
            messages: the thread so far, ending with the reply.
            thread_id: the thread whose next turn is prepared.
            user_id: whose memories, prefix and adapter.
            query: what to retrieve the candidates for, and (with a router) whether the adapter applies
                (default: the last user message and reply; the adapter applies).

        Returns:
            None; the prediction is made in the background (``preloader.wait()`` blocks until done).

        Raises:
            InvalidInputError: the runtime was built without ``preload=True``.
        """
        if self.preloader is None:
            raise InvalidInputError("next-turn preloading is off; build the runtime with preload=True")
        with self._lock:  # routing sets the model's active adapter
            route = self.para_mem.route(user_id, query) if self.para_mem is not None else None
            key = self.act_mem.model_key(self.model, route.digest if route is not None else None)
        self.preloader.schedule(thread_id, user_id, list(messages), key, query=query)

    def _merge_prediction(self, prediction: Any, ids: list[str],
                          texts: list[str]) -> tuple[list[str], list[str], str]:
        """The memory block of a turn that has a ready prediction (``ids``/``texts``: retrieval for
        the message, today's block).

        The preloaded cache covers the predicted candidates ``C`` in prediction order. Reuse is by
        token prefix, so the block is always a head of ``C`` followed by what it lacks:

        * ``hit``: every retrieved memory is among the first ``m`` candidates and ``C[:m]`` fits the
          token budget; the block is ``C[:m]`` (``m`` as small as possible: the head ends with the
          last retrieved memory), so only the message is prefilled. It holds every memory today's
          block holds, in prediction order, plus any candidate ranked above one of them. Nothing
          retrieved (no memories, ``top_k=0``): no block, as today, also a hit.
        * ``partial``: some retrieved memories were not predicted (or the head would not fit); the
          block is the longest head ``C[:j]``, ``j <= m``, that fits together with the retrieved
          memories it lacks, appended in retrieval order; those are prefilled with the message.
        * ``miss``: no head fits (or nothing retrieved was predicted); the block is today's, and the
          preloaded cache still serves the history up to it.
        """
        assert self.preloader is not None
        stats = self.preloader.stats
        predicted = self._still_current(prediction)
        rank = {mid: n for n, (mid, _) in enumerate(predicted)}
        found = [rank[i] for i in ids if i in rank]
        if not ids:
            stats.hits += 1
            return [], [], "hit"
        for j in range(max(found, default=-1) + 1, 0, -1):
            head = predicted[:j]
            have = {i for i, _ in head}
            block = head + [(i, t) for i, t in zip(ids, texts, strict=True) if i not in have]
            fit_ids, fit_texts = self.fit_block([i for i, _ in block], [t for _, t in block])
            if len(fit_ids) == len(block):
                kind = "hit" if len(block) == j else "partial"
                if kind == "hit":
                    stats.hits += 1
                else:
                    stats.partial += 1
                return fit_ids, fit_texts, kind
        stats.misses += 1
        return ids, texts, "miss"

    def _still_current(self, prediction: Any) -> list[tuple[str, str]]:
        """The head of the predicted candidates that the cube still holds as they were predicted.

        A memory deleted, superseded, edited or moved out of the user's scope since the prediction
        ends the usable head there: the block must never serve a memory (or an old text of one) that
        retrieval could no longer return.
        """
        pairs = list(zip(prediction.memory_ids, prediction.memory_texts, strict=True))
        if self.cube is None or not pairs:
            return pairs
        from ..textual.filters import MemoryFilter

        flt = MemoryFilter(ids=[i for i, _ in pairs], user_id=prediction.user_id, current=True)
        now = {it.id: it.text for it in self.cube.text_mem.list_items(flt)}
        n = 0
        while n < len(pairs) and now.get(pairs[n][0]) == pairs[n][1]:
            n += 1
        return pairs[:n]

    def encode_until_next_message(self, history: Sequence[dict[str, str]], *, user_id: str | None,
                                  memories: Sequence[str], pinned: Sequence[str] | None = None,
                                  contexts: dict[str, str] | None = None) -> list[int]:
        """Token ids of the next prompt up to where the user's next message will go: what
        next-turn preloading prefills (the prompt's tokens after that depend on the message)."""
        from ..activation.preload import _MARK

        chat, _, _ = self.render([*history, {"role": "user", "content": _MARK}], user_id=user_id,
                                 contexts=contexts, memories=memories, pinned=pinned)
        text = self._chat_text(chat, generation_prompt=True)
        return list(self.tokenizer(text[: text.index(_MARK)], add_special_tokens=False)["input_ids"])

    def _adapter_scope(self, model: Any, route: Any) -> Any:
        import contextlib

        if route is None and hasattr(model, "disable_adapter") and getattr(model, "peft_config", None):
            return model.disable_adapter()
        return contextlib.nullcontext()

    def _decode(self, turn: _Turn, torch: Any) -> Iterator[StreamEvent]:
        from ..activation import kv

        model, ids, lease = turn.model, turn.ids, turn.lease
        device = next(model.parameters()).device
        cache = lease.cache if lease.cache is not None else kv.new_cache(model.config)
        reused = lease.reused_tokens
        gen = torch.Generator().manual_seed(turn.seed)
        new: list[int] = []
        text, finish, ttft = "", "length", 0.0
        step_input = torch.tensor([ids[reused:]], device=device)
        stop = turn.stop
        for step in range(turn.max_new_tokens):
            # Grad mode is thread-local and astream resumes us on other threads: set it per step.
            with torch.no_grad():
                logits = kv.forward(model, step_input, cache).logits[0, -1]
                if turn.temperature > 0:
                    probs = torch.softmax(logits.float() / turn.temperature, dim=-1).cpu()
                    next_id = torch.multinomial(probs, 1, generator=gen).to(device)
                else:
                    next_id = logits.argmax(-1, keepdim=True)
            token = int(next_id)
            if step == 0:
                ttft = time.perf_counter() - turn.t_start
            if token in self._eos:
                finish = "stop"
                break
            new.append(token)
            step_input = next_id.reshape(1, 1)
            piece = self.tokenizer.decode(new, skip_special_tokens=True)
            if stop and any(s in piece for s in stop):
                finish = "stop"
                break
            if not piece.endswith("\ufffd") and piece.startswith(text):  # whole characters only
                if len(piece) > len(text):
                    yield StreamEvent(piece[len(text):])
                text = piece
        full = self.tokenizer.decode(new, skip_special_tokens=True)
        full = full[: min((full.find(s) for s in stop if s in full), default=len(full))]
        tail = full[len(text):] if full.startswith(text) else ""
        text = text + tail
        covered = kv.seq_len(cache)
        if turn.thread_id is not None and covered > 0:
            contexts = dict(turn.contexts)
            if turn.context and self.turn_memories == "keep":
                contexts[_digest(turn.query)] = turn.context
            contexts = dict(list(contexts.items())[-_MAX_CONTEXTS:])
            self.act_mem.store(model, turn.thread_id, (ids + new)[:covered], cache, model_key=turn.key,
                               meta={"contexts": contexts, "user_id": turn.user_id})
            if self.preloader is not None:
                self.preloader.schedule(turn.thread_id, turn.user_id,
                                        [*turn.messages, {"role": "assistant", "content": text}], turn.key)
        final = Generation(text=text, token_ids=new, prompt_tokens=len(ids), reused_tokens=reused,
                           cache_source=lease.source, finish_reason=finish, adapter=turn.adapter,
                           memory_ids=turn.mem_ids, ttft_s=ttft, total_s=time.perf_counter() - turn.t_start,
                           cache_reason=lease.reason, preload=turn.preload, prompt_ids=ids)
        yield StreamEvent(tail, final)

