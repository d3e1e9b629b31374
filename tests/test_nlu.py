"""Rule NLU: agent-side parsing of free paraphrases and the user NLG -> NLU round trip."""

from __future__ import annotations

import random

import pytest

from dialog_env import acts as A
from dialog_env.acts import DialogueAct as Act
from dialog_env.nlg import AGENT_TEMPLATES, USER_TEMPLATES, AgentNLG, UserNLG
from dialog_env.nlu import AgentNLU, Lexicon, UserNLU, normalize, tokens
from dialog_env.world import load_world

VERBOSITY = ("terse", "normal", "chatty")
SEEDS = range(8)


@pytest.fixture(scope="module")
def world():
    return load_world()


@pytest.fixture(scope="module")
def lexicon(world):
    return Lexicon(world)


@pytest.fixture(scope="module")
def agent_nlu(lexicon):
    return AgentNLU(lexicon)


@pytest.fixture(scope="module")
def user_nlu(lexicon):
    return UserNLU(lexicon)


@pytest.fixture(scope="module")
def user_nlg(world):
    return UserNLG(world)


def ask(slot):
    return Act(A.ASK, slot)


def confirm(slot, value):
    return Act(A.CONFIRM, slot, value)


def inform(slot, value):
    return Act(A.INFORM, slot, value)


def rec(item):
    return Act(A.RECOMMEND, None, item)


BYE, CHITCHAT, NONE = Act(A.BYE), Act(A.CHITCHAT), Act(A.NONE)

# Hand-written agent utterances, none of them an NLG template or a world question.
AGENT_PARAPHRASES = [
    # ask
    ("Got any pets?", (ask("pet"),)),
    ("Any food you can't eat?", (ask("diet"),)),
    ("Are there any allergies I should know about?", (ask("allergy"),)),
    ("What are your hobbies these days?", (ask("hobby"),)),
    ("How do you spend your spare time?", (ask("hobby"),)),
    ("What line of work are you in?", (ask("occupation"),)),
    ("What's your career?", (ask("occupation"),)),
    ("Mind telling me what you do for a living", (ask("occupation"),)),
    ("What sort of music are you into?", (ask("music"),)),
    ("I wonder what bands you listen to", (ask("music"),)),
    ("Tell me about your family.", (ask("family"),)),
    ("Do you have kids?", (ask("family"),)),
    ("Do you live with anyone?", (ask("family"),)),
    ("What's your favourite drink?", (ask("drink"),)),
    ("Which beverages do you enjoy?", (ask("drink"),)),
    ("Are you thirsty for anything in particular?", (ask("drink"),)),
    ("Where did you go on your last vacation?", (ask("travel"),)),
    ("What's your neighbourhood like?", (ask("home"),)),
    ("Curious: any dietary needs?", (ask("diet"),)),
    # confirm (a value in a question)
    ("You're vegan, correct?", (confirm("diet", "vegan"),)),
    ("You have a cat, don't you?", (confirm("pet", "cat"),)),
    ("Is it true that you're allergic to nuts?", (confirm("allergy", "nuts"),)),
    ("Did you say you love hiking?", (confirm("hobby", "hiking"),)),
    ("You work as a nurse, yes?", (confirm("occupation", "nurse"),)),
    ("YOU'RE ALLERGIC TO CATS, RIGHT?", (confirm("allergy", "cats"),)),
    ("You\u2019re into hip hop, aren\u2019t you?", (confirm("music", "hip_hop"),)),
    # inform (a reference to a persona fact, in a statement)
    ("Given that you're vegetarian, I'll bear that in mind.", (inform("diet", "vegetarian"),)),
    ("Good to know you love jazz.", (inform("music", "jazz"),)),
    ("Great, you live in the countryside.", (inform("home", "countryside"),)),
    ("As a software engineer, you probably like gadgets.", (inform("occupation", "software_engineer"),)),
    ("With a dog around, outdoor stuff makes sense.", (inform("pet", "dog"),)),
    # recommend, by full name or alias; the item beats the values inside its name
    ("Have you tried the Blue Note Jazz Night?", (rec("blue_note_jazz_night"),)),
    ("Maybe check out the pottery class.", (rec("clayworks_pottery_class"),)),
    ("I think you'd like Whiskers.", (rec("whiskers_cat_cafe"),)),
    ("What about a wine club membership?", (rec("wine_of_the_month_club"),)),
    ("The escape room downtown is fun.", (rec("lockbox_escape_room"),)),
    ("I recommend the Harbor Oyster Bar.", (rec("harbour_oyster_bar"),)),
    ("How about a pair of hiking boots?", (rec("trailblazer_hiking_boots"),)),
    # bye
    ("Alright, take care!", (BYE,)),
    ("See you later!", (BYE,)),
    ("Farewell, and good luck.", (BYE,)),
    # chitchat
    ("Nice to meet you.", (CHITCHAT,)),
    ("The weather has been lovely.", (CHITCHAT,)),
    ("How's your week been?", (CHITCHAT,)),
    ("Haha, that's funny.", (CHITCHAT,)),
    # keywords inside an alias belong to the alias: "home" in "home cook" / "staying home" /
    # "home brewing kit" is no question about the home, "eat" in "a place to eat" none about diet
    ("Are you a home cook?", (confirm("hobby", "cooking"),)),
    ("You'd rather stay home on holiday, right?", (confirm("travel", "staycation"),)),
    ("Would the Home Brewing Kit suit you?", (rec("home_brewing_kit"),)),
    ("Are you after a place to eat?", (CHITCHAT,)),
    # empty
    ("", (NONE,)),
    ("   \n ", (NONE,)),
    # mixed: several acts, in order
    ("You're vegan. How about Green Leaf?", (inform("diet", "vegan"), rec("green_leaf_vegan_kitchen"))),
    ("Do you have any allergies? Also, what music do you like?", (ask("allergy"), ask("music"))),
    ("What do you do for work, and do you have any pets?", (ask("occupation"), ask("pet"))),
    ("Thanks for your time, I'd suggest the Daily Grind. Goodbye!", (rec("daily_grind_coffee"), BYE)),
    ("So you have a cat? What kind of job do you do?", (confirm("pet", "cat"), ask("occupation"))),
    ("How about stargazing? Bye for now.", (rec("dark_sky_stargazing"), BYE)),
    ("Caf\u00e9 time? You're a coffee lover, I hear.", (inform("drink", "coffee"),)),
]


