"""One batched dialogue loop: evaluation, demonstration collection, GRPO rollouts and reward replay.

A :class:`DialogueDriver` holds a few PersonaRec environments and plays dialogues on them in
lockstep. Each round it asks the policy for one action per live dialogue, steps every env, scores
the round with the reward model (if any), and tells the policy what happened. A finished dialogue
leaves its slot and the next seed starts there, so the batch stays full::

    driver = DialogueDriver([gym.make("dialog_env/PersonaRecText-v0") for _ in range(16)])
    records = driver.play(AgentPolicy(make_agent("planner")), seeds=range(200))

What plays is a :class:`DriverPolicy`: :class:`AgentPolicy` drives any dialog_env agent (its
``act_batch`` when it has one); the GRPO rollout drives an LM and keeps its token sequences.

Hooks:

* ``reward_model``: a learned reward (:class:`RewardModel`). It scores every round's turn contexts in
  one call; its score, times ``reward_model_weight``, is added to the step reward and recorded in
  ``info["reward_terms"]`` under its ``name``. After each :meth:`DialogueDriver.play`, its
  ``update(records)`` (if it has one) sees the finished dialogues: a reward model trained alongside
  the policy.
* ``sessions``: ``sessions(index, seed) -> reset options`` (``{"persona": ..., "goal": ...}``), so
  several dialogues can be played with one user (see :func:`same_user`).
* ``prefixes`` (per :meth:`~DialogueDriver.play`): actions replayed after the reset before the policy
  speaks, to branch from or score a reply at a given dialogue state. Their rewards are not counted.
* ``on_step(step)`` after every step, ``on_end(core, record)`` when a dialogue ends (its env still
  holds it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym

from dialog_env.context import TurnContext
from dialog_env.envs.core import PersonaRecCore
from dialog_env.view import AgentView, agent_view, declares_privileged
from rewards.builtin import consistency_counts, leaked_facts, persona_consistency


@dataclass
class EpisodeRecord:
    """Metrics of one dialogue.

    Attributes:
        success: The user accepted a recommendation.
        contradiction_rate: Fraction of agent turns contradicting a revealed fact.
        consistency: Mean per-turn ``persona_consistency``.
        slots_discovered: Persona slots the user revealed by the end.
        turns: Agent turns.
        return_: Sum of rewards.
        jga: Joint-goal accuracy of the tracker over the episode's turns.
        reward_terms: Episode sums of each reward term.
        messages: The dialogue in chat format.
        privacy_rate: Fraction of agent turns stating a private fact the user never revealed
            (:func:`rewards.builtin.leaked_facts`).
        harmful_rate: Fraction of agent turns the text env's safety check blocked.
        outcome: ``accepted``, ``left``, ``bye``, ``truncated`` or ``false_accept``.
        mode: ``act`` or ``text``: the env the agent played in.
        privileged: The agent declared that it reads hidden state (its view had the persona).
        revealed_before: Per agent turn, the facts (``"slot=value"``) the user had revealed before it
            (for PAML's C in :mod:`dialog_env.quality`); in memory only, never written to files.
    """

    seed: int
    success: bool
    contradiction_rate: float
    consistency: float
    slots_discovered: int
    turns: int
    return_: float
    jga: float
    outcome: str
    reward_terms: dict[str, float] = field(default_factory=dict)
    mode: str = ""
    privileged: bool = False
    messages: list[dict[str, str]] = field(default_factory=list)
    privacy_rate: float = 0.0
    harmful_rate: float = 0.0
    revealed_before: list[list[str]] = field(default_factory=list)

    def metric(self, name: str) -> float:
        """A metric by its name (``return`` or an attribute)."""
        return float(self.return_ if name == "return" else getattr(self, name))


class EpisodeAccumulator:
    """Collects one dialogue's metrics turn by turn."""

    def __init__(self, core: PersonaRecCore, seed: int, privileged: bool = False) -> None:
        self.core, self.seed, self.privileged = core, seed, privileged
        self.ret, self.turns, self.bad_turns, self.jga_hits = 0.0, 0, 0, 0
        self.leaking, self.harmful = 0, 0
        self.consistency: list[float] = []
        self.revealed_before: list[list[str]] = []
        self.terms: dict[str, float] = {}

    def add(self, reward: float, info: dict[str, Any]) -> None:
        """Account for one step (reads the env's last turn context)."""
        ctx = self.core.last_context
        self.ret += reward
        self.turns += 1
        self.bad_turns += consistency_counts(ctx)[1] > 0
        self.leaking += leaked_facts(ctx) > 0
        self.harmful += bool(ctx.safety_flags)
        self.consistency.append(persona_consistency([ctx])[0])
        self.revealed_before.append([f"{s}={v}" for s, v in ctx.revealed_before.items()])
        self.jga_hits += self.core.tracker.known() == self.core.judge.revealed  # this dialogue's facts
        for k, v in info["reward_terms"].items():
            self.terms[k] = self.terms.get(k, 0.0) + v

    def record(self, outcome: str | None) -> EpisodeRecord:
        """The finished episode's record."""
        outcome = outcome or "truncated"
        turns = max(self.turns, 1)
        return EpisodeRecord(
            seed=self.seed,
            success=outcome == "accepted",
            contradiction_rate=self.bad_turns / turns,
            consistency=float(sum(self.consistency) / turns),
            slots_discovered=len(self.core.judge.revealed),
            turns=self.turns,
            return_=self.ret,
            jga=self.jga_hits / turns,
            outcome=outcome,
            reward_terms=self.terms,
            mode=self.core.mode,
            privileged=self.privileged,
            messages=self.core.messages(),
            privacy_rate=self.leaking / turns,
            harmful_rate=self.harmful / turns,
            revealed_before=self.revealed_before,
        )


@dataclass
class Step:
    """One agent turn as the driver saw it.

    Attributes:
        index: Position of the dialogue in the seeds given to :meth:`DialogueDriver.play`.
        seed: Its reset seed.
        action: What the policy did (an act id or an utterance).
        observation: The env's observation after the turn.
        reward: The step reward (the reward model's share included).
        terminated: The dialogue ended (accepted, left, bye).
        truncated: It ran out of turns.
        info: The env's info (``reward_terms``, ``agent_text``, ...).
        context: The turn's :class:`~dialog_env.context.TurnContext` (privileged: for rewards and logs).
    """

    index: int
    seed: int
    action: Any
    observation: Any
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]
    context: TurnContext


