"""The agenda-based simulated user: answers, declines, verdicts on recommendations, patience."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from dialog_env import acts as A
from dialog_env.acts import DialogueAct as Act
from dialog_env.nlu import Lexicon, UserNLU
from dialog_env.persona import Persona
from dialog_env.users import AgendaUser, AgendaUserConfig, UserSimulator, UserTurn
from dialog_env.world import load_world

LEVELS = ("low", "medium", "high")
CHITCHAT = (Act(A.CHITCHAT),)


@pytest.fixture(scope="module")
def world():
    return load_world()


@pytest.fixture
def user(world):
    return AgendaUser(world)


def make_persona(world, *, verbosity="normal", openness="high", patience="high", **values) -> Persona:
    """A persona with every slot on its first value unless given."""
    vals = {s.name: s.values[0].id for s in world.slots}
    for k, v in values.items():
        assert v in world.slot[k].value_ids, (k, v)
        vals[k] = v
    return Persona(values=vals, traits={"verbosity": verbosity, "openness": openness, "patience": patience})


def start(user, persona, goal, seed=0) -> UserTurn:
    return user.reset(persona, goal, random.Random(seed))


def ask(slot):
    return (Act(A.ASK, slot),)


def recommend(item):
    return (Act(A.RECOMMEND, None, item),)


def informs(turn: UserTurn) -> list[tuple[str, str]]:
    return [(a.slot, a.value) for a in turn.acts if a.intent == A.INFORM]


def intents(turn: UserTurn) -> list[str]:
    return [a.intent for a in turn.acts]


# -- opening and answers ------------------------------------------------------------------------


def test_user_satisfies_the_protocol(user):
    assert isinstance(user, UserSimulator)


def test_opening_requests_the_goal(world, user):
    for cat in world.categories:
        turn = start(user, make_persona(world), cat.id)
        assert turn.acts == (Act(A.REQUEST, None, cat.id),)
        assert turn.outcome is None and turn.text
        assert user.revealed == {}


def test_unknown_goal_raises(world, user):
    with pytest.raises(ValueError, match="goal must be one of"):
        start(user, make_persona(world), "holiday")


def test_answers_questions_truthfully(world, user):
    persona = make_persona(world, diet="vegan", pet="cat", drink="tea")
    start(user, persona, "place")
    for slot in world.slot_names:
        turn = user.respond(ask(slot), "")
        assert informs(turn)[0] == (slot, persona.values[slot])
        assert turn.outcome is None
    assert user.revealed == dict(persona.values)


def test_answers_at_most_max_answers_questions(world, user):
    persona = make_persona(world)
    start(user, persona, "gift")
    turn = user.respond(tuple(Act(A.ASK, s) for s in world.slot_names[:4]), "")
    assert informs(turn) == [(s, persona.values[s]) for s in world.slot_names[: user.config.max_answers]]


def test_confirm_affirms_or_corrects(world, user):
    persona = make_persona(world, diet="vegan")
    start(user, persona, "place")
    turn = user.respond((Act(A.CONFIRM, "diet", "vegan"),), "")
    assert turn.acts == (Act(A.AFFIRM, "diet", "vegan"),)
    assert user.revealed == {"diet": "vegan"}
    turn = user.respond((Act(A.CONFIRM, "pet", "dog"),), "")
    assert turn.acts == (Act(A.NEGATE, "pet", "dog"), Act(A.INFORM, "pet", persona.values["pet"]))
    assert user.revealed["pet"] == persona.values["pet"]


def test_asking_a_revealed_slot_gives_a_repeat(world, user):
    persona = make_persona(world, hobby="hiking")
    start(user, persona, "activity")
    user.respond(ask("hobby"), "")
    turn = user.respond(ask("hobby"), "")
    assert turn.acts == (Act(A.REPEAT, "hobby"), Act(A.INFORM, "hobby", "hiking"))
    assert turn.outcome is None


# -- openness -----------------------------------------------------------------------------------


def _decline_rate(world, openness: str, n_seeds: int = 60) -> float:
    user, declines, asks = AgendaUser(world), 0, 0
    for seed in range(n_seeds):
        persona = make_persona(world, openness=openness, patience="high")
        start(user, persona, "gift", seed)
        for slot in world.slot_names[:8]:
            turn = user.respond(ask(slot), "")
            asks += 1
            if Act(A.DECLINE, slot) in turn.acts:
                declines += 1
                assert not informs(turn)  # a decline reveals nothing
                assert slot not in user.revealed
            else:
                assert informs(turn)[0] == (slot, persona.values[slot])
    return declines / asks


def test_declining_depends_on_openness(world):
    low, medium, high = (_decline_rate(world, level) for level in LEVELS)
    assert high == 0.0
    assert low > 0.25
    assert 0.0 < medium < low
    cfg = AgendaUserConfig()
    assert low == pytest.approx(cfg.decline_prob["low"], abs=0.1)


def test_a_declined_slot_stays_declined(world, user):
    for seed in range(50):
        start(user, make_persona(world, openness="low"), "gift", seed)
        turn = user.respond(ask("diet"), "")
        if Act(A.DECLINE, "diet") in turn.acts:
            again = user.respond(ask("diet"), "")
            assert again.acts == (Act(A.DECLINE, "diet"),)
            assert "diet" not in user.revealed
            return
    pytest.fail("a low-openness user never declined in 50 dialogues")


# -- recommendations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "goal", "item", "slot"),
    [
        ({"allergy": "cats", "pet": "cat"}, "place", "whiskers_cat_cafe", "allergy"),
        ({"diet": "vegan"}, "place", "prime_cut_steakhouse", "diet"),
        ({"pet": "dog", "hobby": "reading"}, "gift", "deluxe_cat_tree", "pet"),  # requires a cat
        ({"drink": "no_alcohol"}, "activity", "hillside_wine_tasting", "drink"),
        ({"home": "small_studio", "drink": "beer"}, "gift", "home_brewing_kit", "home"),
        ({"diet": "gluten_free", "hobby": "cooking"}, "activity", "fresh_pasta_cooking_class", "diet"),
    ],
)
def test_violating_recommendation_reveals_the_violated_fact(world, user, values, goal, item, slot):
    persona = make_persona(world, **values)
    assert world.item[item].violated_slots(persona.values) == [slot]
    start(user, persona, goal)
    turn = user.respond(recommend(item), "")
    assert turn.acts == (Act(A.REJECT, None, item), Act(A.INFORM, slot, persona.values[slot]))
    assert turn.outcome is None
    assert user.revealed == {slot: persona.values[slot]}


def test_rejection_reason_is_always_true_and_violated(world):
    """Over random personas and every unfit item of the goal: the reason is a violated slot's true value."""
    user, rng, checked = AgendaUser(world), np.random.default_rng(0), 0
    for k in range(40):
        values = {s.name: s.values[int(rng.integers(len(s.values)))].id for s in world.slots}
        persona = make_persona(world, **values)
        for cat in world.categories:
            for item in (i for i in world.items if i.category == cat.id and i.violated_slots(values)):
                start(user, persona, cat.id, seed=k)
                turn = user.respond(recommend(item.id), "")
                assert turn.acts[0] == Act(A.REJECT, None, item.id)
                (slot, value), *_ = informs(turn)
                assert slot in item.violated_slots(values)
                assert value == values[slot]
                checked += 1
    assert checked > 100


