"""LocalRuntime: memory-augmented generation with a local transformers model.

Where it sits: the runtime is the one place where the three memories meet a model. For each turn
it retrieves plaintext memories from the cube (``cube.search``), routes the user's LoRA adapter
(``cube.para_mem``), reuses the thread's KV cache (``cube.act_mem``), prefills only the uncached
tail, then decodes token by token, streaming text. The LangChain face
(:class:`memos_integrations.langchain.chat_model.MemOSChatModel`) and ``MOS.chat`` call it.

Prompt layout, chosen so that caches stay reusable turn after turn::

    [system prompt + pinned/hot memories]   shared prefix, prefilled once per user and forked per thread
    [earlier turns]                     each earlier user turn re-rendered with the memories it saw
    [memories for this turn + message]  retrieved memories go *after* the history, not in the system
    [assistant header]                  prompt, so a new retrieval never invalidates the cached history

The memories a turn saw are remembered in the thread's cache metadata, so re-rendering the history
yields the same tokens and the whole history is a cache hit.

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

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)


@dataclass
class StreamEvent:
    """A text delta; the last event of a stream also carries the finished :class:`Generation`."""

    text: str
    generation: Generation | None = None


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
                 seed: int = 0, prefix_memories: Callable[[str | None], list[str]] | None = None) -> None:
        require("torch", "local")
        from ..activation import ActivationMemory

        if max_new_tokens < 1:
            raise InvalidInputError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
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

    def retrieve(self, query: str, user_id: str | None, *, top_k: int | None = None) -> tuple[list[str], list[str]]:
        """``(ids, texts)`` of the cube memories relevant to ``query``."""
        k = self.top_k if top_k is None else top_k
        if self.cube is None or k <= 0 or not query.strip():
            return [], []
        hits = self.cube.search(query, user_id=user_id, top_k=k)
        return [h.item.id for h in hits], [h.item.text for h in hits]

    def system_text(self, user_id: str | None, system: str | None = None) -> str:
        text = system if system is not None else self.system_prompt
        pinned = self.pinned_memories(user_id)
        if pinned:
            text += "\n\n" + bullet_list("What you know about the user:", pinned)
        return text

    def encode(self, messages: Sequence[dict[str, str]], *, generation_prompt: bool = True) -> list[int]:
        """Token ids of a chat (with the assistant header), via the tokenizer's chat template."""
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(list(messages), tokenize=False,
                                                      add_generation_prompt=generation_prompt)
        else:  # base models without a template: a plain transcript
            text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
            text += "assistant:" if generation_prompt else ""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def render(self, messages: Sequence[dict[str, str]], *, user_id: str | None = None,
               contexts: dict[str, str] | None = None,
               memories: Sequence[str] = ()) -> tuple[list[dict[str, str]], list[dict[str, str]], str]:
        """``(chat, prefix_chat, context)``: the full chat to encode, its shared-prefix part, and
        the memory block injected into the last user message."""
        if not messages:
            raise InvalidInputError("messages is empty; pass at least one user message")
        msgs = [dict(m) for m in messages]
        system = None
        if msgs[0]["role"] == "system":
            system = msgs.pop(0)["content"]
        head = [{"role": "system", "content": self.system_text(user_id, system)}]
        contexts = contexts or {}
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

        ``thread_id`` selects the KV cache (no thread: no reuse, nothing stored); ``user_id``
        scopes retrieval, pinned memories and the adapter; ``top_k=0`` turns retrieval off.
        """
        import torch

        with self._lock:
            t_start = time.perf_counter()
            route = self.para_mem.route(user_id) if self.para_mem is not None else None
            adapter = route.name if route is not None else None
            model = self.model
            key = self.act_mem.model_key(model, route.digest if route is not None else None)
            query = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
            mem_ids, mem_texts = self.retrieve(query, user_id, top_k=top_k)
            meta = self.act_mem.thread_meta(thread_id, model_key=key) if thread_id is not None else {}
            # the memories recalled for a thread's earlier turns are its user's: another user naming
            # the same thread id gets none of them (and their turn keeps the thread as theirs)
            contexts = meta.get("contexts", {}) if meta.get("user_id") == user_id else {}
            chat, head, context = self.render(messages, user_id=user_id, contexts=contexts,
                                              memories=mem_texts)
            ids = self.encode(chat)
            with self._adapter_scope(model, route):
                if head[0]["content"]:
                    self.act_mem.set_prefix(model, self.encode(head, generation_prompt=False),
                                            name=f"user:{user_id or ''}", model_key=key)
                if thread_id is not None:
                    lease = self.act_mem.lookup(model, thread_id, ids, model_key=key)
                else:
                    lease = self.act_mem.lookup(model, "__scratch__", ids, model_key=key)
                yield from self._decode(model, ids, lease, key=key, thread_id=thread_id, user_id=user_id,
                                        contexts=contexts, query=query, context=context,
                                        adapter=adapter, mem_ids=mem_ids, t_start=t_start,
                                        max_new_tokens=max_new_tokens or self.max_new_tokens,
                                        temperature=self.temperature if temperature is None else temperature,
                                        stop=list(stop or []), seed=self.seed if seed is None else seed,
                                        torch=torch)

    def _adapter_scope(self, model: Any, route: Any) -> Any:
        import contextlib

        if route is None and hasattr(model, "disable_adapter") and getattr(model, "peft_config", None):
            return model.disable_adapter()
        return contextlib.nullcontext()

    def _decode(self, model: Any, ids: list[int], lease: Any, *, key: str, thread_id: str | None, user_id: str | None,
                contexts: dict[str, str], query: str, context: str, adapter: str | None,
                mem_ids: list[str], t_start: float, max_new_tokens: int, temperature: float,
                stop: list[str], seed: int, torch: Any) -> Iterator[StreamEvent]:
        from ..activation import kv

        device = next(model.parameters()).device
        cache = lease.cache if lease.cache is not None else kv.new_cache(model.config)
        reused = lease.reused_tokens
        gen = torch.Generator().manual_seed(seed)
        new: list[int] = []
        text, finish, ttft = "", "length", 0.0
        step_input = ids[reused:]
        for step in range(max_new_tokens):
            # Grad mode is thread-local and astream resumes us on other threads: set it per step.
            with torch.no_grad():
                out = kv.forward(model, torch.tensor([step_input], device=device), cache)
            logits = out.logits[0, -1].float()
            if temperature > 0:
                probs = torch.softmax(logits / temperature, dim=-1).cpu()
                token = int(torch.multinomial(probs, 1, generator=gen))
            else:
                token = int(logits.argmax())
            if step == 0:
                ttft = time.perf_counter() - t_start
            if token in self._eos:
                finish = "stop"
                break
            new.append(token)
            decoded = self._cut(self.tokenizer.decode(new, skip_special_tokens=True), stop)
            if decoded is None:
                finish = "stop"
                break
            if not decoded.endswith("\ufffd") and decoded.startswith(text):  # whole characters only
                if len(decoded) > len(text):
                    yield StreamEvent(decoded[len(text):])
                text = decoded
            step_input = [token]
        full = self.tokenizer.decode(new, skip_special_tokens=True)
        full = full[: min((full.find(s) for s in stop if s in full), default=len(full))]
        tail = full[len(text):] if full.startswith(text) else ""
        text = text + tail
        covered = kv.seq_len(cache)
        if thread_id is not None and covered > 0:
            contexts = dict(contexts)
            if context:
                contexts[_digest(query)] = context
            contexts = dict(list(contexts.items())[-_MAX_CONTEXTS:])
            self.act_mem.store(model, thread_id, (ids + new)[:covered], cache, model_key=key,
                               meta={"contexts": contexts, "user_id": user_id})
        final = Generation(text=text, token_ids=new, prompt_tokens=len(ids), reused_tokens=reused,
                           cache_source=lease.source, finish_reason=finish, adapter=adapter,
                           memory_ids=mem_ids, ttft_s=ttft, total_s=time.perf_counter() - t_start,
                           cache_reason=lease.reason)
        yield StreamEvent(tail, final)

    @staticmethod
    def _cut(text: str, stop: list[str]) -> str | None:
        """``text`` unchanged, or ``None`` once it contains a stop sequence."""
        return None if any(s in text for s in stop) else text