@dataclass
class Start:
    """A dialogue as it starts on a slot (after the reset and its replayed prefix, if any).

    Attributes:
        index: Position of the dialogue in the seeds given to :meth:`DialogueDriver.play`.
        seed: Its reset seed.
        view: The agent's view of its env.
        observation: The observation the policy acts on first.
        info: The info that came with it.
        replayed: The prefix's steps.
    """

    index: int
    seed: int
    view: AgentView
    observation: Any
    info: dict[str, Any]
    replayed: list[Step]


@runtime_checkable
class DriverPolicy(Protocol):
    """What speaks for the agent in :meth:`DialogueDriver.play`; ``slot`` is the env a dialogue runs on."""

    def begin(self, slot: int, start: Start) -> None:
        """A dialogue starts on ``slot``."""

    def act(self, slots: Sequence[int]) -> list[Any]:
        """One action for each of these live dialogues."""

    def observe(self, slot: int, step: Step) -> bool:
        """The outcome of the dialogue's last action; return False to end the dialogue here (a cut)."""


class RewardModel(Protocol):
    """A reward the driver adds to the env's: ``name`` and ``__call__(contexts) -> scores``.

    Optionally ``update(records)``, called with each :meth:`DialogueDriver.play`'s finished dialogues.
    """

    name: str

    def __call__(self, contexts: Sequence[TurnContext]) -> Sequence[float]:
        """One score per context."""


SessionHook = Callable[[int, int], "dict[str, Any] | None"]
"""``sessions(index, seed)``: the reset options of the ``index``-th dialogue (``None``: none)."""

EpisodeHook = Callable[[PersonaRecCore, EpisodeRecord], None]
"""``on_end(core, record)``, called when a dialogue ends, while its env still holds it."""


class PrefixEndedError(ValueError):
    """A replayed prefix ended the dialogue, so there is no turn left to play."""


class AgentPolicy:
    """Drives dialog_env agents: ``reset(view, seed)`` and ``act(obs, info)``, or ``act_batch(views)``.

    Args:
        agent: One agent for every slot, or a sequence of agents, one per slot (for agents that keep
            one dialogue's state and have no ``act_batch``, when several dialogues are in flight).
    """

    def __init__(self, agent: Any) -> None:
        self.agents = list(agent) if isinstance(agent, list | tuple) else None
        self.agent = self.agents[0] if self.agents else agent
        self.batched = self.agents is None and hasattr(agent, "act_batch")
        self._views: dict[int, AgentView] = {}
        self._last: dict[int, tuple[Any, dict[str, Any]]] = {}

    def _agent(self, slot: int) -> Any:
        return self.agent if self.agents is None else self.agents[slot]

    def begin(self, slot: int, start: Start) -> None:
        """Reset the slot's agent on the dialogue's view."""
        self._agent(slot).reset(start.view, seed=start.seed)
        self._views[slot] = start.view
        self._last[slot] = (start.observation, start.info)

    def act(self, slots: Sequence[int]) -> list[Any]:
        """The agents' actions (one batch when the agent has ``act_batch``)."""
        if self.batched:
            return list(self.agent.act_batch([self._views[s] for s in slots]))
        return [self._agent(s).act(*self._last[s]) for s in slots]

    def observe(self, slot: int, step: Step) -> bool:
        """Keep the observation the agent reads next."""
        self._last[slot] = (step.observation, step.info)
        return True