def _random_personas(world, seed, n):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield make_persona(world, **{s.name: s.values[int(rng.integers(len(s.values)))].id for s in world.slots})


def test_unappealing_fitting_item_is_rejected_with_an_appeal_fact(world):
    """An item that breaks no constraint but appeals to nothing: the reason is a fact it hoped to appeal to."""
    user, checked = AgendaUser(world), 0
    for k, persona in enumerate(_random_personas(world, 2, 40)):
        for item in world.items:
            if item.violated_slots(persona.values) or item.appealing_slots(persona.values):
                continue
            start(user, persona, item.category, seed=k)
            turn = user.respond(recommend(item.id), "")
            assert turn.outcome is None
            assert turn.acts[0] == Act(A.REJECT, None, item.id)
            ((slot, value),) = informs(turn)
            assert slot in item.appeals and value == persona.values[slot]
            assert value not in item.appeals[slot]
            checked += 1
    assert checked > 100


def test_fitting_but_not_best_item_is_rejected_without_a_reason(world):
    """A near miss (fits and appeals, but a better item exists): a vague rejection revealing nothing."""
    user, nlu, checked = AgendaUser(world), UserNLU(Lexicon(world)), 0
    for k, persona in enumerate(_random_personas(world, 3, 60)):
        ok = world.acceptable_mask(world.value_indices(persona.values))
        for item in world.items:
            if ok[item.index] or item.violated_slots(persona.values) or not item.appealing_slots(persona.values):
                continue
            start(user, persona, item.category, seed=k)
            turn = user.respond(recommend(item.id), "")
            assert turn.acts == (Act(A.REJECT, None, item.id),)
            assert turn.outcome is None and user.revealed == {}
            assert nlu.parse(turn.text, (), None, item.id) == (Act(A.REJECT, None, item.id),), turn.text
            checked += 1
    assert checked > 20


