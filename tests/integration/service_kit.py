"""What the service's adversary tests share: a FastAPI TestClient over a MOS home, one API key per name."""

from __future__ import annotations

from typing import Any, NamedTuple

from fastapi.testclient import TestClient

from memos_integrations import MOS
from memos_integrations.remote import RemoteCube

DIM = 6  # the fake embedder's size in these tests
LC = "/v1/vector-stores/langchain/add"
LI = "/v1/vector-stores/llama-index/add"


class Svc(NamedTuple):
    """The app under test: its MOS, an HTTP client, the keys by name, and the cube a remote face opens."""

    mos: MOS
    http: TestClient
    keys: dict[str, str]
    cube: str = "a1"

    def post(self, who: str, route: str, body: dict[str, Any]) -> Any:
        return self.http.post(route, json=body, headers={"Authorization": f"Bearer {self.keys[who]}"})

    def remote(self, who: str, cube_id: str | None = None) -> RemoteCube:
        return RemoteCube("http://testserver", self.keys[who], cube_id=cube_id or self.cube, client=self.http)
