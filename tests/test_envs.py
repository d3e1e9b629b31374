"""The PersonaRec environments: API conformance, determinism, hidden information, bad input, info and rendering."""

from __future__ import annotations

import json
import re

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import dialog_env
from agents import make_agent
from dialog_env.envs import PersonaRecEnv, PersonaRecTextEnv
from dialog_env.persona import PersonaError
from dialog_env.wrappers import DiscreteActsWrapper, RewardTermStats
from rewards import DEFAULT_WEIGHTS

ACT_ID = "dialog_env/PersonaRec-v0"
TEXT_ID = "dialog_env/PersonaRecText-v0"


def make(mode: str, **kwargs):
    """``act``: PersonaRec-v0; ``text``: PersonaRecText-v0; ``text+acts``: the text env behind DiscreteActsWrapper."""
    if mode == "act":
        return gym.make(ACT_ID, **kwargs)
    env = gym.make(TEXT_ID, **kwargs)
    return DiscreteActsWrapper(env) if mode == "text+acts" else env


def to_json(obj) -> str:
    def default(o):
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, np.generic):
            return o.item()
        return str(o)

    return json.dumps(obj, default=default)


def all_keys(obj) -> set[str]:
    """Every dict key at any depth."""
    if isinstance(obj, dict):
        return set(map(str, obj)).union(*(all_keys(v) for v in obj.values()))
    if isinstance(obj, list | tuple):
        return set().union(*(all_keys(v) for v in obj))
    return set()


# -- API conformance -----------------------------------------------------------------------------
def test_registered_ids():
    assert set(dialog_env.ENV_IDS) == {ACT_ID, TEXT_ID}
    for env_id in dialog_env.ENV_IDS:
        # No registered TimeLimit: the env truncates itself, so the last turn is charged as a failure.
        assert gym.spec(env_id).max_episode_steps is None
        env = gym.make(env_id)
        assert env.unwrapped.max_turns == dialog_env.MAX_EPISODE_STEPS


def test_gymnasium_checker_act_env():
    env = gym.make(ACT_ID)
    gym_check_env(env.unwrapped)
    env.close()


def test_gymnasium_checker_raw_text_env():
    env = gym.make(TEXT_ID)
    gym_check_env(env.unwrapped)
    env.close()


def test_gymnasium_checker_text_env_through_discrete_acts_wrapper():
    env = DiscreteActsWrapper(gym.make(TEXT_ID))
    # The checker only warns that it was given a wrapper.
    with pytest.warns(UserWarning, match="different from the unwrapped"):
        gym_check_env(env)


def test_sb3_checker_act_env():
    sb3_check_env(gym.make(ACT_ID), warn=True)


def test_sb3_checker_text_env_through_discrete_acts_wrapper():
    sb3_check_env(DiscreteActsWrapper(gym.make(TEXT_ID)), warn=True)


def test_spaces_match_the_spec():
    act = gym.make(ACT_ID)
    core = act.unwrapped
    w = core.world
    n_slots, n_items = len(w.slots), len(w.items)
    assert act.action_space == gym.spaces.Discrete(2 * n_slots + n_items + 2)
    assert act.observation_space.shape == (core.encoder.dim,)
    assert act.observation_space.dtype == np.float32
    wrapped = DiscreteActsWrapper(gym.make(TEXT_ID))
    assert wrapped.action_space == act.action_space
    assert wrapped.observation_space == act.observation_space
    text = gym.make(TEXT_ID, max_utterance_chars=77, max_transcript_chars=500)
    assert isinstance(text.action_space, gym.spaces.Text) and text.action_space.max_length == 77
    assert isinstance(text.observation_space, gym.spaces.Text) and text.observation_space.max_length == 500


# -- determinism ---------------------------------------------------------------------------------
def _rollout_act(env, actions, seed):
    out = []
    obs, info = env.reset(seed=seed)
    out.append(("reset", obs, info["user_text"], env.render()))
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        out.append((obs, reward, terminated, truncated, info["reward_terms"], info["user_text"], env.render()))
        if terminated or truncated:
            obs, info = env.reset()  # unseeded: continues the seeded stream
            out.append(("reset", obs, info["user_text"], env.render()))
    return out


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert len(x) == len(y)
        for u, v in zip(x, y, strict=True):
            if isinstance(u, np.ndarray):
                np.testing.assert_array_equal(u, v)
            else:
                assert u == v