def test_acceptable_item_in_goal_category_is_accepted(world):
    user, rng, checked = AgendaUser(world), np.random.default_rng(1), 0
    for k in range(60):
        values = {s.name: s.values[int(rng.integers(len(s.values)))].id for s in world.slots}
        persona = make_persona(world, **values)
        idx = world.value_indices(values)
        for cat in world.categories:
            ok = np.flatnonzero(world.acceptable_mask(idx, cat.id))
            if not len(ok):
                continue
            item = world.items[int(ok[k % len(ok)])]
            assert not item.violated_slots(values) and item.appealing_slots(values)
            start(user, persona, cat.id, seed=k)
            turn = user.respond(recommend(item.id), "")
            assert turn.acts == (Act(A.ACCEPT, None, item.id),)
            assert turn.outcome == "accepted"
            with pytest.raises(RuntimeError, match="over"):
                user.respond(CHITCHAT, "")
            checked += 1
    assert checked > 50


def test_accept_example(world, user):
    persona = make_persona(world, pet="cat", allergy="none")
    start(user, persona, "gift")
    turn = user.respond(recommend("deluxe_cat_tree"), "")
    assert turn.outcome == "accepted"
    assert turn.acts == (Act(A.ACCEPT, None, "deluxe_cat_tree"),)
    assert "Deluxe Cat Tree" in turn.text


def test_item_of_another_category_is_rejected_with_the_request(world, user):
    persona = make_persona(world, pet="cat", allergy="none")
    for goal in ("place", "activity"):
        start(user, persona, goal)
        # The cat tree would fit this persona, but the user wants something else.
        turn = user.respond(recommend("deluxe_cat_tree"), "")
        assert turn.acts == (Act(A.REJECT, None, "deluxe_cat_tree"), Act(A.REQUEST, None, goal))
        assert turn.outcome is None


def test_re_recommending_a_rejected_item_is_rejected_again(world, user):
    persona = make_persona(world, diet="vegan")
    start(user, persona, "place")
    user.respond(recommend("prime_cut_steakhouse"), "")
    turn = user.respond(recommend("prime_cut_steakhouse"), "")
    assert A.ACCEPT not in intents(turn)
    assert any(a.value == "prime_cut_steakhouse" and a.intent in (A.REJECT, A.REPEAT) for a in turn.acts)
    # The tracker's NLU hears a rejection of that item.
    heard = UserNLU(Lexicon(world)).parse(turn.text, (), None, "prime_cut_steakhouse")
    assert Act(A.REJECT, None, "prime_cut_steakhouse") in heard


# -- patience and the end of a dialogue ---------------------------------------------------------


def _turns_until_left(world, patience: str, agent_acts) -> tuple[int, UserTurn]:
    user = AgendaUser(world)
    start(user, make_persona(world, patience=patience), "gift")
    for n in range(1, 100):
        turn = user.respond(agent_acts(n), "")
        if turn.outcome is not None:
            return n, turn
    raise AssertionError("the user never left")


