"""LoCoMo question answering over what the reader remembered: an evaluation anyone can rerun.

Ingest LoCoMo (the dev split) in ``fast``, ``fine`` and ``async`` modes, answer every question from
retrieved memories with an answer model, and judge each answer against the gold one with a judge
model; both are any OpenAI-compatible endpoint. Reports LLM-judge accuracy per category, context
tokens per question, reader tokens per ingested turn, and add / search p50 / p95.

With an API key (the real run; nothing of it was measured in this repository)::

    OPENAI_API_KEY=sk-... python -m benchmarks.locomo_qa --base-url https://api.openai.com/v1 \\
        --model gpt-4o-mini --judge-model gpt-4o-mini --reader-model gpt-4o-mini --modes fast fine async

Offline, to prove the wiring only (the stand-in server's rules answer; the accuracy means nothing)::

    python -m benchmarks.locomo_qa --standin --conversations 1 --sessions 2 --questions 20
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import locomo, pct, sessions, table, turn_messages  # noqa: E402

ANSWER = ("Answer the question from the memories below in a few words. If they do not say, answer "
          "'unknown'.\nMEMORIES:\n{memories}\nQUESTION: {question}")
JUDGE = ("Gold answer: {gold}\nModel answer: {answer}\nQuestion: {question}\nIs the model answer correct "
         "(same meaning as the gold answer)? Reply with one word: CORRECT or WRONG.")
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}


def standin_responder(request: dict[str, Any]) -> str:
    """Wiring only: the reader's rules from bench_reader, an answer that repeats the top memory, a judge
    that says CORRECT when the gold answer's first word appears in the answer."""
    from benchmarks.bench_reader import locomo_responder

    user = request["messages"][-1]["content"]
    if request["messages"][0]["content"].startswith(("You extract", "You keep")):
        return locomo_responder(request)
    if user.startswith("Gold answer:"):
        gold = re.search(r"Gold answer: (\S+)", user)
        answer = user.split("Model answer:", 1)[1].split("\nQuestion:", 1)[0].lower()
        return "CORRECT" if gold and gold.group(1).lower().strip(".,") in answer else "WRONG"
    memories = user.split("MEMORIES:\n", 1)[1].split("\nQUESTION:", 1)[0].splitlines()
    return memories[0][2:] if memories and memories[0].startswith("- ") else "unknown"


def chat(client: Any, model: str, prompt: str) -> tuple[str, int]:
    resp = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}], temperature=0,
                                          max_tokens=64)
    return (resp.choices[0].message.content or "").strip(), int(resp.usage.prompt_tokens if resp.usage else 0)


def run_mode(mode: str, data: list[dict[str, Any]], args: argparse.Namespace, embedder: Any, base_url: str, key: str) -> list[Any]:
    import openai

    from memos_integrations import MemCube
    from memos_integrations.readers import LLMReader

    reader = LLMReader.from_openai(model=args.reader_model or args.model, base_url=base_url, api_key=key,
                                   window_size=args.window)
    client = openai.OpenAI(base_url=base_url, api_key=key, timeout=120)
    judge_client = openai.OpenAI(base_url=args.judge_base_url or base_url, api_key=key, timeout=120)
    adds, searches, context, correct = [], [], [], defaultdict(list)
    turns = 0
    with MemCube.init_from_dir(Path(tempfile.mkdtemp()) / "cube", embedder=embedder, reader=reader) as cube:
        for conv in data:
            user = conv["sample_id"]
            for key_, when, raw in list(sessions(conv))[: args.sessions or None]:
                msgs = turn_messages(raw)
                turns += len(msgs)
                start = time.perf_counter()
                cube.add(messages=msgs, user_id=user, session_id=key_, timestamp=when, mode=mode)
                adds.append(time.perf_counter() - start)
        cube.wait(3600)
        reader_tokens = cube.reader_engine.usage()
        kinds = None if mode == "fast" else ["fact", "preference", "event", "message"]
        for conv in data:
            for qa in conv["qa"][: args.questions or None]:
                if "answer" not in qa:
                    continue
                start = time.perf_counter()
                hits = cube.search(qa["question"], user_id=conv["sample_id"], top_k=args.top_k, kinds=kinds)
                searches.append(time.perf_counter() - start)
                memories = "\n".join(f"- {h.item.text}" for h in hits)
                answer, prompt_tokens = chat(client, args.model, ANSWER.format(memories=memories, question=qa["question"]))
                context.append(prompt_tokens)
                verdict, _ = chat(judge_client, args.judge_model, JUDGE.format(gold=qa["answer"], answer=answer, question=qa["question"]))
                correct[CATEGORIES.get(qa.get("category"), str(qa.get("category")))].append(verdict.upper().startswith("CORRECT"))
    accuracy = {cat: 100 * sum(v) / len(v) for cat, v in sorted(correct.items())}
    total = [x for v in correct.values() for x in v]
    return [mode, f"{100 * sum(total) / max(len(total), 1):.1f}", json.dumps({k: round(v, 1) for k, v in accuracy.items()}),
            f"{sum(context) / max(len(context), 1):.0f}",
            f"{(reader_tokens['prompt_tokens'] + reader_tokens['completion_tokens']) / max(turns, 1):.1f}",
            f"{pct(adds, 50) * 1e3:.0f} / {pct(adds, 95) * 1e3:.0f}", f"{pct(searches, 50) * 1e3:.1f} / {pct(searches, 95) * 1e3:.1f}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint for the reader and the answers")
    ap.add_argument("--model", default="gpt-4o-mini", help="answer model")
    ap.add_argument("--reader-model", default=None, help="reader model (default: --model)")
    ap.add_argument("--judge-model", default="gpt-4o-mini")
    ap.add_argument("--judge-base-url", default=None)
    ap.add_argument("--modes", nargs="+", default=["fast", "fine", "async"], choices=["fast", "fine", "async"])
    ap.add_argument("--conversations", type=int, default=0, help="0: all of the dev split")
    ap.add_argument("--sessions", type=int, default=0, help="sessions per conversation (0: all)")
    ap.add_argument("--questions", type=int, default=0, help="questions per conversation (0: all)")
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--standin", action="store_true", help="run against the in-process stand-in server (wiring only)")
    args = ap.parse_args()
    from memos_integrations.textual.embed import MiniLMEmbedder

    embedder = MiniLMEmbedder()
    data = locomo()[: args.conversations or None]
    headers = ["mode", "judge accuracy %", "per category %", "context tokens / question", "reader tokens / turn",
               "add p50 / p95 (ms)", "search p50 / p95 (ms)"]
    rows = []
    if args.standin:
        from tests.openai_standin import StandinServer

        with StandinServer(standin_responder) as srv:
            rows = [run_mode(m, data, args, embedder, srv.url, "standin") for m in args.modes]
        print("stand-in server: the numbers prove the wiring; the accuracy is not a model's")
    else:
        key = os.environ.get("OPENAI_API_KEY") or "none"
        rows = [run_mode(m, data, args, embedder, args.base_url, key) for m in args.modes]
    print(table(headers, rows))


if __name__ == "__main__":
    main()