@pytest.mark.parametrize("noise", [0.0, 0.15])
def test_act_mode_is_deterministic_under_a_seed(noise):
    n = gym.make(ACT_ID).action_space.n
    actions = np.random.default_rng(0).integers(n, size=60).tolist()
    runs = [_rollout_act(gym.make(ACT_ID, noise=noise, render_mode="ansi"), actions, seed=123) for _ in range(2)]
    _assert_same(*runs)
    assert sum(1 for r in runs[0] if isinstance(r[0], str)) >= 2  # several episodes were compared
    # A different seed gives a different dialogue.
    other = _rollout_act(gym.make(ACT_ID, noise=noise, render_mode="ansi"), actions, seed=124)
    assert [r[-1] for r in other] != [r[-1] for r in runs[0]]


FREE_TEXT = [
    "Hello there!",
    "Do you have any pets?",
    "So you're vegetarian, right?",
    "I understand that you're allergic to nuts.",
    "How about a cooking class?",
    "What kind of music do you like?",
    "",
]


@pytest.mark.parametrize("noise", [0.0, 0.15])
def test_text_mode_is_deterministic_under_a_seed(noise):
    envs = [gym.make(TEXT_ID, noise=noise, render_mode="ansi") for _ in range(2)]
    n = envs[0].unwrapped.act_table.size
    rng = np.random.default_rng(1)
    records: list[list] = [[], []]
    for i, env in enumerate(envs):
        obs, info = env.reset(seed=99)
        records[i].append((obs, info["messages"], env.render()))
    for step in range(60):
        if step % 3 == 2:
            utterances = [FREE_TEXT[int(rng.integers(len(FREE_TEXT)))]] * 2
        else:
            a = int(rng.integers(n))
            utterances = [env.unwrapped.act_to_text(a) for env in envs]
            assert utterances[0] == utterances[1]
        for i, env in enumerate(envs):
            obs, reward, terminated, truncated, info = env.step(utterances[i])
            records[i].append(
                (obs, reward, terminated, truncated, info["reward_terms"], info["messages"], env.render())
            )
            if terminated or truncated:
                obs, info = env.reset()
                records[i].append((obs, info["messages"], env.render()))
    _assert_same(*records)


# -- hidden information --------------------------------------------------------------------------
def _leaks(core, obs, info, revealed: set[str]) -> list[str]:
    """Facts of slots the user has not revealed that appear in what the agent sees."""
    seen = (to_json(info) + (obs if isinstance(obs, str) else "")).lower()
    found = []
    for slot in core.world.slots:
        if slot.name in revealed:
            continue
        value = core.world.value(slot.name, core.persona.values[slot.name])
        for form in (value.fact, value.you):
            if form.lower() in seen:
                found.append(f"{slot.name}: {form!r}")
    return found


def _belief_not_uniform(core, obs, revealed: set[str]) -> list[str]:
    bad = []
    for slot in core.world.slots:
        if slot.name in revealed:
            continue
        seg = obs[slot.offset : slot.offset + len(slot.values)]
        if not np.allclose(seg, 1.0 / len(slot.values)):
            bad.append(slot.name)
    return bad


@pytest.mark.parametrize("mode", ["act", "text", "text+acts"])
@pytest.mark.parametrize("noise", [0.0, 0.15, 0.3])
def test_observations_and_info_never_contain_unrevealed_persona_facts(mode, noise):
    env = make(mode, noise=noise, split="all")
    core = env.unwrapped
    assert not core.debug
    steps = 0
    for agent_name in ("random", "rule", "oracle"):
        agent = make_agent(agent_name)
        for seed in range(15):
            obs, info = env.reset(seed=seed)
            agent.reset(env, seed=seed)
            revealed = set(core.judge.revealed)
            while True:
                assert env.observation_space.contains(obs)
                where = f"{mode} noise={noise} {agent_name} seed={seed} turn={core.turn}"
                assert not {"persona", "traits", "goal", "debug"} & all_keys(info), where
                assert _leaks(core, obs, info, revealed) == [], where
                if not isinstance(obs, str):
                    assert _belief_not_uniform(core, obs, revealed) == [], where
                obs, _, terminated, truncated, info = env.step(agent.act(obs, info))
                steps += 1
                before, revealed = revealed, set(core.judge.revealed)
                assert before <= revealed  # facts stay revealed
                if terminated or truncated:
                    assert not {"persona", "traits", "goal", "debug"} & all_keys(info), where
                    assert _leaks(core, obs, info, revealed) == [], where
                    break
    assert steps > 150


