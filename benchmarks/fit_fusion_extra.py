"""More ``--extra`` columns for ``benchmarks/fit_fusion.py`` (issue 14, category 1; sixth session): signals new in
kind, measured held out; only ``late_*`` ships, as the ``late`` preset (docs/organize.md says what each gave).

- ``type_cos`` / ``type_z``: a candidate's cosine to the embedded head phrase of the question
  (:func:`head_phrase`: "activities", "books"), raw and z-scored
  within the question's candidates (0 when the question has no head phrase);
  ``tmpl_z``: the same for the template "examples of <head>".
- ``maxsim_z`` / ``head_maxsim_z``: late interaction (ColBERT's MaxSim) with MiniLM's contextual token
  vectors (last layer, unit length): for each of the question's content tokens (names and stop words
  left out), or only the head phrase's tokens, its best cosine to any token of the candidate's text,
  averaged; z-scored within the question. Token vectors come from ``transformers`` here, offline only.
- ``novel``: the share of a candidate's content words (names left out) that no candidate above it in
  the fused order has; ``novel_z`` z-scored (a set feature for lists: an answer adds new words).
- ``speaker_rank``: 1 / (1 + the number of candidates above it in the fused order said by the same
  speaker), a diversity feature.
- ``maxsim``: raw ``maxsim_z``; ``maxsim_content_z``: the candidate's content-word tokens only (what
  storing ~10 token vectors a turn would hold); ``static_maxsim_z``: MaxSim over MiniLM's input word-piece
  table (no forward pass: what a search could afford without stored token vectors).
- ``late_*`` (:data:`memos_integrations.textual.late.NAMES`): the ``late`` preset's columns, computed by that
  module from the token vectors the cube stored at ingest (cubes built with this release).
- ``event_time`` / ``first_past`` / ``asks`` / ``narrates``: the turn's own words (its photo caption left
  out) name a recent time ("yesterday", "last week"), say "I / we" + a past verb, end in "?", or both of
  the first two (a list answer narrates an event).
- ``prev_cos_z`` / ``next_cos_z``: the stored-vector cosine to the query of the turn before / after in the
  same session (the other speaker's prompt, the reply), z-scored; ``type_prev_z`` the turn before's
  cosine to the head phrase.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from memos_integrations.textual import late as LT
from memos_integrations.textual import retrieve as R
from memos_integrations.textual.late import head_phrase, zscore  # the engine's own (one definition)

NAMES = ("type_cos", "type_z", "tmpl_z", "maxsim_z", "head_maxsim_z", "novel", "novel_z", "speaker_rank",
         "static_maxsim_z", "maxsim", "event_time", "first_past", "asks", "narrates",
         "prev_cos_z", "next_cos_z", "type_prev_z", "maxsim_content_z",
         "qtok_mean_z", "qtok_max_z", "qhead_z", "ntok", "prev_asks", "next_asks", *LT.NAMES)

_TIME = re.compile(r"\b(?:yesterday|last\s+(?:week|weekend|month|year|night|summer|fri|friday|saturday|sunday|monday|"
                   r"tuesday|wednesday|thursday)|ago|recently|just|lately|this\s+(?:week|weekend|morning|past))\b", re.I)
_PAST = re.compile(r"\b(?:i|we)(?:\s+(?:just|finally|also|even|recently|actually))?\s+(?:went|took|did|made|saw|got|had|"
                   r"tried|joined|started|signed|bought|read|painted|visited|ran|found|won|learned|attended|played|"
                   r"gave|met|began|finished|built|baked|cooked|wrote|volunteered|\w+ed)\b", re.I)


class Tokens:
    """MiniLM's contextual token vectors (unit rows, [CLS]/[SEP] dropped), per text, held."""

    def __init__(self, model_dir: Any) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        torch.set_num_threads(1)
        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = AutoModel.from_pretrained(str(model_dir)).eval()
        self._store: dict[str, tuple[np.ndarray, tuple[str, ...]]] = {}
        self._loaded = len(self._store)
        if CACHE.exists():  # token vectors of earlier runs (fp16, no pickle)
            with np.load(CACHE, allow_pickle=False) as z:
                texts, counts, pieces, vecs = z["texts"], z["counts"], z["pieces"], z["vecs"]
            at = 0
            for t, c in zip(texts.tolist(), counts.tolist()):
                self._store[t] = (vecs[at:at + c].astype(np.float32), tuple(pieces[at:at + c].tolist()))
                at += c
            self._loaded = len(self._store)

    def save(self) -> None:
        """Write the held token vectors to :data:`CACHE` when this run added some."""
        if len(self._store) == self._loaded:
            return
        texts = list(self._store)
        counts = [len(self._store[t][1]) for t in texts]
        vecs = np.concatenate([self._store[t][0] for t in texts]).astype(np.float16)
        pieces = np.array([p for t in texts for p in self._store[t][1]])
        np.savez(CACHE, texts=np.array(texts), counts=np.array(counts), pieces=pieces, vecs=vecs)

    def of(self, text: str) -> tuple[np.ndarray, tuple[str, ...]]:
        enc = self.tok(text, return_tensors="pt", truncation=True, max_length=128)
        with self.torch.no_grad():
            h = self.model(**enc).last_hidden_state[0, 1:-1].numpy()
        pieces = tuple(self.tok.convert_ids_to_tokens(enc["input_ids"][0, 1:-1].tolist()))
        return h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12), pieces

    def prepare(self, texts: Sequence[str]) -> None:
        """Fill the cache for many texts in batches (one text at a time is slow)."""
        todo = sorted({t for t in texts if t not in self._store})
        for i in range(0, len(todo), 64):
            chunk = todo[i:i + 64]
            enc = self.tok(chunk, return_tensors="pt", truncation=True, max_length=128, padding=True)
            with self.torch.no_grad():
                h = self.model(**enc).last_hidden_state.numpy()
            for j, t in enumerate(chunk):
                n = int(enc["attention_mask"][j].sum())
                v = h[j, 1:n - 1]
                ids = enc["input_ids"][j, 1:n - 1].tolist()
                self._store[t] = (v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12),
                                  tuple(self.tok.convert_ids_to_tokens(ids)))

    def static(self, text: str) -> tuple[np.ndarray, tuple[str, ...]]:
        """The input word-piece vectors (MiniLM's embedding table, no forward pass), unit rows."""
        ids = self.tok(text, truncation=True, max_length=128)["input_ids"][1:-1]
        table = self.model.embeddings.word_embeddings.weight.detach().numpy()
        v = table[ids]
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12), tuple(self.tok.convert_ids_to_tokens(ids))

    def get(self, t: str) -> tuple[np.ndarray, tuple[str, ...]]:
        if t not in self._store:
            self._store[t] = self.of(t)
        return self._store[t]


