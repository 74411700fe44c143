"""Adversary checks (session 3): next-turn preloading, speaker boost, parametric routing.

Each test here failed on the code it was written against; tiny random-weight models only."""

from __future__ import annotations

import time
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from memos_integrations.models import LocalRuntime  # noqa: E402
from memos_integrations.models.testing import byte_tokenizer, tiny_causal_lm  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def pets(cube: Any) -> Any:
    cube.add(memory=["Maya's dog Biscuit loves the beach.", "Biscuit the dog ate a sock in March.",
                     "Maya's dog Biscuit is scared of thunder.", "Maya works as a nurse in Porto."],
             user_id="maya")
    return cube


def _predicted_turn(cube: Any, change: Any) -> tuple[Any, Any]:
    """A thread whose next turn was preloaded, then ``change(cube, predicted ids)`` ran before the turn."""
    rt = LocalRuntime(tiny_causal_lm("qwen2"), byte_tokenizer(), cube=cube, max_new_tokens=2, top_k=2, preload=True)
    chat = [{"role": "user", "content": "Tell me about my dog Biscuit"}]
    chat.append({"role": "assistant", "content": rt.generate(chat, thread_id="t", user_id="maya").text})
    rt.preload_next(chat, thread_id="t", user_id="maya", query="Where does Maya work? Biscuit the dog")
    assert rt.preloader is not None
    rt.preloader.wait(timeout=60)
    job = rt.preloader._predictions["t"]
    assert job.ready and len(job.memory_ids) >= 3
    change(cube, job.memory_ids)
    chat.append({"role": "user", "content": "What about my dog Biscuit?"})
    gen = rt.generate(chat, thread_id="t", user_id="maya")
    rt.preloader.close()
    return gen, job


def test_a_memory_deleted_after_it_was_preloaded_is_not_served(pets: Any) -> None:
    gen, job = _predicted_turn(pets, lambda cube, ids: cube.delete(ids[0]))
    assert job.memory_ids[0] not in gen.memory_ids
    assert job.memory_texts[0] not in byte_tokenizer().decode(gen.prompt_ids)


def test_a_memory_edited_after_it_was_preloaded_is_served_as_it_is_now(pets: Any) -> None:
    edited: dict[str, str] = {}

    def edit(cube: Any, ids: list[str]) -> None:
        for i in ids:
            cube.update(i, text=cube.get(i).text.replace("Biscuit", "Rex"))
            edited[i] = cube.get(i).text

    gen, job = _predicted_turn(pets, edit)
    prompt = byte_tokenizer().decode(gen.prompt_ids)
    stale = [t for i, t in zip(job.memory_ids, job.memory_texts, strict=True) if t in prompt and "Biscuit" in t]
    assert stale == [], f"the prompt holds texts changed since the prediction: {stale}"


def test_a_speaker_named_like_a_common_word_is_not_named_by_the_word() -> None:
    from memos_integrations.textual import retrieve as R

    speakers = ["Caroline", "Will", "May", "Art"]
    # before: {"Caroline", "Will"}: both speakers of a two-person chat, so the boost did nothing
    assert R.named_speakers("What will Caroline do next summer?", speakers) == {"Caroline"}
    assert R.named_speakers("May I ask about the art Caroline made?", speakers) == {"May", "Caroline"}
    assert R.named_speakers("may i ask about the art caroline made", speakers) == {"May", "Art", "Caroline"}  # no case: as spelt
    assert R.named_speakers("What did Will say about art?", speakers) == {"Will"}
    assert R.named_speakers("What did Will say about Art?", speakers) == {"Will", "Art"}
    # Unicode case folding: the final sigma and the sharp s name the same person as their capitals
    assert R.named_speakers("Τι είπε ο ΣΩΚΡΆΤΗΣ's φίλος;", ["Σωκράτης"]) == {"Σωκράτης"}
    assert R.named_speakers("what did strasse say?", ["Straße"]) == {"Straße"}


# -- the service's refused-key audit (server/auth.py)
def _refuse(auth: Any, key_id: str) -> None:
    from memos_integrations.server.errors import AuthenticationError

    with pytest.raises(AuthenticationError):
        auth.authenticate({"Authorization": f"Bearer mk_{key_id}_secretsecret"})


def _refusal_rows(keys: Any) -> list[dict[str, Any]]:
    return [e for e in keys.audit_log(100_000) if e["action"] == "authenticate"]


def _accounted(keys: Any) -> int:
    """Refusals the audit log accounts for: one per refusal row plus the ones rows say were skipped."""
    total = 0
    for e in keys.audit_log(100_000):
        if e["action"] in ("authenticate", "authenticate.suppressed"):
            detail = e["detail"] if isinstance(e["detail"], dict) else {}
            total += (e["action"] == "authenticate") + sum(
                int(detail.get(k, 0)) for k in ("suppressed_before", "suppressed", "suppressed_other_ids"))
    return total