def test_the_leak_check_would_catch_a_leak():
    """Guard against a vacuous hidden-information test: the persona *is* visible with debug=True."""
    env = gym.make(TEXT_ID, debug=True)
    obs, info = env.reset(seed=0)
    core = env.unwrapped
    assert info["debug"]["persona"] == core.persona.to_dict()
    assert info["debug"]["goal"] == core.goal
    assert _leaks(core, obs, info, set()) == []  # the persona dict holds ids, not sentences
    fake = {"x": [core.persona.facts(core.world)[0]]}
    assert _leaks(core, obs, fake, set())


@pytest.mark.parametrize("env_id", [ACT_ID, TEXT_ID])
def test_debug_adds_the_persona_to_info(env_id):
    env = gym.make(env_id, debug=True)
    _, info = env.reset(seed=5)
    core = env.unwrapped
    assert info["debug"]["persona"] == core.persona.to_dict()
    _, _, _, _, info = env.step(env.action_space.sample() if env_id == ACT_ID else "Any pets?")
    assert info["debug"]["persona"] == core.persona.to_dict()
    assert info["debug"]["revealed"] == core.judge.revealed
    _, info = gym.make(env_id).reset(seed=5)
    assert "debug" not in info


# -- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize("action", [-1, "n", 3.5, "3", None, True])
@pytest.mark.parametrize("wrapped", [False, True])
def test_invalid_action_ids_raise_value_error(action, wrapped):
    env = gym.make(ACT_ID) if wrapped else PersonaRecEnv()
    env.reset(seed=0)
    n = env.action_space.n
    if action == "n":
        action = n
    with pytest.raises(ValueError, match=re.escape(f"[0, {n})")):
        env.step(action)
    # The env is still usable and numpy integers are fine.
    env.step(np.int64(0))


def test_invalid_action_id_through_discrete_acts_wrapper():
    env = DiscreteActsWrapper(gym.make(TEXT_ID))
    env.reset(seed=0)
    n = env.action_space.n
    with pytest.raises(ValueError, match=re.escape(f"[0, {n})")):
        env.step(n)


@pytest.mark.parametrize("action", [3, None, b"hello", ["hi"], 1.0])
def test_text_mode_non_str_action_raises_type_error(action):
    env = gym.make(TEXT_ID)
    env.reset(seed=0)
    with pytest.raises(TypeError, match="str"):
        env.step(action)


@pytest.mark.parametrize(
    "utterance",
    [
        "",
        "Do you have any pets? " * 5000,  # ~110 KB
        "Café? 你好 😀 — naïve",
        "\x00\x07\x1b[31m",
        "\t\r\n\x0b\x0c\x7f",
        "Line one.\nLine two?",
    ],
    ids=["empty", "100KB", "unicode", "control", "whitespace", "newline"],
)
def test_text_mode_odd_utterances_are_handled(utterance):
    env = gym.make(TEXT_ID)
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(utterance)
    assert env.observation_space.contains(obs)
    assert np.isfinite(reward)
    assert set(info["reward_terms"]) == set(DEFAULT_WEIGHTS)
    agent_text = info["agent_text"]
    assert agent_text.isascii() and "\n" not in agent_text
    assert all(c.isprintable() for c in agent_text)
    assert len(agent_text) <= env.unwrapped.max_utterance_chars
    assert info["utterance_truncated"] is (len(utterance) > 10_000)
    assert info["messages"][-2] == {"role": "assistant", "content": agent_text}
    if not terminated:  # the dialogue goes on
        obs, *_ = env.step("Do you have any allergies?")
        assert env.observation_space.contains(obs)


def test_text_mode_unicode_is_folded_and_empty_is_a_none_act():
    env = gym.make(TEXT_ID)
    env.reset(seed=0)
    *_, info = env.step("Café? 你好 😀 — naïve")
    assert info["agent_text"] == "Cafe? naive"
    *_, info = env.step("")
    assert info["agent_acts"] == ["none()"]
    *_, info = env.step("Do you have any pets? " * 5000)
    assert info["utterance_truncated"] is True
    assert len(info["agent_text"]) == env.unwrapped.max_utterance_chars
    assert "ask(pet)" in info["agent_acts"]


def test_text_transcript_is_capped_and_stays_in_the_space():
    env = gym.make(TEXT_ID, max_utterance_chars=200, max_transcript_chars=300)
    obs, _ = env.reset(seed=0)
    for _ in range(6):
        obs, _, terminated, truncated, info = env.step("Lovely weather lately! " * 50)
        assert len(obs) <= 300
        assert env.observation_space.contains(obs)
        assert info["utterance_truncated"] is True
        if terminated or truncated:
            break
    assert obs.endswith(info["user_text"])