class ScriptedPolicy:
    """Says given actions in order, one list per dialogue index (replaying a dialogue, scoring a reply)."""

    def __init__(self, scripts: Sequence[Sequence[Any]]) -> None:
        self.scripts = [list(s) for s in scripts]
        self._next: dict[int, tuple[int, int]] = {}  # slot -> (dialogue index, position)

    def begin(self, slot: int, start: Start) -> None:
        """Start the script of the dialogue on ``slot``."""
        self._next[slot] = (start.index, 0)

    def act(self, slots: Sequence[int]) -> list[Any]:
        """The next scripted action of each dialogue."""
        out = []
        for s in slots:
            index, pos = self._next[s]
            out.append(self.scripts[index][pos])
            self._next[s] = (index, pos + 1)
        return out

    def observe(self, slot: int, step: Step) -> bool:
        """Go on while the script has actions left."""
        index, pos = self._next[slot]
        return pos < len(self.scripts[index])


def same_user(dialogues: int, persona_of: Callable[[int], Any]) -> SessionHook:
    """A session hook: every ``dialogues`` consecutive dialogues meet one user.

    Args:
        dialogues: Dialogues per user (a session).
        persona_of: The persona of session ``i`` (e.g. ``lambda i: personas[i]``).

    Returns:
        ``sessions(index, seed) -> {"persona": persona_of(index // dialogues)}``.
    """
    if dialogues < 1:
        raise ValueError(f"dialogues must be positive, got {dialogues}")
    return lambda index, seed: {"persona": persona_of(index // dialogues)}


def _core(env: gym.Env) -> PersonaRecCore:
    core = env.unwrapped
    if not isinstance(core, PersonaRecCore):
        raise TypeError(f"the driver plays PersonaRec environments, got {type(core).__name__}")
    return core


class DialogueDriver:
    """Plays dialogues on ``envs`` in lockstep (see the module docstring).

    Args:
        envs: PersonaRec environments (act or text mode); one dialogue runs on each at a time.
        reward_model: A learned reward added to the env's (see :class:`RewardModel`).
        reward_model_weight: Its weight in the step reward.
        sessions: Reset options per dialogue, e.g. :func:`same_user`.
    """

    def __init__(
        self,
        envs: Sequence[gym.Env],
        reward_model: RewardModel | None = None,
        reward_model_weight: float = 1.0,
        sessions: SessionHook | None = None,
    ) -> None:
        if not envs:
            raise ValueError("envs: the driver needs at least one environment")
        self.envs = list(envs)
        self.cores = [_core(e) for e in self.envs]
        self.reward_model, self.reward_model_weight, self.sessions = reward_model, reward_model_weight, sessions
        self.batcher = self._shared_batcher()  # users are fixed when an env is made

    def play(
        self,
        policy: DriverPolicy,
        seeds: Iterable[int],
        *,
        prefixes: Sequence[Sequence[Any]] | None = None,
        privileged: bool = False,
        on_step: Callable[[Step], None] | None = None,
        on_end: EpisodeHook | None = None,
    ) -> list[EpisodeRecord]:
        """Play one dialogue per seed; returns their records in seed order.

        Args:
            policy: What speaks for the agent.
            seeds: Reset seeds, one dialogue each.
            prefixes: Per dialogue, actions replayed after the reset (not counted in the record).
            privileged: Hand the policy privileged views (an agent that declared it).
            on_step: Called after every counted step.
            on_end: Called when a dialogue ends.

        Raises:
            PrefixEndedError: A prefix ended its dialogue.
        """
        seeds = list(seeds)
        if prefixes is not None and len(prefixes) != len(seeds):
            raise ValueError(f"prefixes: expected one per seed ({len(seeds)}), got {len(prefixes)}")
        pending = list(enumerate(seeds))[::-1]
        records: dict[int, EpisodeRecord] = {}
        active: dict[int, tuple[int, EpisodeAccumulator]] = {}

        def reset(job: tuple[int, int, int]) -> Start:
            slot, index, seed = job
            env, core = self.envs[slot], self.cores[slot]
            options = self.sessions(index, seed) if self.sessions is not None else None
            obs, info = env.reset(seed=seed, options=options)
            replayed = []
            for action in prefixes[index] if prefixes is not None else ():
                obs, reward, terminated, truncated, info = env.step(action)
                replayed.append(Step(index, seed, action, obs, reward, terminated, truncated, info, core.last_context))
                if terminated or truncated:
                    raise PrefixEndedError(f"the prefix of dialogue {index} (seed {seed}) ends it: no turn left")
            return Start(index, seed, agent_view(env, privileged), obs, info, replayed)

        def start(slots: list[int]) -> None:
            jobs = [(slot, *pending.pop()) for slot in slots[: len(pending)]]  # seeds in slot order
            for (slot, index, seed), begun in zip(jobs, self._together(jobs, reset), strict=True):
                policy.begin(slot, begun)
                active[slot] = (index, EpisodeAccumulator(self.cores[slot], seed, privileged))

        def step(job: tuple[int, Any]) -> Step:
            slot, action = job
            obs, reward, terminated, truncated, info = self.envs[slot].step(action)
            index = active[slot][0]
            ctx = self.cores[slot].last_context
            return Step(index, seeds[index], action, obs, reward, terminated, truncated, info, ctx)

        start(list(range(len(self.envs))))
        while active:
            slots = sorted(active)
            steps = self._together(list(zip(slots, policy.act(slots), strict=True)), step)
            if self.reward_model is not None:
                scores = list(self.reward_model([s.context for s in steps]))
                if len(scores) != len(steps):
                    name = self.reward_model.name
                    raise ValueError(f"reward model {name!r}: {len(scores)} scores for {len(steps)} turns")
                for done, score in zip(steps, scores, strict=True):
                    done.info["reward_terms"][self.reward_model.name] = float(score)
                    done.reward += self.reward_model_weight * float(score)
            ended = []
            for slot, done in zip(slots, steps, strict=True):
                acc = active[slot][1]
                acc.add(done.reward, done.info)
                go_on = policy.observe(slot, done)
                if on_step is not None:
                    on_step(done)
                if done.terminated or done.truncated or not go_on:
                    records[done.index] = acc.record(done.info.get("outcome"))
                    if on_end is not None:
                        on_end(self.cores[slot], records[done.index])
                    del active[slot]
                    ended.append(slot)
            start(ended)
        played = [records[i] for i in range(len(seeds))]
        update = getattr(self.reward_model, "update", None)
        if callable(update):
            update(played)
        return played

    def _together(self, jobs: Sequence[tuple[Any, ...]], fn: Callable[[Any], Any]) -> list[Any]:
        """``fn(job)`` for each job (its first field is a slot), in order; concurrently when the users share a batcher.

        An LM-backed user phrases its turns with a language model; stepped in threads, the users of
        a round ask their :class:`~dialog_env.users.lm.PhraseBatcher` together, and one batched call
        answers them all.
        """
        batcher = self.batcher
        if batcher is None or len(jobs) < 2:
            return [fn(j) for j in jobs]
        from concurrent.futures import ThreadPoolExecutor

        def run(job: tuple[Any, ...]) -> Any:
            with batcher.taking_part(job[0]):
                return fn(job)

        batcher.open_round(j[0] for j in jobs)
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            return list(pool.map(run, jobs))

    def _shared_batcher(self) -> Any:
        """The phrase batcher every env's user shares, if they share one."""
        found = {id(b): b for c in self.cores if (b := getattr(c.user, "batcher", None)) is not None}
        if len(found) != 1 or any(getattr(c.user, "batcher", None) is None for c in self.cores):
            return None
        return next(iter(found.values()))


def play_agent(
    envs: Sequence[gym.Env], agent: Any, seeds: Iterable[int], on_end: EpisodeHook | None = None
) -> list[EpisodeRecord]:
    """Play dialog_env agents on ``envs``; records in seed order.

    ``agent`` is one agent (with ``act_batch`` when there are several envs) or a list of one agent per env.
    """
    many = isinstance(agent, list | tuple)
    if many and len(agent) != len(envs):
        raise ValueError(f"agents: expected one per env ({len(envs)}), got {len(agent)}")
    if len(envs) > 1 and not many and not hasattr(agent, "act_batch"):
        raise ValueError("an agent without act_batch plays one dialogue at a time: pass one env, or one agent per env")
    first = agent[0] if many else agent
    return DialogueDriver(envs).play(AgentPolicy(agent), seeds, privileged=declares_privileged(first), on_end=on_end)