_TOKENS: list[Tokens] = []
CACHE = Path("/tmp/fit_fusion_tokens.npz")


def tokens(embedder: Any) -> Tokens:
    if not _TOKENS:
        _TOKENS.append(Tokens(embedder.model_dir))
    return _TOKENS[0]


def _query_rows(pieces: Sequence[str], keep: set[str]) -> list[int]:
    """Token rows whose word (word pieces joined) is in ``keep``."""
    out, word, rows = [], "", []
    for i, p in enumerate([*pieces, ""]):
        if p.startswith("##"):
            word += p[2:]
            rows.append(i)
            continue
        if word and word in keep:
            out.extend(rows)
        word, rows = p, [i]
    return out


def columns(wanted: Sequence[str], question: str, cands: Sequence[int], rows: Any, vecs: np.ndarray,
            embedder: Any, order: Sequence[int], store: Any = None, qvec: Any = None) -> dict[str, np.ndarray]:
    """The columns of :data:`NAMES` in ``wanted`` for one question's candidates."""
    n = len(cands)
    out: dict[str, np.ndarray] = {}
    head = head_phrase(question)
    speakers = {s for it in rows.values() if isinstance(s := it.metadata.get("speaker"), str) and s}
    names = {w for s in speakers for w in R.keyword_terms(s, None)}
    texts = [rows[r].text if r in rows else "" for r in cands]
    if {"type_cos", "type_z", "tmpl_z"} & set(wanted):
        hv = embedder.embed_query(head) if head else np.zeros(vecs.shape[1])
        tv = embedder.embed_query(f"examples of {head}") if head else np.zeros(vecs.shape[1])
        cos = vecs @ (hv / max(float(np.linalg.norm(hv)), 1e-12))
        out["type_cos"] = cos
        out["type_z"] = zscore(cos, bool(head))
        out["tmpl_z"] = zscore(vecs @ (tv / max(float(np.linalg.norm(tv)), 1e-12)), bool(head))
    if {"event_time", "first_past", "asks", "narrates"} & set(wanted):
        own = [t.split("[shares", 1)[0] for t in texts]
        out["event_time"] = np.array([1.0 if _TIME.search(t) else 0.0 for t in own])
        out["first_past"] = np.array([1.0 if _PAST.search(t) else 0.0 for t in own])
        out["asks"] = np.array([1.0 if t.rstrip().endswith("?") else 0.0 for t in own])
        out["narrates"] = out["event_time"] * out["first_past"]
    if {"prev_cos_z", "next_cos_z", "type_prev_z"} & set(wanted):
        q = qvec / max(float(np.linalg.norm(qvec)), 1e-12)
        hv = embedder.embed_query(head) if head else np.zeros(len(q))
        hv = hv / max(float(np.linalg.norm(hv)), 1e-12)
        nb = sorted({r + d for r in cands for d in (-1, 1)})
        rids, mat = store.vectors_for(nb)
        unit = mat / np.maximum(np.linalg.norm(mat, axis=1, keepdims=True), 1e-12) if len(rids) else mat
        at = {r: i for i, r in enumerate(rids)}
        nrows = store.ranking_rows(nb)
        prev, nxt, tprev = np.zeros(n), np.zeros(n), np.zeros(n)
        for i, r in enumerate(cands):
            sid = rows[r].session_id if r in rows else None
            for d, arr in ((-1, prev), (1, nxt)):
                o = r + d
                if sid is not None and o in at and o in nrows and nrows[o].session_id == sid:
                    arr[i] = float(unit[at[o]] @ q)
                    if d == -1:
                        tprev[i] = float(unit[at[o]] @ hv)
        out["prev_cos_z"], out["next_cos_z"], out["type_prev_z"] = zscore(prev), zscore(nxt), zscore(tprev, bool(head))
    if {"qtok_mean_z", "qtok_max_z", "qhead_z"} & set(wanted):
        tk = tokens(embedder)
        tk.prepare([question])
        qv, qp = tk.get(question)
        content = set(R.keyword_terms(question, None)) - names
        qrows = _query_rows(qp, content)
        hrows = _query_rows(qp, set(R.keyword_terms(head, None)) if head else set())
        per = vecs @ qv.T  # each candidate's stored (pooled) vector against each query token
        mean_q = qv[qrows].mean(axis=0) if qrows else np.zeros(qv.shape[1])
        head_q = qv[hrows].mean(axis=0) if hrows else np.zeros(qv.shape[1])
        out["qtok_mean_z"] = zscore(vecs @ (mean_q / max(float(np.linalg.norm(mean_q)), 1e-12)), bool(qrows))
        out["qtok_max_z"] = zscore(per[:, qrows].max(axis=1) if qrows else np.zeros(n), bool(qrows))
        out["qhead_z"] = zscore(vecs @ (head_q / max(float(np.linalg.norm(head_q)), 1e-12)), bool(hrows))
    if {"prev_asks", "next_asks"} & set(wanted):
        nrows = store.ranking_rows(sorted({r + d for r in cands for d in (-1, 1)}))
        for name, d in (("prev_asks", -1), ("next_asks", 1)):
            col = np.zeros(n)
            for i, r in enumerate(cands):
                o, it = nrows.get(r + d), rows.get(r)
                if o is not None and it is not None and o.session_id == it.session_id and it.session_id is not None:
                    col[i] = 1.0 if "?" in o.text.split("[shares", 1)[0] else 0.0
            out[name] = col
    if "static_maxsim_z" in wanted:
        tk = tokens(embedder)
        content = set(R.keyword_terms(question, None)) - names
        qv, qp = tk.static(question)
        qrows = _query_rows(qp, content)
        st = np.zeros(n)
        for i, t in enumerate(texts):
            if t and qrows:
                cv, _ = tk.static(t)
                st[i] = float((qv[qrows] @ cv.T).max(axis=1).mean()) if len(cv) else 0.0
        out["static_maxsim_z"] = zscore(st, bool(qrows))
    if {"maxsim_z", "head_maxsim_z", "maxsim", "maxsim_content_z", "ntok"} & set(wanted):
        tk = tokens(embedder)
        tk.prepare([question, *texts])
        qv, qp = tk.get(question)
        content = set(R.keyword_terms(question, None)) - names
        hwords = set(R.keyword_terms(head, None)) if head else set()
        qrows = _query_rows(qp, content)
        hrows = _query_rows(qp, hwords)
        full, hs, cont, ntok = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
        for i, t in enumerate(texts):
            if not t:
                continue
            cv, cp = tk.get(t)
            ntok[i] = np.log1p(len(cp)) / 5.0
            keep = _query_rows(cp, set(R.keyword_terms(t, None)) - names)
            if keep and qrows:  # the candidate's content words only (what storing ~10 vectors a turn would hold)
                cont[i] = float((qv[qrows] @ cv[keep].T).max(axis=1).mean())
            sim = qv @ cv.T
            best = sim.max(axis=1)
            full[i] = float(best[qrows].mean()) if qrows else 0.0
            hs[i] = float(best[hrows].mean()) if hrows else 0.0
        out["maxsim_z"] = zscore(full, bool(qrows))
        out["maxsim"] = full
        out["ntok"] = ntok
        out["maxsim_content_z"] = zscore(cont, bool(qrows))
        out["head_maxsim_z"] = zscore(hs, bool(hrows))
    if {"novel", "novel_z", "speaker_rank"} & set(wanted):
        rank = {r: i for i, r in enumerate(order)}
        by_fused = sorted(range(n), key=lambda i: rank.get(cands[i], len(order) + i))
        seen: set[str] = set()
        said: dict[Any, int] = {}
        nov, spk = np.zeros(n), np.zeros(n)
        for i in by_fused:
            words = set(R.keyword_terms(texts[i], None)) - names
            nov[i] = len(words - seen) / max(len(words), 1) if words else 0.0
            seen |= words
            who = rows[cands[i]].metadata.get("speaker") if cands[i] in rows else None
            spk[i] = 1.0 / (1 + said.get(who, 0))
            said[who] = said.get(who, 0) + 1
        out["novel"], out["novel_z"], out["speaker_rank"] = nov, zscore(nov), spk
    if set(LT.NAMES) & set(wanted):  # what the late preset computes, from the cube's stored token vectors
        items = {r: rows[r] for r in cands if r in rows}
        cols = LT.candidate_columns(store, embedder, question, cands, items)
        if cols is None:
            cols = np.zeros((n, len(LT.NAMES)))
        out.update({name: cols[:, i] for i, name in enumerate(LT.NAMES)})
    return {k: v for k, v in out.items() if k in wanted}