def test_paraphrase_list_is_not_the_templates(world):
    assert len(AGENT_PARAPHRASES) >= 30
    rendered = {q for s in world.slots for q in s.questions}
    for intent, templates in AGENT_TEMPLATES.items():
        for t in templates:
            if intent in (A.CONFIRM, A.INFORM):
                rendered |= {t.format(you=v.you) for v in world.values}
            elif intent == A.RECOMMEND:
                rendered |= {t.format(name=i.name) for i in world.items}
            else:
                rendered.add(t)
    rendered = {normalize(r) for r in rendered}
    for text, _ in AGENT_PARAPHRASES:
        assert normalize(text) not in rendered, text


@pytest.mark.parametrize(("text", "expected"), AGENT_PARAPHRASES, ids=[t or "<empty>" for t, _ in AGENT_PARAPHRASES])
def test_agent_nlu_paraphrases(agent_nlu, text, expected):
    assert agent_nlu.parse(text) == expected


def test_agent_nlu_reads_every_world_question_as_its_slot(world, agent_nlu):
    for slot in world.slots:
        for q in slot.questions:
            assert agent_nlu.parse(q) == (ask(slot.name),), q


def test_agent_nlu_reads_agent_nlg(world, agent_nlu):
    """Everything the agent NLG can say (act mode's transcript) parses back to its act."""
    nlg = AgentNLG(world)
    for seed in SEEDS:
        rng = random.Random(seed)
        for v in world.values:
            for intent in (A.CONFIRM, A.INFORM):
                act = Act(intent, v.slot, v.id)
                assert agent_nlu.parse(nlg.render([act], rng)) == (act,)
        for item in world.items:
            text = nlg.render([rec(item.id)], rng)
            assert agent_nlu.parse(text) == (rec(item.id),), text
        assert agent_nlu.parse(nlg.render([Act(A.CHITCHAT)], rng)) == (CHITCHAT,)
        assert agent_nlu.parse(nlg.render([BYE], rng)) == (BYE,)


def test_agent_nlu_is_memoised(agent_nlu):
    text = "Do you have any allergies or pets?"
    assert agent_nlu.parse(text) is agent_nlu.parse(text)
    assert agent_nlu.parse(text) == (ask("allergy"), ask("pet"))


def test_normalize_and_tokens():
    assert normalize("Caf\u00e9 \u201cNo\u00ebl\u201d \u2014 It\u2019s") == 'cafe "noel" - it\'s'
    assert tokens("don't eat gluten-free, ok?") == ["don't", "eat", "gluten-free", "ok"]


# -- user side ----------------------------------------------------------------------------------

# Informative user intents: what the tracker must recover (chitchat/repeat are not).
# CHALLENGE included: no round trip of the agenda user's words may read as a challenge.
INFORMATIVE = {A.REQUEST, A.INFORM, A.DECLINE, A.AFFIRM, A.NEGATE, A.REJECT, A.ACCEPT, A.BYE, A.CHALLENGE}


def informative(parsed):
    return {Act(A.BYE) if a.intent == A.BYE else a for a in parsed if a.intent in INFORMATIVE}


