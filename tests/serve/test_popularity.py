"""Live popularity without Ray: hand-counted windows, validation, and PreRec's served ranking moving with
the events it receives (exact scores, every replica on the same log)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from raypipe.data.catalogue import FeatureView, ItemCatalogue
from raypipe.data.sequences import ItemIndex
from raypipe.models.prerec import PreRecConfig
from raypipe.models.registry import build_model
from raypipe.serve.artifacts import item_vectors
from raypipe.serve.catalogue import Catalogue
from raypipe.serve.popularity import EventValidationError, LivePopularity, ServedPopularity, validate_events

DAY = 86_400
T0 = 1_600_000_000


def test_window_counts_only_complete_slots_before_now_and_drop_stale_events() -> None:
    now = [35.0]
    live = LivePopularity(5, origin=0, slot_seconds=10, window=2, clock=lambda: now[0], future_tolerance_s=5)
    # now is slot 3: the window is slots 1 and 2; slot 0 is stale; slot 3 counts from slot 4 on
    counted, stale = live.add(np.array([1, 2, 2, 3, 4]), np.array([5, 12, 25, 31, 39]))
    assert (counted, stale) == (4, 1)
    assert live.window_counts().tolist() == [0, 0, 2, 0, 0]
    key = live.key()
    live.add(np.array([1]), np.array([36]))  # the current slot: nothing changes before slot 4
    assert live.key() == key and live.version == 5
    now[0] = 45.0  # slot 4: the window is slots 2 and 3
    assert live.key() != key
    assert live.window_counts().tolist() == [0, 1, 1, 1, 1]
    now[0] = 65.0  # slot 6: slots 4 and 5 hold nothing
    assert live.window_counts().tolist() == [0, 0, 0, 0, 0]
    live.add(np.array([1, 1]), np.array([55, 59]))
    now[0] = 75.0
    assert live.window_counts().tolist() == [0, 2, 0, 0, 0]
    with pytest.raises(ValueError, match="slots after now"):
        live.add(np.array([1]), np.array([200]))
    with pytest.raises(ValueError, match="item indices"):
        live.add(np.array([5]), np.array([70]))


def test_validation_names_every_bad_field_and_accepts_good_batches() -> None:
    position = {"a/0": 1, "b/0": 2}
    domain_of = ["", "a", "b"]
    events = [{"item_id": "a/0", "domain": "a", "timestamp": 100},
              {"item_id": "nope", "domain": "a", "timestamp": 100},
              {"item_id": "b/0", "domain": "a", "timestamp": 100},
              {"item_id": "a/0", "domain": None, "timestamp": 2000}]
    with pytest.raises(EventValidationError) as e:
        validate_events(events, position, domain_of, now=1000, future_tolerance_s=300)
    assert [(p["loc"][2:], p["type"]) for p in e.value.problems] == [
        ([1, "item_id"], "unknown_item"), ([2, "domain"], "domain_mismatch"), ([3, "timestamp"], "future_timestamp")]
    items, ts = validate_events(events[:1] + events[3:], position, domain_of, now=1800)
    assert items.tolist() == [1, 1] and ts.tolist() == [100, 2000]


def _prerec_served(tmp_path, clock: float) -> tuple[ServedPopularity, Catalogue, torch.nn.Module]:
    """PreRec over domains a (items 1..4) and b (5..7), f_pop monotone in the counts; the dataset's
    events are 20 days old (stale at ``clock``); items onboarded through ``tmp_path/onboarded.jsonl``."""
    from raypipe.serve.onboarding import OnboardingLog

    ids = [f"a/{i}" for i in range(4)] + [f"b/{i}" for i in range(3)]
    index = ItemIndex.build(pd.Series(ids), pd.Series([i[0] for i in ids]))
    vec = np.random.default_rng(0).normal(size=(8, 6)).astype(np.float32)
    vec[0] = 0
    cat = ItemCatalogue(index, views={"text": FeatureView(vec, np.r_[False, np.ones(7, bool)])})
    torch.manual_seed(0)
    model = build_model(PreRecConfig(hidden=8, n_layers=1, n_heads=2, dropout=0.0, max_len=4, n_neg=5,
                                     pop_window=15, pop_hidden=4, pop_orders=[1, 2]), cat).eval()
    with torch.no_grad():
        for layer in (model.f_pop[0], model.f_pop[2]):
            layer.weight.copy_(layer.weight.abs())
            layer.bias.zero_()
        model.f_pop[2].weight.mul_(10.0)  # a popularity term strong enough to reorder
    events = (np.array([1, 1, 2, 6]), np.array([T0, T0 + 60, T0 + 90, T0 + 120]))
    all_time = np.bincount(events[0], minlength=8)[1:]  # a/0: 2, a/1: 1, b/1: 1
    served_cat = Catalogue(list(index.item_ids), list(index.domains), item_vectors(model, len(index)), all_time,
                           onboarding_log=OnboardingLog(tmp_path / "onboarded.jsonl"), ef_search=64)
    return ServedPopularity(model, list(index.item_ids), list(index.domains), served_cat, events,
                            str(tmp_path / "events.jsonl"), clock=lambda: clock), served_cat, model


def test_events_move_prerec_ranking_exactly_and_reach_every_replica(tmp_path) -> None:
    now = T0 + 20 * DAY
    pop, cat, model = _prerec_served(tmp_path, now)
    assert pop.stats()["events_in_window"] == 0 and pop.live.stale == 0  # seed: all 20 days old
    u = model.user_repr(torch.tensor([[0, 0, 5, 6]])).detach().numpy()[0]
    before = [i for i, _, _ in cat.search(u, "a", 4)]
    last = before[-1]
    out = pop.add([{"item_id": last, "domain": "a", "timestamp": now - DAY + t} for t in range(40)]
                  + [{"item_id": "a/0", "domain": None, "timestamp": now - 30 * DAY}])
    assert out == {"accepted": 40, "stale": 1, "version": 40}  # the stale seed counts nothing
    hits = cat.search(u, "a", 4)
    assert hits[0][0] == last, (before, hits)  # the least-scored item is now the most popular
    # the served scores are PreRec's own: U·V + Z(counts), Z from 40 events of the item in the window
    counts = np.zeros(8, np.float32)
    counts[1 + list(cat.item_ids).index(last)] = 40
    z = model.live_pop_scores(counts)
    with torch.no_grad():
        v = model.item_vectors(torch.arange(1, 5)).numpy()
    exact = {f"a/{i}": float(v[i] @ u[:-1] + u[-1] * z[1 + i]) for i in range(4)}
    for iid, _, s in hits:
        assert s == pytest.approx(exact[iid], rel=1e-4, abs=1e-4)
    # the fallback: recent interactions first, then all-time ones (a/0: 2, a/1: 1), then index order
    assert [h[0] for h in cat.popular_items("a", 4)] == [last] + [i for i in ["a/0", "a/1", "a/2", "a/3"] if i != last]
    assert cat.popular_items("a", 1)[0][2] == 40.0
    assert cat.get(last)["recent_interactions"] == 40
    # a second replica on the same log counts the same events (and so would a restarted one)
    other, other_cat, _ = _prerec_served(tmp_path, now)
    assert other.stats()["events_in_window"] == 40
    assert [h[0] for h in other_cat.search(u, "a", 4)] == [h[0] for h in hits]
    # a bad batch changes nothing anywhere
    size = (tmp_path / "events.jsonl").stat().st_size
    with pytest.raises(EventValidationError):
        pop.add([{"item_id": "a/1", "domain": "a", "timestamp": now}, {"item_id": "zz", "timestamp": now}])
    assert (tmp_path / "events.jsonl").stat().st_size == size and pop.stats()["version"] == 40


def test_events_count_from_the_next_slot_and_leave_the_window() -> None:
    t = [float(T0 + 3 * DAY)]
    live = LivePopularity(3, origin=T0, slot_seconds=DAY, window=2, clock=lambda: t[0])
    live.add(np.array([1]), np.array([T0 + 3 * DAY + 10]))  # today: not yet
    assert live.window_counts()[1] == 0
    t[0] += DAY
    assert live.window_counts()[1] == 1
    t[0] += 2 * DAY
    assert live.window_counts()[1] == 0


def test_onboarded_items_get_the_popularity_term_of_an_item_without_interactions(tmp_path) -> None:
    from raypipe.serve.onboarding import OnboardingLog

    log = OnboardingLog(tmp_path / "onboarded.jsonl")
    vec = np.array([[1, 0, 0.5], [0, 1, 0.5], [1, 1, 0.5]], np.float32)
    cat = Catalogue(["x", "y", "z"], ["a"] * 3, vec, onboarding_log=log, ef_search=16)
    log.append([{"item_id": "new", "domain": "a", "id_embedding": [1.0, 1.0, 5.0]}])
    cat.sync()
    assert cat.indexes["a"].get_vectors(["new"])[0].tolist() == [1.0, 1.0, 5.0]  # eq. 9's mean, as logged
    # y and z change (x's term already was its last coordinate), and the onboarded item gets the zero term
    assert cat.apply_popularity(np.array([0.5, 0.25, 3.0]), np.array([0, 0, 7]), zero_term=-2.0) == 3
    assert cat.indexes["a"].get_vectors(["new", "x", "y", "z"])[:, -1].tolist() == [-2.0, 0.5, 0.25, 3.0]
    log.append([{"item_id": "new2", "domain": "a", "id_embedding": [0.0, 0.0, 9.0]}])
    assert cat.search(np.array([0, 0, 1], np.float32), "a", 5)[0][:1] == ("z",)
    assert cat.indexes["a"].get_vectors(["new2"])[0].tolist() == [0.0, 0.0, -2.0]
    assert cat.get("new")["recent_interactions"] == 0 and cat.get("z")["recent_interactions"] == 7
    with pytest.raises(ValueError, match="popularity terms"):
        cat.apply_popularity(np.zeros(2), np.zeros(2), 0.0)


def _onboard(tmp_path, model, items: dict[str, str], seed: int) -> None:
    """Content-onboard ``item_id -> domain`` with random text vectors, as the ContentOnboarder logs them."""
    from raypipe.serve.onboarding import OnboardingLog

    x = torch.as_tensor(np.random.default_rng(seed).normal(size=(len(items), 6)).astype(np.float32))
    with torch.no_grad():
        vec = model.content_item_repr({"text": x}, {"text": torch.ones(len(items), dtype=torch.bool)}).numpy()
    OnboardingLog(tmp_path / "onboarded.jsonl").append(
        [{"item_id": i, "domain": d, "method": "content", "vector": v.tolist()} for (i, d), v in zip(items.items(), vec)])


def _z(model, counts: list[float]) -> list[float]:
    """f_pop of each count over one domain's counts, the norms s_1, s_2 worked out here (appendix E)."""
    c = np.asarray(counts, np.float64)
    s = [c.mean(), np.sqrt((c ** 2).mean())]
    f = torch.tensor([[x / s[0], x / s[1]] if s[0] > 0 else [0.0, 0.0] for x in c], dtype=torch.float32)
    with torch.no_grad():
        return model.f_pop(f).squeeze(-1).tolist()


