"""PersonaRec in act mode: discrete dialogue acts in, a belief vector out."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from dialog_env.envs.core import PersonaRecCore


class PersonaRecEnv(PersonaRecCore):
    r"""Recommend something to a simulated user whose persona is hidden.

    ## Description

    A user with a hidden persona (diet, allergy, pet, hobby, occupation, music, home, family,
    drink, travel; plus verbosity, openness and patience traits) wants a recommendation from a
    catalog of items: *something fun to do*, *a place to eat or drink* or *a gift idea*. Each item
    has constraints over persona values (a steakhouse excludes vegetarians; a cat cafe excludes
    people allergic to cats) and appeals to some values. The user states what it wants, answers
    questions (or declines, by openness), rejects an unfit recommendation with a reason that
    reveals a fact, accepts one of the best fits for its persona, and leaves when its patience
    runs out. A
    rule-based dialogue-state tracker reads the user's words and keeps the agent's belief.

    ## Action Space

    `Discrete(2S + I + 2)` with `S` slots and `I` items (70 in the default world):

    | Num            | Act          | Description                                                  |
    |----------------|--------------|--------------------------------------------------------------|
    | 0 .. S-1       | ask(k)       | ask about slot k                                             |
    | S .. 2S-1      | confirm(k)   | check the tracker's best value of slot k (asks if unknown)   |
    | 2S .. 2S+I-1   | recommend(j) | recommend item j                                             |
    | 2S+I           | chitchat     | small talk                                                   |
    | 2S+I+1         | bye          | end the dialogue                                             |

    `action_masks()` (and `info["action_mask"]`) rule out pointless acts: asking a slot already
    informed or declined, confirming a slot with no belief or already confirmed, recommending a
    rejected item. Masked acts remain legal; an id outside the space raises `ValueError`.

    ## Observation Space

    `Box(0, 1, (D,), float32)` (D = 355 in the default world), in this order: the tracker's belief
    over every slot value; per-slot flags informed / asked / declined / confirmed; per-item flags
    recommended / rejected; the goal category (one-hot, as the tracker heard it); the turn as a
    fraction of `max_turns`; the intents of the user's last turn as understood (multi-hot over
    `dialog_env.acts.USER_INTENTS`; `challenge`: the user asks the agent to restate a fact); per-item
    catalog features from the informed slots' beliefs (expected known violations, expected known
    appeal, in the goal category), like a database pointer. It is built only from what the agent
    heard (see `dialog_env.wrappers.BeliefEncoder`).

    ## Rewards

    `reward = sum_i w_i * term_i` over registered reward terms; `info["reward_terms"]` holds every
    unweighted term. Default weights: `task_success` 20 (1 when the user accepts), `task_failure`
    10 (-1 when the dialogue ends without an accepted recommendation: the user left, said goodbye,
    or the turn limit ran out), `turn_cost` 1 (-1 a turn), `rejection` 5 (-1 when the user rejects
    the recommendation), `persona_consistency` 1 (-2 per reference that contradicts a revealed
    fact; agreeing references earn nothing), `redundancy` 1 (-1 per re-asked slot, re-recommended
    item or restated fact), `discovery` 2 (fraction of belief entropy resolved). No term pays for
    restating or parroting the user. See docs/REWARDS.md.

    ## Starting State

    A persona is drawn from the split (or from `persona_file`, or given as `options["persona"]`),
    a goal category with at least one acceptable item is drawn, and the user opens the dialogue
    with its request. `options["earlier"]` (with `options["persona"]`): facts this user told the
    agent in earlier sessions (slot -> the persona's value); the user treats questions about them as
    repeats, and the agent's references are checked against them too (`PersonaRecSessions-v0` passes
    them between its sessions).

    ## Episode End

    Terminated when the user accepts a recommendation (success), leaves (patience or too many
    rejections), or answers the agent's `bye`. Truncated by the env itself after `max_turns` agent
    turns (`info["outcome"] == "truncated"`, charged by `task_failure`). There is no registered
    `TimeLimit`: a wrapper would end the dialogue without the reward knowing, so set `max_turns`
    instead of `max_episode_steps`.

    ## Arguments

    | Parameter        | Type         | Default   | Description                                              |
    |------------------|--------------|-----------|----------------------------------------------------------|
    | `world`          | str \\| None  | None      | world file (YAML/JSON); None = the shipped world         |
    | `split`          | str          | `"train"` | persona split: train, valid, test, test_unseen, all      |
    | `persona_file`   | str \\| None  | None      | JSONL personas to draw from instead of the split         |
    | `noise`          | float        | 0.0       | semantic error rate of the user channel (PyDial: 0/0.15/0.3) |
    | `tracker`        | str          | `"rule"`  | `rule`/`learned` read the user's text; `oracle` its acts |
    | `user`           | str          | `"agenda"`| user simulator: registered name, `module:attr`, entry point |
    | `reward_weights` | dict \\| list  | None      | spec -> weight, or [{name, weight, kwargs}]; None = above |
    | `max_turns`      | int          | 20        | turn limit (truncation); the observation's progress scale |
    | `render_mode`    | str \\| None  | None      | `"ansi"` returns the transcript with reward terms        |
    | `debug`          | bool         | False     | add `info["debug"]` with the hidden persona (never for training) |
    | `embedder`       | object \\| None | None    | one embedder for a vector env's envs (`EmbeddingService`) |

    ## Information

    | Key              | Description                                                        |
    |------------------|--------------------------------------------------------------------|
    | `reward_terms`   | dict term -> unweighted value for this turn                        |
    | `action_mask`    | bool array over actions (see Action Space)                         |
    | `turn`           | agent turns taken so far                                           |
    | `agent_text`     | the agent's act rendered as text                                   |
    | `user_text`      | the user's reply as the agent heard it                             |
    | `outcome`        | `accepted`, `left`, `bye`, `truncated` or None                     |
    | `is_success`     | the user accepted a recommendation                                 |
    | `debug`          | only with `debug=True`: persona, goal, revealed facts, true acts   |

    ## Version History

    * v0: initial release; the env truncates at `max_turns` itself, `task_failure` charges a failed
      dialogue, and consistent references and restated facts earn nothing.
    """

    mode = "act"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        from dialog_env.wrappers import BeliefEncoder

        self.encoder = BeliefEncoder(self)
        self.observation_space = self.encoder.space
        self.action_space = spaces.Discrete(self.act_table.size)

    # -- gymnasium API ------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Start a dialogue; see the class docstring for ``options`` (``persona``, ``goal``, ``earlier``)."""
        self._start(seed, options)
        info = {"action_mask": self.action_masks(), "turn": 0, "user_text": self._history[0][1]}
        if self.debug:
            info["debug"] = self._debug_info()
        return self._observe(), info

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Take one agent act; see the class docstring."""
        acts = (self.act_from_id(action),)
        self._check_running()  # before rendering: the phrasing stream must not advance
        text = self.agent_nlg.render(acts, self._agent_rng)
        reward, terminated, truncated, info = self._advance(acts, text)
        info["action_mask"] = self.action_masks()
        return self._observe(), reward, terminated, truncated, info

    def _observe(self) -> np.ndarray:
        return self.encoder()