def round_trip(nlu, nlg, acts, verbosity, rng, asked=(), confirming=None, recommended=None):
    text = nlg.render(acts, verbosity, rng)
    assert text
    return text, informative(nlu.parse(text, tuple(asked), confirming, recommended))


def test_round_trip_request(world, user_nlu, user_nlg):
    for seed in SEEDS:
        rng = random.Random(seed)
        for verbosity in VERBOSITY:
            for cat in world.categories:
                act = Act(A.REQUEST, None, cat.id)
                text, got = round_trip(user_nlu, user_nlg, [act], verbosity, rng)
                assert got == {act}, text
                # The chitchat deflection restates the goal too.
                text, got = round_trip(user_nlu, user_nlg, [Act(A.CHITCHAT, None, cat.id)], verbosity, rng)
                assert got == {act}, text


def test_round_trip_inform_every_value_every_verbosity(world, user_nlu, user_nlg):
    for seed in SEEDS:
        rng = random.Random(seed)
        for verbosity in VERBOSITY:
            for v in world.values:
                act = inform(v.slot, v.id)
                text, got = round_trip(user_nlu, user_nlg, [act], verbosity, rng, asked=[v.slot])
                assert got == {act}, (verbosity, text)


def test_round_trip_inform_with_volunteered_fact(world, user_nlu, user_nlg):
    rng = random.Random(0)
    values = list(world.values)
    for seed in SEEDS:
        r = random.Random(seed)
        for v in values:
            other = r.choice([w for w in values if w.slot != v.slot])
            acts = [inform(v.slot, v.id), inform(other.slot, other.id)]
            text, got = round_trip(user_nlu, user_nlg, acts, "chatty", rng, asked=[v.slot])
            assert got == set(acts), text


def test_round_trip_decline(world, user_nlu, user_nlg):
    for seed in SEEDS:
        rng = random.Random(seed)
        for verbosity in VERBOSITY:
            for slot in world.slots:
                act = Act(A.DECLINE, slot.name)
                text, got = round_trip(user_nlu, user_nlg, [act], verbosity, rng, asked=[slot.name])
                assert got == {act}, text


def test_slotless_decline_answers_the_unanswered_question(world, user_nlu, user_nlg):
    # Two questions in one turn: "I love city breaks. I'd rather not say." declines the second.
    for seed in SEEDS:
        rng = random.Random(seed)
        for a, b in zip(world.slots, world.slots[1:], strict=False):
            v = a.values[seed % len(a.values)]
            for acts in (
                [inform(a.name, v.id), Act(A.DECLINE, b.name)],
                [Act(A.DECLINE, a.name), inform(a.name, v.id)],
            ):
                text, got = round_trip(user_nlu, user_nlg, acts, VERBOSITY[seed % 3], rng, asked=[a.name, b.name])
                if acts[0].intent == A.DECLINE:  # a refusal, then a fact of the same slot: odd but parseable
                    continue
                assert got == set(acts), text


def test_round_trip_decline_names_its_slot_without_context(world, user_nlu, user_nlg):
    # "I'd prefer not to talk about my {noun}." carries the slot even when context says otherwise.
    other = {s.name: world.slots[(s.index + 1) % len(world.slots)].name for s in world.slots}
    for slot in world.slots:
        text = USER_TEMPLATES["decline"][1].format(noun=slot.noun)
        assert informative(user_nlu.parse(text, (other[slot.name],))) == {Act(A.DECLINE, slot.name)}, text


def test_round_trip_reject_with_reason(world, user_nlu, user_nlg):
    for seed in SEEDS:
        rng = random.Random(seed)
        for item in world.items:
            for v in world.values[seed :: len(SEEDS)]:
                acts = [Act(A.REJECT, None, item.id), inform(v.slot, v.id)]
                text, got = round_trip(user_nlu, user_nlg, acts, VERBOSITY[seed % 3], rng, recommended=item.id)
                assert got == set(acts), text


def test_round_trip_reject_wrong_category(world, user_nlu, user_nlg):
    for seed in SEEDS:
        rng = random.Random(seed)
        for item in world.items:
            for cat in world.categories:
                acts = [Act(A.REJECT, None, item.id), Act(A.REQUEST, None, cat.id)]
                text, got = round_trip(user_nlu, user_nlg, acts, VERBOSITY[seed % 3], rng, recommended=item.id)
                assert got == set(acts), text


def test_round_trip_reject_again(world, user_nlu, user_nlg):
    for seed in SEEDS:
        rng = random.Random(seed)
        for item in world.items:
            act = Act(A.REJECT, None, item.id)
            text, got = round_trip(user_nlu, user_nlg, [act], "normal", rng, recommended=item.id)
            assert got == {act}, text


