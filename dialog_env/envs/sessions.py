"""Returning users: one episode is several sessions (dialogues) with the same user.

``dialog_env/PersonaRecSessions-v0`` (acts) and ``dialog_env/PersonaRecSessionsText-v0`` (text).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from dialog_env.envs.persona_rec import PersonaRecEnv
from dialog_env.envs.persona_rec_text import PersonaRecTextEnv
from dialog_env.spaces import TranscriptSpace

SESSION_HEADER = "=== Session {k} ==="
"""The line that opens each session in the text observation (``k`` counts from 1)."""


class PersonaRecSessionsEnv(gym.Env):
    """Several sessions with one returning user, each with a new goal; the agent's memory is its own.

    ## Description

    A returning user: one episode is `sessions` dialogues (default 3) with the same hidden persona
    and a new goal each time (goals repeat only when the persona can be satisfied in fewer
    categories than there are sessions). The user remembers what it told the agent: asked again in
    a later session about a fact it already gave, it says so and loses patience as it does over a
    question repeated within a dialogue. The agent's references are checked against every fact the
    user gave in any session (`persona_consistency`, `redundancy` and `discovery` see them all), so
    an agent that forgets what it was told pays for re-asking, and one that misremembers pays for
    contradicting it.

    What the agent carries from one session to the next is up to the agent: the env's tracker
    starts each session empty, as a memoryless dialogue system's would. The observation offers the
    memory a memory-carrying policy can use and nothing more:

    - act mode (`mode="act"`): `PersonaRec-v0`'s belief vector of the current session followed by a
      one-hot session index (`Box(0, 1, (355 + sessions,))`); a recurrent policy (RL²) keeps the
      rest in its state, since the episode runs through all sessions;
    - text mode (`mode="text"`): the transcripts of the earlier sessions, then the current one, each
      opened by `=== Session k ===` (`TranscriptSpace`, cut from the front to
      `max_transcript_chars`). `info["messages"]` is the current session's chat.

    A new episode (`reset`) is a new user: nothing of the last one's carries over.

    ## Action Space

    As `PersonaRec-v0` (`Discrete(70)`, `action_masks()`) or `PersonaRecText-v0` (`Text`).

    ## Rewards

    Each step's reward is the inner env's for that turn (docs/REWARDS.md); the sum over an episode
    is the sum over its sessions.

    ## Episode End

    When a session ends (success or failure), the next starts within the same step: the step
    returns the session's last reward and the new session's first observation, with
    `info["session_outcome"]` (the outcome of the session that ended) and `info["session"]` (the
    index of the session now running). The episode terminates when the last session ends
    (truncated if that session ran out of turns).

    ## Arguments

    `sessions` (>= 1), `mode` (`act` or `text`), `max_transcript_chars` (text mode: the whole
    observation's limit, default 60000), and every argument of the inner env (`split`, `user`,
    `noise`, `max_turns`, `reward_weights`, ...).

    ## Info

    The inner env's keys, plus `session`, `sessions`, and at a session's end `session_outcome`,
    `session_success`, `session_heard` (what the agent's tracker heard in it: agent-side, what a
    memory-carrying agent may keep, e.g. `rule_memory`, `planner_memory`) and, in text mode,
    `session_messages` (the chat of the session that ended). The persona is never in it (unless
    `debug=True`).
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 1}

    def __init__(self, sessions: int = 3, mode: str = "act", max_transcript_chars: int = 60_000, **kwargs: Any) -> None:
        if isinstance(sessions, bool) or not isinstance(sessions, int) or sessions < 1:
            raise ValueError(f"sessions must be a positive integer, got {sessions!r}")
        if mode not in ("act", "text"):
            raise ValueError(f"mode must be 'act' or 'text', got {mode!r}")
        self.sessions, self.mode = sessions, mode
        if mode == "text":
            if isinstance(max_transcript_chars, bool) or not isinstance(max_transcript_chars, int):
                raise ValueError(f"max_transcript_chars must be a positive integer, got {max_transcript_chars!r}")
            self.inner: PersonaRecEnv | PersonaRecTextEnv = PersonaRecTextEnv(
                max_transcript_chars=max_transcript_chars, **kwargs
            )
            self.observation_space = TranscriptSpace(
                max_length=max_transcript_chars,
                min_length=1,
                charset="".join(sorted(self.inner.observation_space.character_set)),
            )
        else:
            self.inner = PersonaRecEnv(**kwargs)
            dim = self.inner.observation_space.shape[0] + sessions
            self.observation_space = spaces.Box(0.0, 1.0, shape=(dim,), dtype=np.float32)
        self.action_space = self.inner.action_space
        self.render_mode = self.inner.render_mode
        self.max_transcript_chars = max_transcript_chars
        self._session = 0
        self._persona: Any = None
        self._goals: list[str] = []
        self._told: dict[str, str] = {}
        self._past: list[str] = []  # text mode: the earlier sessions' transcripts
        self._task_goals = None
        self._over = True

    # -- the episode ------------------------------------------------------------------------------
    @property
    def session(self) -> int:
        """Index of the session now running (0-based)."""
        return self._session

    @property
    def world(self) -> Any:
        """The inner env's world."""
        return self.inner.world

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        """Meet a new user.

        ``options``: ``persona`` and ``goal`` (of the first session) as in ``PersonaRec-v0``, or ``task`` (a
        :class:`dialog_env.tasks.Task` or its dict: the persona and every session's goal).
        """
        super().reset(seed=seed)
        options = dict(options or {})
        if "earlier" in options:
            raise ValueError("reset option 'earlier' is the env's to set between sessions; a new episode is a new user")
        self._task_goals: tuple[str, ...] | None = None
        if "task" in options:
            from dialog_env.tasks import Task

            if set(options) - {"task"}:
                raise ValueError("reset option 'task' sets the persona and every goal; give it alone")
            task = options.pop("task")
            task = task if isinstance(task, Task) else Task.from_dict(task, self.inner.world)
            if len(task.goals) < self.sessions:
                raise ValueError(f"task: {len(task.goals)} goals for {self.sessions} sessions")
            self._task_goals = task.goals
            options = {"persona": task.persona, "goal": task.goals[0]}
        obs, info = self.inner.reset(seed=seed, options=options)
        self._persona = self.inner.persona
        self._goals = [self.inner.goal]
        self._told, self._past = {}, []
        self._session, self._over = 0, False
        return self._observe(obs), self._info(info)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """One agent turn; a session that ends makes way for the next within the step."""
        if self._over:
            raise RuntimeError("the episode is over (terminated or truncated); call reset() before step()")
        obs, reward, terminated, truncated, info = self.inner.step(action)
        if not (terminated or truncated):
            return self._observe(obs), reward, False, False, self._info(info)
        info = {
            **info,
            "session_outcome": info["outcome"],
            "session_success": info["is_success"],
            "session_heard": self.inner.tracker.known(),  # agent-side: what the agent's tracker heard
        }
        if self.mode == "text":
            info["session_messages"] = info["messages"]  # the chat of the session that ended
        self._told.update(self.inner.judge.revealed)
        if self._session + 1 >= self.sessions:
            self._over = True
            return self._observe(obs), reward, terminated, truncated, self._info(info)
        if self.mode == "text":
            self._past.append(self._with_header(self._session, obs))
        self._session += 1
        goal = self._next_goal()
        self._goals.append(goal)
        obs, start = self.inner.reset(options={"persona": self._persona, "goal": goal, "earlier": dict(self._told)})
        info = {**start, **{k: v for k, v in info.items() if k.startswith("session_") or k == "reward_terms"}}
        info["user_text"] = start["user_text"]
        return self._observe(obs), reward, False, False, self._info(info)

    def _next_goal(self) -> str:
        """The task's next goal, else a category the persona can be satisfied in, new to this user if one is left."""
        if self._task_goals is not None:
            return self._task_goals[self._session]
        from dialog_env.tasks import satisfiable_goals

        inner = self.inner
        cats = satisfiable_goals(inner.world, self._persona)
        fresh = [c for c in cats if c not in self._goals] or cats
        return fresh[inner._rng.randrange(len(fresh))]  # the user's stream: a seed fixes every goal

    # -- observations ------------------------------------------------------------------------------
    def _with_header(self, k: int, transcript: str) -> str:
        return f"{SESSION_HEADER.format(k=k + 1)}\n{transcript}"

    def _observe(self, obs: Any) -> Any:
        if self.mode == "act":
            index = np.zeros(self.sessions, dtype=np.float32)
            index[self._session] = 1.0
            return np.concatenate([obs, index])
        text = "\n".join([*self._past, self._with_header(self._session, obs)])
        return text[-self.max_transcript_chars :]

    def _info(self, info: dict[str, Any]) -> dict[str, Any]:
        return {**info, "session": self._session, "sessions": self.sessions}

    def action_masks(self) -> np.ndarray:
        """The current session's action mask (act mode; see ``PersonaRec-v0``)."""
        return self.inner.action_masks()

    def act_to_text(self, action: int) -> str:
        """Text mode: an act-table id as an utterance (for act-level agents)."""
        return self.inner.act_to_text(action)  # type: ignore[union-attr]

    def render(self) -> str | None:
        """The current session's transcript (``render_mode="ansi"``)."""
        return self.inner.render()

    def close(self) -> None:
        """Close the inner env."""
        self.inner.close()