@pytest.mark.parametrize("patience", LEVELS)
def test_repeated_chitchat_makes_the_user_leave(world, patience):
    budget = AgendaUserConfig().patience_budget[patience]
    n, turn = _turns_until_left(world, patience, lambda n: CHITCHAT)
    assert turn.outcome == "left"
    assert turn.acts[-1] == Act(A.BYE, None, "left")
    assert n <= budget
    # Chitchat is a useless turn: it costs two patience points.
    assert n == math.ceil(budget / 2)


def test_patience_levels_are_ordered(world):
    turns = [_turns_until_left(world, p, lambda n: CHITCHAT)[0] for p in LEVELS]
    assert turns[0] < turns[1] < turns[2]


@pytest.mark.parametrize("patience", LEVELS)
def test_useful_turns_cost_one_point(world, patience):
    budget = AgendaUserConfig().patience_budget[patience]
    slots = world.slot_names

    def agent(n):  # new questions first, then questions about revealed slots (repeats)
        return ask(slots[(n - 1) % len(slots)])

    n, turn = _turns_until_left(world, patience, agent)
    assert turn.outcome == "left"
    if budget <= len(slots):
        assert n == budget
    else:
        # After all slots, every repeat costs two.
        assert n == len(slots) + math.ceil((budget - len(slots)) / 2)


@pytest.mark.parametrize("patience", LEVELS)
def test_user_leaves_after_max_rejections(world, patience):
    max_rej = AgendaUserConfig().max_rejections[patience]
    persona = make_persona(world, patience=patience, diet="vegan", pet="none", music="jazz", hobby="reading")
    unfit = [
        i.id
        for i in world.items
        if i.category == "gift" and not world.acceptable_mask(world.value_indices(persona.values))[i.index]
    ]
    assert len(unfit) >= max_rej
    user = AgendaUser(world)
    start(user, persona, "gift")
    for k in range(max_rej):
        turn = user.respond(recommend(unfit[k]), "")
        assert turn.acts[0] == Act(A.REJECT, None, unfit[k])
        if k < max_rej - 1:
            assert turn.outcome is None
    assert turn.outcome == "left"
    assert turn.acts[-1] == Act(A.BYE, None, "left")
    assert user.n_rejections == max_rej


def test_agent_bye_ends_the_dialogue(world, user):
    start(user, make_persona(world), "gift")
    turn = user.respond((Act(A.BYE),), "")
    assert turn.outcome == "bye"
    assert turn.acts[-1].intent == A.BYE


@pytest.mark.parametrize("ending", ["accepted", "left", "bye"])
def test_respond_after_the_end_raises(world, user, ending):
    persona = make_persona(world, pet="cat", allergy="none", patience="low")
    start(user, persona, "gift")
    if ending == "accepted":
        turn = user.respond(recommend("deluxe_cat_tree"), "")
    elif ending == "bye":
        turn = user.respond((Act(A.BYE),), "")
    else:
        turn = user.respond(CHITCHAT, "")
        while turn.outcome is None:
            turn = user.respond(CHITCHAT, "")
    assert turn.outcome == ending
    with pytest.raises(RuntimeError, match="reset"):
        user.respond(ask("diet"), "")
    # reset() starts a fresh dialogue.
    start(user, persona, "gift")
    assert user.respond(ask("diet"), "").outcome is None
    assert user.revealed == {"diet": persona.values["diet"]}


def test_same_seed_same_dialogue(world):
    persona = make_persona(world, openness="medium", verbosity="chatty")
    runs = []
    for _ in range(2):
        user = AgendaUser(world)
        turns = [start(user, persona, "activity", seed=42)]
        turns += [user.respond(ask(s), "") for s in world.slot_names[:6]]
        runs.append([(t.acts, t.text) for t in turns])
    assert runs[0] == runs[1]


def test_chatty_users_volunteer_extra_facts(world):
    extra = {"terse": 0, "chatty": 0}
    for verbosity in extra:
        for seed in range(40):
            user = AgendaUser(world)
            persona = make_persona(world, verbosity=verbosity, openness="high")
            start(user, persona, "gift", seed)
            turn = user.respond(ask("diet"), "")
            facts = informs(turn)
            assert all(persona.values[s] == v for s, v in facts)
            extra[verbosity] += len(facts) - 1
    assert extra["terse"] == 0
    assert extra["chatty"] > 0