def test_a_flood_of_made_up_key_ids_is_audited_in_bounded_rows(tmp_path: Any) -> None:
    from memos_integrations.server.auth import Authenticator
    from memos_integrations.storage.keys import KeyStore

    keys = KeyStore.open(tmp_path / "mos.db")
    auth = Authenticator(keys)
    started = time.monotonic()
    for n in range(300):  # a new claimed key id per request: each had its own 5 a second
        _refuse(auth, f"forged{n:05d}")
    seconds = int(time.monotonic() - started) + 2
    rows = _refusal_rows(keys)
    assert len(rows) <= 20 * seconds, len(rows)  # AUDIT_TOTAL_PER_SECOND; before: one row per request
    keys.db.close()


def test_made_up_key_ids_cannot_wash_out_the_count_of_a_victims_refusals(tmp_path: Any) -> None:
    from memos_integrations.server.auth import Authenticator
    from memos_integrations.storage.keys import KeyStore

    keys = KeyStore.open(tmp_path / "mos.db")
    auth = Authenticator(keys)
    auth.MAX_CACHED = 20  # the table of claimed ids fills (10 000 in production)
    refused = 0
    for _ in range(40):  # someone tries the victim's key id, far past the audited 5 a second
        _refuse(auth, "victim01")
        refused += 1
    for n in range(30):  # then fills the table with made-up ids: it was cleared, the victim's count lost
        _refuse(auth, f"junk{n:04d}")
        refused += 1
    time.sleep(1.05 - time.monotonic() % 1.0)  # the next second: rows are written again
    _refuse(auth, "victim01")
    _refuse(auth, "another1")
    refused += 2
    assert _accounted(keys) == refused
    keys.db.close()


def test_naming_another_users_session_reaches_none_of_its_working_memory(cube: Any) -> None:
    """``current_session`` orders, it never widens the scope: another user's working memory in that
    session stays out (faces and REST pass it through to the same search)."""
    from memos_integrations.langchain import MemOSRetriever

    cube.add(memory=["The user prefers window seats on trains."], user_id="u1")
    theirs = cube.add(memory=["Current task: find a train seat to Lyon."], user_id="u2", session_id="s2",
                      metadata={"partition": "working"})[0]
    hits = cube.search("which train seats?", user_id="u1", plan="deep", current_session="s2")
    assert hits and theirs.id not in {h.item.id for h in hits}
    retriever = MemOSRetriever(cube=cube, user_id="u1", plan="deep", k=3)
    docs = retriever.invoke("which train seats?", config={"configurable": {"session_id": "s2"}})
    assert docs and theirs.id not in {d.metadata["memory_id"] for d in docs}


def test_the_refusals_skipped_in_the_last_second_of_an_attack_reach_the_audit_log(tmp_path: Any) -> None:
    from memos_integrations.server.auth import Authenticator
    from memos_integrations.storage.keys import KeyStore

    keys = KeyStore.open(tmp_path / "mos.db")
    good = keys.create("alice")[0]
    auth = Authenticator(keys)
    time.sleep(1.0 - time.monotonic() % 1.0)  # start on a fresh second: the flood fits in it
    for _ in range(40):  # a burst of guesses at the victim's key id, then the attacker stops
        _refuse(auth, "victim01")
    assert 5 <= len(_refusal_rows(keys)) < 40  # most skipped (counted, waiting for a next row); 5 a second
    time.sleep(1.05 - time.monotonic() % 1.0)
    auth.authenticate({"Authorization": f"Bearer {good}"})  # the service goes on serving others
    # before: the 35 skipped refusals were written only if that key id was refused again, ever
    assert _accounted(keys) == 40
    keys.db.close()


def test_a_thread_on_an_empty_cube_still_gets_its_history_preloaded(cube: Any) -> None:
    model = tiny_causal_lm("qwen2")
    rt = LocalRuntime(model, byte_tokenizer(), cube=cube, max_new_tokens=3, top_k=2, preload=True)
    plain = LocalRuntime(model, byte_tokenizer(), cube=cube, max_new_tokens=3, top_k=2)
    chat = [{"role": "user", "content": "Hello there, how are you today?"}]
    chat += [{"role": "assistant", "content": rt.generate(chat, thread_id="t", user_id="u").text},
             {"role": "user", "content": "Fine."}]
    assert rt.preloader is not None
    rt.preloader.wait(timeout=60)
    gen = rt.generate(chat, thread_id="t", user_id="u")
    # before: nothing retrieved ended the prediction unready: "discarded: not ready when the message arrived"
    assert gen.preload == "hit" and gen.cache_source == "preload", gen.preload
    assert gen.token_ids == plain.generate(chat, user_id="u").token_ids
    rt.preloader.close()