def test_events_for_onboarded_items_move_their_term_and_join_their_domains_norms(tmp_path) -> None:
    now = T0 + 20 * DAY
    pop, cat, model = _prerec_served(tmp_path, now)
    _onboard(tmp_path, model, {"a/NEW": "a"}, seed=1)
    out = pop.add([{"item_id": "a/NEW", "domain": "a", "timestamp": now - DAY + t} for t in range(30)]
                  + [{"item_id": "a/1", "timestamp": now - DAY}])
    assert out["accepted"] == 31 and pop.stats()["onboarded_items_counted"] == 1
    # domain a is now 5 items with window counts [0, 1, 0, 0, 30]: s_1 = 31/5, s_2 = sqrt(901/5)
    z = _z(model, [0, 1, 0, 0, 30])
    got = cat.indexes["a"].get_vectors(["a/0", "a/1", "a/2", "a/3", "a/NEW"])[:, -1]
    np.testing.assert_allclose(got, z, rtol=1e-5, atol=1e-6)
    assert cat.get("a/NEW")["recent_interactions"] == 30 and cat.get("a/NEW")["popularity"] == 0
    assert [h[:2] for h in cat.popular_items("a", 3)] == [("a/NEW", "a"), ("a/1", "a"), ("a/0", "a")]
    u = model.user_repr(torch.tensor([[0, 0, 1, 2]])).detach().numpy()[0]
    assert cat.search(u, "a", 1)[0][0] == "a/NEW"  # f_pop is strong and increasing here
    # domain b's norms do not see domain a's new item
    assert cat.indexes["b"].get_vectors(["b/0"])[0, -1] == pytest.approx(_z(model, [0, 0, 0])[0], abs=1e-6)
    # a replica started later, and one that saw the event before the onboarding record, count the same
    other, other_cat, _ = _prerec_served(tmp_path, now)
    np.testing.assert_allclose(other_cat.indexes["a"].get_vectors(["a/NEW"])[:, -1], z[-1:], rtol=1e-5)
    with pytest.raises(EventValidationError, match="neither trained nor onboarded"):
        pop.add([{"item_id": "a/LATER", "timestamp": now - DAY}])
    _onboard(tmp_path, model, {"a/LATER": "a"}, seed=2)
    other.log.append([{"item_id": "a/LATER", "timestamp": now - DAY}])  # logged by a replica that knew it
    assert pop.refresh() and cat.get("a/LATER")["recent_interactions"] == 1