def test_round_trip_accept(world, user_nlu, user_nlg):
    for seed in SEEDS:
        rng = random.Random(seed)
        for verbosity in VERBOSITY:
            for item in world.items:
                act = Act(A.ACCEPT, None, item.id)
                text, got = round_trip(user_nlu, user_nlg, [act], verbosity, rng, recommended=item.id)
                assert got == {act}, text


def test_round_trip_affirm(world, user_nlu, user_nlg):
    for seed in SEEDS:
        rng = random.Random(seed)
        for v in world.values:
            act = Act(A.AFFIRM, v.slot, v.id)
            text, got = round_trip(user_nlu, user_nlg, [act], VERBOSITY[seed % 3], rng, confirming=(v.slot, v.id))
            assert got == {act}, text


def test_round_trip_negate_and_correct(world, user_nlu, user_nlg):
    for seed in SEEDS:
        rng = random.Random(seed)
        for slot in world.slots:
            for true in slot.values:
                for wrong in slot.values:
                    if wrong.id == true.id:
                        continue
                    acts = [Act(A.NEGATE, slot.name, wrong.id), inform(slot.name, true.id)]
                    text, got = round_trip(
                        user_nlu, user_nlg, acts, VERBOSITY[seed % 3], rng, confirming=(slot.name, wrong.id)
                    )
                    assert got == set(acts), text


def test_round_trip_repeat(world, user_nlu, user_nlg):
    for seed in SEEDS:
        rng = random.Random(seed)
        for v in world.values:
            acts = [Act(A.REPEAT, v.slot), inform(v.slot, v.id)]
            text, got = round_trip(user_nlu, user_nlg, acts, VERBOSITY[seed % 3], rng, asked=[v.slot])
            assert got == {inform(v.slot, v.id)}, text


@pytest.mark.parametrize("value", [None, "left", "accepted"])
def test_round_trip_bye(world, user_nlu, user_nlg, value):
    for seed in SEEDS:
        rng = random.Random(seed)
        text, got = round_trip(user_nlu, user_nlg, [Act(A.BYE, None, value)], "normal", rng)
        assert Act(A.BYE) in got, text
        assert not {a for a in got if a.intent in (A.INFORM, A.ACCEPT, A.REQUEST)}, text


def test_user_nlu_short_answers_need_context(user_nlu):
    assert informative(user_nlu.parse("Exactly.", (), ("diet", "vegan"))) == {Act(A.AFFIRM, "diet", "vegan")}
    assert informative(user_nlu.parse("Exactly.")) == set()
    assert informative(user_nlu.parse("I'd rather not say.", ("pet",))) == {Act(A.DECLINE, "pet")}
    rejected = Act(A.REJECT, None, "weeknight_cookbook")
    assert informative(user_nlu.parse("No, sorry.", (), None, "weeknight_cookbook")) == {rejected}
    assert user_nlu.parse("Hmm.") == (CHITCHAT,)


def test_user_nlu_reads_a_challenge_as_its_slot(world, user_nlu):
    from dialog_env.users.adversarial import CHALLENGE_TEMPLATES

    for slot in world.slot.values():
        for template in CHALLENGE_TEMPLATES:
            text = template.format(noun=slot.noun)
            assert user_nlu.parse(text) == (Act(A.CHALLENGE, slot.name),), text
    # A reminder that states the fact is an inform, and a question about nothing known is small talk.
    assert informative(user_nlu.parse("I already told you, I'm vegan.")) == {inform("diet", "vegan")}
    assert user_nlu.parse("What did you say?") == (CHITCHAT,)


def test_user_nlu_hand_written(user_nlu):
    got = informative(user_nlu.parse("Honestly I'm a teetotal vegan with a nut allergy."))
    assert got == {inform("drink", "no_alcohol"), inform("diet", "vegan"), inform("allergy", "nuts")}
    got = informative(user_nlu.parse("The steakhouse is a no-go, I'm vegetarian.", (), None, "prime_cut_steakhouse"))
    assert got == {Act(A.REJECT, None, "prime_cut_steakhouse"), inform("diet", "vegetarian")}
    got = informative(user_nlu.parse("Ooh, the cat cafe sounds great, thanks!"))
    assert got == {Act(A.ACCEPT, None, "whiskers_cat_cafe")}


def test_aliases_unique_in_lexicon(world):
    """The shipped file keeps every alias unique (the round trip relies on it)."""
    seen: dict[tuple[str, ...], str] = {}
    owners = [(f"{v.slot}={v.id}", v.aliases) for v in world.values]
    owners += [(f"item:{i.id}", i.aliases) for i in world.items]
    owners += [(f"category:{c.id}", c.aliases) for c in world.categories]
    for owner, aliases in owners:
        for a in aliases:
            key = tuple(tokens(a))
            assert seen.setdefault(key, owner) == owner, f"{a!r}: {seen[key]} and {owner}"