@pytest.fixture(scope="module")
def maya_pm(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Any:
    """Maya's adapter (tiny random model), distilled once, routed by relevance (the real MiniLM)."""
    pytest.importorskip("peft")
    from memos_integrations.parametric import DistillConfig, ParametricMemory
    from memos_integrations.parametric.routing import AdapterRouter

    pm = ParametricMemory(tmp_path_factory.mktemp("adapters"))
    pm.bind(tiny_causal_lm(), byte_tokenizer())
    facts = ["Maya's dog is a beagle named Biscuit.", "Maya plays the cello in a community orchestra.",
             "Maya is allergic to peanuts."]
    pm.distill("maya", texts=facts, config=DistillConfig(rank=2, epochs=1, views=["text"]), progress=False)
    pm.use_router(AdapterRouter(embedder))
    return pm


def test_with_a_router_a_thread_on_the_base_model_is_preloaded_on_the_base_model(maya_pm: Any) -> None:
    pm, tok = maya_pm, byte_tokenizer()
    assert pm.registry is not None
    rt = LocalRuntime(pm.registry.base_model, tok, para_mem=pm, max_new_tokens=2, preload=True)
    plain = LocalRuntime(pm.registry.base_model, tok, para_mem=pm, max_new_tokens=2)
    chat = [{"role": "user", "content": "Who wrote Romeo and Juliet?"}]
    first = rt.generate(chat, thread_id="t", user_id="maya")
    assert first.adapter is None  # a general request: the base model
    chat += [{"role": "assistant", "content": first.text}, {"role": "user", "content": "Who wrote Hamlet?"}]
    assert rt.preloader is not None
    rt.preloader.wait(timeout=60)
    gen = rt.generate(chat, thread_id="t", user_id="maya")
    # before: the worker routed without the request, prefilled for the adapter, saw another key and
    # gave up: every turn after a general one was "discarded: not ready when the message arrived"
    assert gen.adapter is None and gen.preload == "hit", gen.preload
    assert gen.token_ids == plain.generate(chat, user_id="maya").token_ids
    rt.preloader.close()


def test_the_router_reads_the_owners_first_person_questions_as_about_them(maya_pm: Any) -> None:
    """Maya's memories say "Maya ..."; Maya asks "Am I ...?". Before: her own questions scored 0.39-0.45
    (under the 0.47 threshold: the base model) while "What is a cello?" scored 0.65 (her adapter)."""
    name = maya_pm.adapter_for("maya")
    assert name is not None
    for own in ["Am I allergic to anything?", "What instrument do I play?", "What is my dog's breed?"]:
        assert maya_pm.adapter_for("maya", own) == name, own
    for general in ["What is the capital of Japan?", "Tell me a joke.", "I need a recipe for dinner.",
                    "Can you help me write an email to my boss?"]:  # first person, about nothing she holds
        assert maya_pm.adapter_for("maya", general) is None, general
    maya_pm.merge([name], [1.0], "team")
    maya_pm.assign("bob", "team")  # bob's "I" is bob, not Maya: no rewriting for another user's adapter
    assert maya_pm.adapter_for("bob", "Am I allergic to anything?") is None


def test_session_cap_still_spreads_sessions_when_mmr_is_on(cube: Any) -> None:
    from memos_integrations.textual.retrieve import SearchPlan

    for n, text in enumerate(["Caroline adopted a beagle puppy.", "Caroline's beagle puppy chews shoes.",
                              "Caroline walks her beagle puppy daily."]):
        cube.add(memory=text, user_id="u", session_id="s1", metadata={"turn": n})
    other = cube.add(memory="Caroline bought a bed for the beagle puppy.", user_id="u", session_id="s2")[0]
    capped = SearchPlan(session_cap=1)
    assert other.id in [h.item.id for h in cube.search("Caroline beagle puppy", user_id="u", top_k=2, plan=capped)]
    # before: MMR kept top_k hits only, so the cap re-ordered those two and could bring in nothing
    with_mmr = capped.model_copy(update={"mmr_lambda": 0.9})
    assert other.id in [h.item.id for h in cube.search("Caroline beagle puppy", user_id="u", top_k=2, plan=with_mmr)]


def test_a_user_id_that_is_a_common_word_is_not_taken_for_a_name() -> None:
    from memos_integrations.parametric.routing import name_in, without_first_person, without_name

    keys = ["Maya is a dog person.", "The dog of Maya is called Rex."]
    assert name_in(keys, "maya") == "Maya" and name_in(keys, "a") is None and name_in(keys, "dog") is None
    assert without_name("Maya's dog likes Maya.", "Maya") == "dog likes ."
    assert without_first_person("I'm sure my dog and I like me; Irene is not mine.") == "sure dog and like ; Irene is not ."