def test_a_brand_new_domain_is_served_from_its_own_counts(tmp_path) -> None:
    now = T0 + 20 * DAY
    pop, cat, model = _prerec_served(tmp_path, now)
    before_a = cat.indexes["a"].get_vectors(["a/0", "a/1"])[:, -1].copy()
    assert cat.add_domain("zz") and not cat.add_domain("zz")
    assert cat.search(np.ones(9, np.float32), "zz", 5) == [] and cat.popular_items("zz", 5) == []
    _onboard(tmp_path, model, {"zz/0": "zz", "zz/1": "zz", "zz/2": "zz"}, seed=3)
    pop.add([{"item_id": "zz/1", "domain": "zz", "timestamp": now - DAY + t} for t in range(10)]
            + [{"item_id": "zz/2", "domain": "zz", "timestamp": now - DAY}])
    # eq. 5: the new domain's norms from its own counts [0, 10, 1] alone
    np.testing.assert_allclose(cat.indexes["zz"].get_vectors(["zz/0", "zz/1", "zz/2"])[:, -1],
                               _z(model, [0, 10, 1]), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(cat.indexes["a"].get_vectors(["a/0", "a/1"])[:, -1], before_a)
    assert cat.popular_items("zz", 5) == [("zz/1", "zz", 10.0), ("zz/2", "zz", 1.0), ("zz/0", "zz", 0.0)]
    # the fallback over every domain merges trained and onboarded items by recent interactions
    assert [h[0] for h in cat.popular_items(None, 2)] == ["zz/1", "zz/2"]
    # ranking inside the domain: U·f_e(X) + Z(counts), exactly the vectors' inner products
    u = model.user_repr(torch.tensor([[0, 0, 1, 2]])).detach().numpy()[0]
    vec = cat.indexes["zz"].get_vectors(["zz/0", "zz/1", "zz/2"])
    exact = dict(zip(["zz/0", "zz/1", "zz/2"], (vec @ u).tolist()))
    hits = cat.search(u, "zz", 3)
    assert [h[0] for h in hits] == sorted(exact, key=lambda i: -exact[i])
    for iid, d, score in hits:
        assert d == "zz" and score == pytest.approx(exact[iid], rel=1e-4, abs=1e-4)
