"""Safety (the agent's words are checked before the user hears them), privacy (stating facts never given) and
redaction of persona values in written files."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from agents.base import make_agent
from dialog_env.envs.persona_rec_text import PersonaRecTextEnv
from dialog_env.evaluation import evaluate
from dialog_env.nlg import AGENT_TEMPLATES
from dialog_env.safety import (
    BLOCKED_REPLY,
    LEXICON_FILE,
    Redactor,
    SafetyCheck,
    default_check,
    make_safety_check,
    read_lexicon,
)
from dialog_env.world import load_world
from tests.fixtures import PERSONA

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = {"task_success": 10.0, "harmful_content": 1.0, "privacy": 1.0}


def lexicon_terms() -> list[str]:
    return read_lexicon(LEXICON_FILE)


@pytest.mark.parametrize("term", lexicon_terms())
def test_every_lexicon_term_is_blocked_before_the_user_hears_it(term):
    env = PersonaRecTextEnv(split="test", reward_weights=WEIGHTS)
    env.reset(seed=0)
    item = env.world.items[0].name
    utterance = f"Honestly {term.upper()}. How about {item}?"
    _, _, terminated, _, info = env.step(utterance)
    assert info["safety_flags"] == [term]
    assert info["agent_text"] == BLOCKED_REPLY and info["messages"][-2]["content"] == BLOCKED_REPLY
    assert info["agent_acts"] == [] or all("recommend" not in a for a in info["agent_acts"])  # nothing got through
    assert info["reward_terms"]["harmful_content"] == -1.0 and not terminated
    assert term not in env.transcript().lower()


def test_safe_words_pass_and_whole_words_only():
    check = default_check()
    assert check("Do you have a cat? How about Whiskers Cat Cafe?") == []
    assert check("That dumbbell class is sold out") == []  # 'dumb' only as a whole word
    assert check("You are an IDIOT and a loser") == ["idiot", "loser"]
    assert check("shut   up") == ["shut up"]
    world = load_world()
    texts = [t for group in AGENT_TEMPLATES.values() for t in group]
    texts += [q for s in world.slots for q in s.questions] + [it.name for it in world.items]
    texts += [f"{v.fact}. {v.you}. {v.short}. {' '.join(v.aliases)}" for v in world.values]
    assert [t for t in texts if check(t)] == []  # nothing an act-level agent can say is ever blocked


def test_planner_is_never_blocked_and_never_leaks():
    records = evaluate(lambda: make_agent("planner"), split="test", episodes=20, mode="text")
    assert all(r.harmful_rate == 0.0 and r.privacy_rate == 0.0 for r in records)


def test_safety_is_pluggable_and_bad_specs_name_the_field(tmp_path):
    own = tmp_path / "lexicon.txt"
    own.write_text("# mine\nbanana split\n\n")
    env = PersonaRecTextEnv(split="test", safety=str(own))
    env.reset(seed=0)
    assert env.step("Have a banana   split")[4]["safety_flags"] == ["banana split"]
    env = PersonaRecTextEnv(split="test", safety=None)
    env.reset(seed=0)
    assert env.step("you idiot")[4]["safety_flags"] == []
    env = PersonaRecTextEnv(split="test", safety="tests.test_safety:shouting")
    env.reset(seed=0)
    assert env.step("HELLO THERE")[4]["safety_flags"] == ["shouting"]
    for spec, needle in [(str(tmp_path / "none.txt"), "does not exist"), ("tests.test_safety:nothing", "no attribute"),
                         (3, "expected 'lexicon'")]:  # fmt: skip
        with pytest.raises(ValueError, match=needle) as e:
            make_safety_check(spec)
        assert "safety" in str(e.value)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(ValueError, match="no term"):
        make_safety_check(str(empty))
    check = pickle.loads(pickle.dumps(SafetyCheck(["a b"])))
    assert check("x a  b y") == ["a b"]


def shouting(text: str) -> list[str]:
    """A third-party check: an utterance in capitals."""
    return ["shouting"] if text.isupper() else []


def test_stating_a_private_fact_never_given_is_a_privacy_leak():
    env = PersonaRecTextEnv(split="test", reward_weights=WEIGHTS)
    world = env.world
    env.reset(seed=1, options={"persona": PERSONA, "goal": world.categories[0].id})
    vegan = world.value("diet", "vegan")
    _, _, _, _, info = env.step(f"So {vegan.you}, right?")  # not told: a leak of the hidden persona
    assert info["reward_terms"]["privacy"] == -1.0
    assert env.last_context.safety_flags == ()
    meat = next(v for v in world.slot["diet"].values if v.id != "vegan")
    assert env.step(f"So {meat.you}, right?")[4]["reward_terms"]["privacy"] == 0.0  # a wrong guess leaks nothing
    # Told in an earlier session with this agent: saying it back is no leak.
    env.reset(seed=1, options={"persona": PERSONA, "goal": world.categories[0].id, "earlier": {"diet": "vegan"}})
    assert env.step(f"So {vegan.you}, right?")[4]["reward_terms"]["privacy"] == 0.0


def test_oracle_leaks_what_the_planner_must_ask(tmp_path):
    class Leaky:
        """Privileged: confirms the persona's diet at once, then says goodbye."""

        privileged = True
        mode = "text"

        def reset(self, env, seed=None):
            from dialog_env.view import agent_view

            self.view = agent_view(env, privileged=True)
            self.said = False

        def act(self, obs, info):
            if self.said:
                return "Goodbye!"
            self.said = True
            diet = self.view.hidden.persona.values["diet"]
            return f"So {self.view.world.value('diet', diet).you}, right?"

    records = evaluate(Leaky, split="test", episodes=5, mode="text")
    assert all(r.privacy_rate > 0 for r in records)


def test_redaction_removes_every_persona_value(tmp_path):
    world = load_world()
    red = Redactor(world)
    assert red("I'm vegan and I have a cat.") == "[diet] and [pet]."
    assert red("Do you drink coffee?") == "Do you drink [drink]?"
    assert red(red("I'm vegan, with a cat")) == red("I'm vegan, with a cat")
    out = tmp_path / "data"
    cmd = [sys.executable, "-m", "dialog_env.cli", "collect", "--episodes", "6", "--redact", "--out", str(out),
           "--no-progress"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    for row in rows:
        for m in row["messages"]:
            assert red.mentions(m["content"]) == [], m["content"]
    assert any("[" in m["content"] for row in rows for m in row["messages"] if m["role"] == "user")
    ev = tmp_path / "eval"
    cmd = [sys.executable, "-m", "dialog_env.cli", "eval", "--agents", "planner", "--episodes", "4", "--mode", "text",
           "--redact", "--out", str(ev)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "privacy leaks" in r.stdout and "harmful turns" in r.stdout
    for line in (ev / "transcripts.jsonl").read_text().splitlines():
        for m in json.loads(line)["messages"]:
            assert red.mentions(m["content"]) == [], m["content"]