@pytest.mark.parametrize("notes", [False, True])
def test_text_observation_is_the_whole_transcript_across_episodes(notes):
    # The transcript's lines are kept per turn; every observation must still equal the whole
    # dialogue rendered afresh, also after a reset reuses the env.
    env = gym.make(TEXT_ID, state_notes=notes, max_transcript_chars=100_000)
    core = env.unwrapped
    agent = make_agent("rule")
    for seed in (3, 4, 5):
        obs, info = env.reset(seed=seed)
        agent.reset(env, seed=seed)
        done = False
        while True:
            fresh = "\n".join(f"{'User' if m['role'] == 'user' else 'Agent'}: {m['content']}" for m in core.messages())
            assert obs == fresh
            assert obs.startswith("User: ") and obs.count("Agent: ") == core.turn
            if done:
                break
            obs, _, terminated, truncated, info = env.step(agent.act(obs, info))
            done = terminated or truncated


@pytest.mark.parametrize(
    ("kwargs", "field", "allowed"),
    [
        ({"split": "nope"}, "split", "'train', 'valid', 'test', 'test_unseen', 'all'"),
        ({"noise": 1.5}, "noise", "[0, 1)"),
        ({"noise": -0.1}, "noise", "[0, 1)"),
        ({"noise": "0.1"}, "noise", "[0, 1)"),
        ({"tracker": "x"}, "tracker", "'rule', 'learned', 'oracle'"),
        ({"reward_weights": {"nope": 1}}, "reward_weights", "'task_success'"),
        ({"reward_weights": {"task_success": float("nan")}}, "reward_weights", "finite number"),
        ({"reward_weights": {}}, "reward_weights", "at least one"),
        ({"max_turns": 0}, "max_turns", "positive integer"),
        ({"max_turns": 2.5}, "max_turns", "positive integer"),
        ({"render_mode": "human"}, "render_mode", "'ansi'"),
    ],
)
@pytest.mark.parametrize("env_id", [ACT_ID, TEXT_ID])
@pytest.mark.filterwarnings("ignore:.*render_mode='human':UserWarning")
def test_bad_constructor_kwargs_raise_value_error(env_id, kwargs, field, allowed):
    with pytest.raises(ValueError) as err:
        gym.make(env_id, **kwargs)
    msg = str(err.value)
    assert field in msg
    assert allowed in msg


def test_unknown_reward_name_lists_every_builtin():
    with pytest.raises(ValueError, match="reward_weights") as err:
        gym.make(ACT_ID, reward_weights={"nope": 1})
    for name in DEFAULT_WEIGHTS:
        assert name in str(err.value)


@pytest.mark.parametrize("field", ["max_utterance_chars", "max_transcript_chars"])
def test_bad_text_env_kwargs(field):
    with pytest.raises(ValueError, match=f"{field} must be a positive integer"):
        gym.make(TEXT_ID, **{field: 0})


@pytest.mark.parametrize("env_id", [ACT_ID, TEXT_ID])
def test_bad_reset_options(env_id):
    env = gym.make(env_id)
    with pytest.raises(
        ValueError, match=r"unknown reset option\(s\) \['colour'\]; allowed: \['earlier', 'goal', 'persona'\]"
    ):
        env.reset(seed=0, options={"colour": "red"})
    with pytest.raises(ValueError, match="goal.*'activity', 'place', 'gift'"):
        env.reset(seed=0, options={"goal": "holiday"})
    with pytest.raises(PersonaError, match="'values' and 'traits'"):
        env.reset(seed=0, options={"persona": "vegetarian"})
    good = env.unwrapped.sampler.sample(np.random.default_rng(0)).to_dict()
    missing = {"values": {k: v for k, v in good["values"].items() if k != "diet"}, "traits": good["traits"]}
    with pytest.raises(PersonaError, match=r"values\.diet.*missing"):
        env.reset(seed=0, options={"persona": missing})
    wrong = {"values": {**good["values"], "diet": "carnivore"}, "traits": good["traits"]}
    with pytest.raises(PersonaError, match=r"values\.diet.*'carnivore'.*allowed: \[.*'vegan'"):
        env.reset(seed=0, options={"persona": wrong})
    bad_trait = {"values": good["values"], "traits": {**good["traits"], "patience": "infinite"}}
    with pytest.raises(PersonaError, match=r"traits\.patience"):
        env.reset(seed=0, options={"persona": bad_trait})
    assert issubclass(PersonaError, ValueError)
    # A well-formed persona and goal are used as given.
    _, info = env.reset(seed=0, options={"persona": good, "goal": "gift"})
    assert env.unwrapped.persona.to_dict() == good
    assert env.unwrapped.goal == "gift"


