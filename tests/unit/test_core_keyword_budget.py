"""The keyword leg's work bound: beyond ``keyword_budget`` documents only the rarest terms are ranked."""

from memos_integrations.textual import retrieve as R


def test_budget_keeps_the_rare_term_and_its_document(cube):
    cube.add(memory=[f"Meeting notes {i}: the team met in the office." for i in range(12)], user_id="u")
    target = cube.add(memory="The office plant is a monstera named Gerald.", user_id="u")[0]
    plan = R.SearchPlan(name="kw", dense=False, time_aware=False, keyword_budget=3)
    counts = cube.store.term_counts(R.keyword_terms("office monstera"))
    assert counts == {"office": 13, "monstera": 1}
    assert R.prune_terms(counts, 3) == ["monstera"]          # 'office' would add 13 matches to rank
    hits = cube.search("office monstera", user_id="u", plan=plan)
    assert [h.item.id for h in hits] == [target.id]
    unbounded = cube.search("office monstera", user_id="u", plan=plan.model_copy(update={"keyword_budget": 10_000}))
    assert unbounded[0].item.id == target.id and len(unbounded) == 10