# -- evaluation ------------------------------------------------------------------------------------

SESSION_METRICS = ("success", "return", "turns", "asks", "re_asks", "cross_contradiction_rate")
"""Per-session metrics of :func:`evaluate_sessions`: re-asks are questions about facts the user gave in an
earlier session; the cross-session contradiction rate is the share of agent turns that contradict one."""


def cross_session_contradictions(ctx: Any) -> int:
    """References in a turn that contradict a fact the user gave in an *earlier* session."""
    from dataclasses import replace

    from rewards.builtin import consistency_counts

    if not ctx.earlier:
        return 0
    return consistency_counts(
        replace(ctx, revealed_before=ctx.earlier, before=ctx.before._replace(rejected=frozenset()))
    )[1]


def evaluate_sessions(
    agent_factory: Any,
    *,
    split: str = "test",
    episodes: int = 100,
    sessions: int = 3,
    seed: int = 0,
    mode: str = "act",
    env_kwargs: dict[str, Any] | None = None,
    previous_action_reward: bool = False,
) -> list[list[dict[str, float]]]:
    """Play ``episodes`` returning users; one row of per-session metrics per episode.

    The agent is reset once per episode (on the inner env's view, the same object every session);
    an agent that remembers (``remembers = True``) keeps what ``info["session_heard"]`` tells it at
    each new session, a memoryless one starts every session from its tracker alone.
    ``previous_action_reward`` gives the agent RL²'s observation
    (:class:`dialog_env.wrappers.PreviousActionReward`), as a policy trained with it needs.

    Returns:
        ``rows[episode][session]`` -> ``{metric: value}`` over :data:`SESSION_METRICS`.
    """
    from dialog_env import acts as A
    from dialog_env.wrappers import PreviousActionReward

    kwargs = {"sessions": sessions, **(env_kwargs or {})}  # a run's env kwargs may set the session count
    base = PersonaRecSessionsEnv(mode=mode, split=split, **kwargs)
    sessions = base.sessions
    env: gym.Env = PreviousActionReward(base) if previous_action_reward else base
    rows = []
    for ep in range(episodes):
        agent = agent_factory()
        obs, info = env.reset(seed=seed + ep)
        agent.reset(base.inner, seed=seed + ep)
        per = [dict.fromkeys(SESSION_METRICS, 0.0) for _ in range(sessions)]
        contradicting = [0] * sessions
        while True:
            k = base.session
            obs, reward, terminated, truncated, info = env.step(agent.act(obs, info))
            ctx = base.inner.last_context  # this turn's, also when a new session started within the step
            m = per[k]
            m["return"] += reward
            m["turns"] += 1
            asks = [a for a in ctx.agent_acts if a.intent == A.ASK]
            m["asks"] += len(asks)
            m["re_asks"] += sum(a.slot in ctx.earlier for a in asks)
            contradicting[k] += cross_session_contradictions(ctx) > 0
            if "session_outcome" in info:
                m["success"] = float(info["session_success"])
            if terminated or truncated:
                break
        for k, m in enumerate(per):
            m["cross_contradiction_rate"] = contradicting[k] / max(1.0, m["turns"])
        rows.append(per)
    env.close()
    return rows


def summarize_sessions_run(rows: list[list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    """One summary over whole episodes (training curves): ``{metric: {"mean", "ci95"}}``.

    ``success`` is the share of successful sessions, ``return`` and ``turns`` are per episode (all
    sessions), ``contradiction_rate`` is the cross-session rate over later sessions, ``re_asks`` per episode.
    """
    from dialog_env.evaluation import mean_ci

    def ci(values: list[float]) -> dict[str, float]:
        mean, half = mean_ci(values)
        return {"mean": mean, "ci95": half}

    later = [r[1:] for r in rows]
    return {
        "success": ci([sum(s["success"] for s in r) / len(r) for r in rows]),
        "return": ci([sum(s["return"] for s in r) for r in rows]),
        "turns": ci([sum(s["turns"] for s in r) for r in rows]),
        "re_asks": ci([sum(s["re_asks"] for s in r) for r in rows]),
        "contradiction_rate": ci([sum(s["cross_contradiction_rate"] for s in r) / max(1, len(r)) for r in later]),
    }