@pytest.mark.parametrize("env_id", [ACT_ID, TEXT_ID])
def test_step_after_termination_raises(env_id):
    env = gym.make(env_id)
    env.reset(seed=0)
    bye = env.unwrapped.act_table.bye if env_id == ACT_ID else "Goodbye!"
    *_, terminated, truncated, info = env.step(bye)
    assert terminated and not truncated
    assert info["outcome"] == "bye" and info["is_success"] is False
    with pytest.raises(RuntimeError, match="reset"):
        env.step(bye)
    env.reset(seed=1)  # a reset makes it usable again
    env.step(bye)


@pytest.mark.parametrize("cls", [PersonaRecEnv, PersonaRecTextEnv])
def test_step_before_reset_raises(cls):
    env = cls()
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0 if cls is PersonaRecEnv else "hi")


# -- info, rendering, messages -------------------------------------------------------------------
@pytest.mark.parametrize("env_id", [ACT_ID, TEXT_ID])
def test_render_ansi_shows_the_transcript_with_reward_terms(env_id):
    env = gym.make(env_id, render_mode="ansi")
    env.reset(seed=2)
    core = env.unwrapped
    first = env.render()
    assert first == f"User: {core.messages()[0]['content']}\n"
    for _ in range(3):
        action = core.act_table.ask("diet") if env_id == ACT_ID else "Do you follow any particular diet?"
        *_, info = env.step(action)
    text = env.render()
    lines = text.splitlines()
    assert lines[0].startswith("User: ")
    assert sum(line.startswith("Agent: ") for line in lines) == 3
    assert text.count("    [") == 3
    for name, value in info["reward_terms"].items():
        assert f"{name}={value:+.2f}" in lines[-1]
    # Every transcript line is in the render.
    for line in core.transcript().splitlines():
        assert line in lines
    assert gym.make(env_id).unwrapped.render() is None  # no render_mode


@pytest.mark.parametrize("mode", ["act", "text", "text+acts"])
@pytest.mark.parametrize(
    "weights", [None, {"task_success": 1.0, "redundancy": 0.0}, {"turn_cost": 3.0, "discovery": -1.0}]
)
def test_reward_terms_hold_every_configured_term(mode, weights):
    env = RewardTermStats(make(mode, reward_weights=weights))
    expected = dict(DEFAULT_WEIGHTS if weights is None else weights)
    agent = make_agent("rule")
    for seed in range(3):
        obs, info = env.reset(seed=seed)
        agent.reset(env, seed=seed)
        total = {k: 0.0 for k in expected}
        while True:
            obs, reward, terminated, truncated, info = env.step(agent.act(obs, info))
            terms = info["reward_terms"]
            assert list(terms) == list(expected)
            assert all(isinstance(v, float) and np.isfinite(v) for v in terms.values())
            assert reward == pytest.approx(sum(expected[k] * v for k, v in terms.items()))
            for k, v in terms.items():
                total[k] += v
            if terminated or truncated:
                assert info["episode_reward_terms"] == pytest.approx(total)
                break


def test_info_keys_in_both_modes():
    act = gym.make(ACT_ID)
    _, info = act.reset(seed=0)
    assert {"action_mask", "turn", "user_text"} <= set(info)
    assert info["action_mask"].dtype == bool and info["action_mask"].shape == (act.action_space.n,)
    _, _, _, _, info = act.step(0)
    assert {"reward_terms", "action_mask", "turn", "agent_text", "user_text", "outcome", "is_success"} <= set(info)
    assert info["turn"] == 1
    np.testing.assert_array_equal(info["action_mask"], act.unwrapped.action_masks())
    text = gym.make(TEXT_ID)
    _, info = text.reset(seed=0)
    assert {"turn", "user_text", "messages"} <= set(info)
    _, _, _, _, info = text.step("Do you follow any particular diet?")
    assert {"reward_terms", "messages", "agent_acts", "utterance_truncated", "outcome", "is_success"} <= set(info)
    assert info["agent_acts"] == ["ask(diet)"]


