"""Adversary, session 6: staged-write bounds (storage/staged_writes.py, server/routes_vectors.py).

A part refused by a bound ends its write (the client abandons it and sends the whole write again, as the
docs say): its earlier parts must not stay held for the parts' 10 minutes, or one refused write locks the
key (and, at the user's bound, the user) out of every split write until they expire."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402
from langchain_core.embeddings.fake import DeterministicFakeEmbedding  # noqa: E402

from memos_integrations import MOS  # noqa: E402
from memos_integrations.server import KeyStore, Limits, create_app  # noqa: E402
from memos_integrations.storage import staged_writes  # noqa: E402

LC = "/v1/vector-stores/langchain/add"


class Svc(NamedTuple):
    http: TestClient
    keys: dict[str, str]

    def stage(self, who: str, stage: str, part: int, size: int, **more: Any) -> Any:
        body = {"cube_id": "d1", "kind": "document", "texts": ["x" * size], "stage": stage, "part": part, **more}
        return self.http.post(LC, json=body, headers={"Authorization": f"Bearer {self.keys[who]}"})


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Svc]:
    home = tmp_path_factory.mktemp("s6staging")
    mos = MOS(home, embedder=DeterministicFakeEmbedding(size=6))
    keys = KeyStore.open(mos.home)
    mos.create_user("dora")
    mos.create_cube_for_user("d1", owner_id="dora")
    issued = {"dora": keys.create("dora")[0], "dora2": keys.create("dora")[0]}
    bounds = pytest.MonkeyPatch()  # small bounds, read when the app is made
    bounds.setattr(staged_writes, "MAX_BYTES", 3000)
    bounds.setattr(staged_writes, "MAX_USER_BYTES", 4000)
    bounds.setattr(staged_writes, "MAX_TOTAL_BYTES", 6000)
    app = create_app(mos, keys=keys, limits=Limits(rate=0, max_body_bytes=16 * 1024), mcp=False)
    bounds.undo()
    with TestClient(app, raise_server_exceptions=False) as http:
        yield Svc(http, issued)
    keys.close()
    mos.close()


def test_a_write_refused_by_a_staging_bound_does_not_keep_its_parts_held(svc: Svc) -> None:
    assert svc.stage("dora", "too-big-write-1", 0, 2000).status_code == 200
    refused = svc.stage("dora", "too-big-write-1", 1, 2000)  # the key's bound (3000): this write cannot be made
    assert refused.status_code == 413, refused.text
    # the client abandons it and sends a smaller write: its parts fit the bound now that nothing else is staged
    assert svc.stage("dora", "smaller-write-1", 0, 2000).status_code == 200
    last = svc.stage("dora", "smaller-write-1", 1, 500, parts=2)
    assert last.status_code == 200, last.text
    assert len(last.json()["ids"]) == 2


def test_a_write_refused_by_the_users_bound_frees_the_users_other_key(svc: Svc) -> None:
    assert svc.stage("dora", "user-bound-1", 0, 2000).status_code == 200
    assert svc.stage("dora2", "user-bound-2", 0, 1000).status_code == 200
    refused = svc.stage("dora2", "user-bound-2", 1, 1500)  # the user's bound (4000) over both keys
    assert refused.status_code == 413 and "this user's keys" in refused.json()["error"]["message"], refused.text
    # dora's own write is untouched and finishes; dora2's refused write holds nothing any more
    assert svc.stage("dora", "user-bound-1", 1, 10, parts=2).status_code == 200
    assert svc.stage("dora2", "user-bound-3", 0, 1000).status_code == 200
    assert svc.stage("dora2", "user-bound-3", 1, 10, parts=2).status_code == 200


def test_a_stray_part_over_the_bound_keeps_a_written_writes_answer(svc: Svc) -> None:
    last = {"parts": 1}
    first = svc.stage("dora", "written-once-1", 0, 100, **last)
    assert first.status_code == 200, first.text
    assert svc.stage("dora", "hold-the-bound-1", 0, 2000).status_code == 200  # the key is near its bound
    stray = svc.stage("dora", "written-once-1", 1, 2000)  # a part of the written write (a confused client)
    assert stray.status_code == 422 and "written already" in stray.json()["error"]["message"], stray.text
    again = svc.stage("dora", "written-once-1", 0, 100, **last)  # its answer was lost: the retry gets it
    assert again.status_code == 200 and again.json() == first.json(), again.text
    svc.stage("dora", "hold-the-bound-1", 1, 10, parts=2)