def test_messages_are_chat_format_alternating_user_assistant():
    env = gym.make(TEXT_ID)
    agent = make_agent("rule")
    for seed in range(3):
        obs, info = env.reset(seed=seed)
        agent.reset(env, seed=seed)
        assert info["messages"] == [{"role": "user", "content": info["user_text"]}]
        while True:
            utterance = agent.act(obs, info)
            obs, _, terminated, truncated, info = env.step(utterance)
            msgs = info["messages"]
            assert len(msgs) == 2 * info["turn"] + 1
            assert [m["role"] for m in msgs] == ["user", "assistant"] * info["turn"] + ["user"]
            assert all(set(m) == {"role", "content"} and isinstance(m["content"], str) for m in msgs)
            assert msgs[-2]["content"] == utterance == info["agent_text"]
            assert msgs[-1]["content"] == info["user_text"]
            assert obs == "\n".join(f"{'User' if m['role'] == 'user' else 'Agent'}: {m['content']}" for m in msgs)
            if terminated or truncated:
                break


@pytest.mark.parametrize("agent_name", ["random", "rule", "oracle"])
@pytest.mark.parametrize("noise", [0.0, 0.15])
def test_text_env_scores_like_act_env_when_saying_act_to_text(agent_name, noise):
    act_env = gym.make(ACT_ID, noise=noise)
    text_env = gym.make(TEXT_ID, noise=noise)
    agent = make_agent(agent_name)
    compared = 0
    for seed in range(4):
        act_env.reset(seed=seed)
        text_env.reset(seed=seed)
        agent.reset(act_env, seed=seed)
        while True:
            a = agent.choose()
            utterance = text_env.unwrapped.act_to_text(a)
            _, r_act, term_act, trunc_act, info_act = act_env.step(a)
            _, r_text, term_text, trunc_text, info_text = text_env.step(utterance)
            compared += 1
            assert info_text["agent_text"] == info_act["agent_text"]
            assert info_text["user_text"] == info_act["user_text"]
            assert info_text["reward_terms"] == info_act["reward_terms"]
            assert r_text == r_act
            assert (term_text, trunc_text) == (term_act, trunc_act)
            if term_act or trunc_act:
                assert info_text["outcome"] == info_act["outcome"]
                break
    assert compared >= 4


def test_discrete_acts_wrapper_matches_act_env():
    act_env = gym.make(ACT_ID)
    wrapped = DiscreteActsWrapper(gym.make(TEXT_ID))
    obs_a, _ = act_env.reset(seed=11)
    obs_w, _ = wrapped.reset(seed=11)
    np.testing.assert_array_equal(obs_a, obs_w)
    rng = np.random.default_rng(3)
    for _ in range(30):
        a = int(rng.choice(np.flatnonzero(act_env.unwrapped.action_masks())))
        obs_a, r_a, te_a, tr_a, info_a = act_env.step(a)
        obs_w, r_w, te_w, tr_w, info_w = wrapped.step(a)
        np.testing.assert_array_equal(obs_a, obs_w)
        np.testing.assert_array_equal(info_a["action_mask"], info_w["action_mask"])
        np.testing.assert_array_equal(wrapped.action_masks(), info_w["action_mask"])
        assert (r_a, te_a, tr_a) == (r_w, te_w, tr_w)
        if te_a or tr_a:
            obs_a, _ = act_env.reset()
            obs_w, _ = wrapped.reset()
            np.testing.assert_array_equal(obs_a, obs_w)


def test_dialog_state_replays_exactly():
    """dialog_state() (the TRL adapter's input) replays the same dialogue, also for act_to_text agents."""
    env = gym.make(TEXT_ID, noise=0.15)
    core = env.unwrapped
    agent = make_agent("rule")
    for seed in range(10):
        obs, info = env.reset(seed=seed)
        agent.reset(env, seed=seed)
        for _ in range(4):
            obs, _, terminated, truncated, info = env.step(agent.act(obs, info))
            if terminated or truncated:
                break
        state = json.loads(json.dumps(core.dialog_state()))
        replay = gym.make(TEXT_ID, **state["env_kwargs"]).unwrapped
        replay_obs, _ = replay.reset(seed=state["seed"], options=state["options"] or None)
        for turn in state["agent_turns"]:
            replay_obs, *_ = replay.step(turn)
        assert replay_obs == obs
    env.reset()
    with pytest.raises(RuntimeError, match="seed"):
        core.dialog_state()
