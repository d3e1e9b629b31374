"""The dialogue loop shared by the act-mode and text-mode PersonaRec environments."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import gymnasium as gym
import numpy as np

from dialog_env import acts as A
from dialog_env.acts import ActTable, DialogueAct
from dialog_env.context import TurnContext
from dialog_env.judge import Judge
from dialog_env.nlg import AgentNLG
from dialog_env.nlu import Lexicon
from dialog_env.persona import SPLITS, Persona, PersonaSampler, coerce_persona, load_personas
from dialog_env.tracker import DialogueStateTracker, TrackerView
from dialog_env.users import DEFAULT_USER, UserTurn, make_user
from dialog_env.world import World, load_world
from rewards.compose import WeightedReward

ROLE_USER, ROLE_AGENT = "user", "assistant"
RESET_OPTIONS = frozenset({"persona", "goal", "earlier"})
"""Keys ``reset(options=...)`` takes: the persona, the goal, and facts told in earlier sessions."""


def _copy_specs(specs: Any) -> Any:
    """A copy of ``reward_weights`` as given (a mapping or a list of spec mappings) for the replay record."""
    if isinstance(specs, Mapping):
        return dict(specs)
    if isinstance(specs, list | tuple):
        return [dict(e) if isinstance(e, Mapping) else e for e in specs]
    return specs


class RenderModeError(ValueError, TypeError):
    """An unsupported ``render_mode``.

    Also a ``TypeError`` because SB3's ``make_vec_env`` asks for ``render_mode="rgb_array"`` first
    and falls back to the env's default on ``TypeError``.
    """


class PersonaRecCore(gym.Env):
    """Shared machinery of :class:`PersonaRecEnv` and :class:`PersonaRecTextEnv`.

    Subclasses define the spaces, turn an action into ``(acts, text)`` and build observations.
    See :class:`~dialog_env.envs.persona_rec.PersonaRecEnv` for the full specification.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 1}
    mode = ""
    """``"act"`` or ``"text"``: what an action is (set by the subclasses)."""

    def __init__(
        self,
        world: str | None = None,
        split: str = "train",
        persona_file: str | None = None,
        noise: float = 0.0,
        tracker: str = "rule",
        user: str = DEFAULT_USER,
        reward_weights: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        max_turns: int = 20,
        render_mode: str | None = None,
        debug: bool = False,
        embedder: Any = None,
    ) -> None:
        if split not in (*SPLITS, "all"):
            raise ValueError(f"split must be one of {[*SPLITS, 'all']}, got {split!r}")
        if isinstance(noise, bool) or not isinstance(noise, int | float) or not 0.0 <= noise < 1.0:
            raise ValueError(f"noise (semantic error rate) must be a number in [0, 1), got {noise!r}")
        if isinstance(max_turns, bool) or not isinstance(max_turns, int) or max_turns < 1:
            raise ValueError(f"max_turns must be a positive integer, got {max_turns!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise RenderModeError(
                f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}"
            )
        self._init_kwargs: dict[str, Any] = {
            "world": world,
            "split": split,
            "persona_file": persona_file,
            "noise": noise,
            "tracker": tracker,
            "user": user,
            "reward_weights": _copy_specs(reward_weights),
            "max_turns": max_turns,
        }
        self._embedder: Any = None
        if embedder is not None:
            self.use_embedder(embedder)
        self.world: World = load_world(world)
        self.split = split
        self.noise = float(noise)
        self.max_turns = max_turns
        self.render_mode = render_mode
        self.debug = bool(debug)
        self.lexicon = Lexicon(self.world)
        self.act_table = ActTable(self.world)
        self.agent_nlg = AgentNLG(self.world)
        self.tracker = DialogueStateTracker(self.world, tracker, self.lexicon)
        tab = self.act_table
        # Each id's act, decoded once (confirm takes its value from the tracker at step time).
        self._fixed_acts: tuple[DialogueAct, ...] = tuple(
            DialogueAct(A.RECOMMEND, None, arg) if kind == A.RECOMMEND else DialogueAct(kind, arg)
            for kind, arg in (tab.decode(i) for i in range(tab.size))
        )
        self._mask = np.ones(tab.size, dtype=bool)
        self._split_mask()
        self.user = make_user(user, self.world)
        # The world's judge decides acceptance and what was truly revealed; the simulator cannot.
        self.judge = Judge(self.world)
        try:
            self.reward_fn = WeightedReward(reward_weights)
        except ValueError as e:
            raise ValueError(f"reward_weights: {e}") from e
        self.sampler = PersonaSampler(self.world, split)
        self.personas: list[Persona] | None = (
            load_personas(persona_file, self.world) if persona_file is not None else None
        )
        self._episode_over = True
        self._turn = 0
        self._rng: random.Random | None = None
        # Template phrasing of agent acts has its own stream, so the user's behaviour does not depend
        # on how an utterance was produced (act_to_text or an LM): dialog_state() replays exactly.
        self._agent_rng: random.Random | None = None
        # The noisy channel draws from a third stream: with the same seed and agent actions, the
        # user's true acts are the same at every noise level (paired comparisons).
        self._noise_rng: random.Random | None = None
        self._history: list[tuple[str, str]] = []
        self._rewards: list[dict[str, float]] = []

    def use_embedder(self, embedder: Any) -> None:
        """Embed this env's sentences (``nli_consistency``, ``tracker="learned"``) through ``embedder``.

        What the ``embedder=`` argument does (``None``: the process's default embedder). It holds
        during this env's ``reset`` and ``step`` only, so other envs of the process are not touched.
        A pickled env leaves it out (it is a connection, with a key); a vector env restored from
        pickled envs calls this through ``env_method`` to join a new
        :class:`~dialog_env.embedding_service.EmbeddingService`.

        Raises:
            TypeError: ``embedder`` is not callable or has no ``dim``.
        """
        from dialog_env.nli import check_embedder

        self._embedder = check_embedder(embedder)

    # -- episode ------------------------------------------------------------------------------
    def _embedding(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` with this env's embedder in force (none given: a plain call, the hot path)."""
        if self._embedder is None:
            return fn(*args)
        from dialog_env.nli import embedding_with

        with embedding_with(self._embedder):
            return fn(*args)

    def _start(self, seed: int | None, options: dict[str, Any] | None) -> UserTurn:
        return self._embedding(self._start_episode, seed, options)

    def _start_episode(self, seed: int | None, options: dict[str, Any] | None) -> UserTurn:
        super().reset(seed=seed)
        options = dict(options or {})
        self._reset_record = {
            "seed": seed,
            "options": {k: (v.to_dict() if isinstance(v, Persona) else v) for k, v in options.items()},
        }
        unknown = set(options) - RESET_OPTIONS
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}; allowed: {sorted(RESET_OPTIONS)}")
        if options.get("earlier") and "persona" not in options:
            raise ValueError("reset option 'earlier' (facts told in earlier sessions) needs the 'persona' option")
        if "persona" in options or self.personas is not None:
            if "persona" in options:
                persona = coerce_persona(options["persona"], self.world)
            else:
                persona = self.personas[int(self.np_random.integers(len(self.personas)))]  # type: ignore[index]
            value_idx = self.world.value_indices(persona.values)
            ok = self.world.acceptable_mask(value_idx)
        else:
            persona, value_idx, ok = self.sampler.sample_indexed(self.np_random)
        goal = options.get("goal")
        if goal is not None and goal not in self.world.category:
            raise ValueError(f"reset option 'goal' must be one of {list(self.world.category)}, got {goal!r}")
        # Phrasing and user choices come from a generator derived from np_random: a seed fixes
        # all. Unseeded resets continue the same stream (still deterministic after a seed).
        if seed is not None or self._rng is None:
            self._rng = random.Random(int(self.np_random.integers(2**63)))
            self._agent_rng = random.Random(int(self.np_random.integers(2**63)))
            self._noise_rng = random.Random(int(self.np_random.integers(2**63)))
        if "goal" not in options:
            # A goal the persona can be satisfied in (any goal if none can).
            cats = sorted(set(self.world.item_category[ok].tolist())) or list(range(len(self.world.categories)))
            goal = self.world.categories[cats[self._rng.randrange(len(cats))]].id
        self.persona, self.goal = persona, goal
        self._value_idx = value_idx
        self.tracker.reset()
        self.judge.start(persona, goal, ok, earlier=options.get("earlier"))
        opening = self.user.reset(persona, goal, self._rng, self.judge)
        if self.judge.read((), opening) is not None:
            raise RuntimeError(f"user {self._init_kwargs['user']!r} ended the dialogue in its opening turn")
        text = self._heard(opening)[1]
        self.tracker.update_user(text, opening.acts)
        self._user_turn_read(None, self.tracker.view())
        self._revealed = self.judge.shared()
        self._history = [(ROLE_USER, text)]
        self._rewards = []
        self._turn = 0
        self._episode_over = False
        return opening

    def _user_turn_read(self, before: TrackerView | None, after: TrackerView) -> None:
        """Hook: the tracker has just read a user turn (the text env keeps what its state note needs)."""

    def _check_running(self) -> None:
        if self._episode_over:
            raise RuntimeError("the episode is over (terminated or truncated); call reset() before step()")

    def _heard(self, turn: UserTurn) -> tuple[tuple[DialogueAct, ...], str]:
        """Pass the user's turn through the semantic-error channel (PyDial's noise model)."""
        if self.noise <= 0.0:
            return turn.acts, turn.text
        rng, heard, changed = self._noise_rng, [], False
        for a in turn.acts:
            if a.intent in (A.INFORM, A.AFFIRM) and rng.random() < self.noise:
                others = [v for v in self.world.slot[a.slot].value_ids if v != a.value]
                a = DialogueAct(a.intent, a.slot, rng.choice(others))
                changed = True
            heard.append(a)
        if not changed:
            return turn.acts, turn.text
        acts = tuple(heard)
        return acts, self.user.render(acts, rng)

    def _advance(
        self, acts: tuple[DialogueAct, ...], agent_text: str, safety_flags: tuple[str, ...] = ()
    ) -> tuple[float, bool, bool, dict[str, Any]]:
        """Run one agent turn (see :meth:`_run_turn`) with this env's embedder."""
        return self._embedding(self._run_turn, acts, agent_text, safety_flags)

    def _run_turn(
        self, acts: tuple[DialogueAct, ...], agent_text: str, safety_flags: tuple[str, ...] = ()
    ) -> tuple[float, bool, bool, dict[str, Any]]:
        """Run one agent turn through user, channel, tracker and rewards.

        ``safety_flags``: what the text env's safety check found in the agent's own words (``agent_text``
        is then what the user heard instead).

        Returns:
            ``(reward, terminated, truncated, info)``. The turn that reaches ``max_turns`` without an
            outcome truncates the dialogue, and its context's outcome is ``"truncated"`` (a failure).
        """
        self._check_running()
        before = self.tracker.view()
        history = tuple(self._history)
        self.tracker.update_agent(acts)
        turn = self.user.respond(acts, agent_text)
        judged = self.judge.read(acts, turn)
        _, user_text = self._heard(turn)
        self.tracker.update_user(user_text, turn.acts)
        after = self.tracker.view()
        self._user_turn_read(before, after)
        revealed_before, self._revealed = self._revealed, self.judge.shared()
        truncated = judged is None and self._turn + 1 >= self.max_turns
        outcome = "truncated" if truncated else judged
        ctx = TurnContext(
            world=self.world,
            turn=self._turn,
            agent_text=agent_text,
            agent_acts=acts,
            user_text=user_text,
            user_acts=turn.acts,
            history=history,
            before=before,
            after=after,
            persona=self.persona,
            goal=self.goal,
            revealed_before=revealed_before,
            revealed=self._revealed,
            outcome=outcome,
            earlier=self.judge.earlier,
            safety_flags=safety_flags,
        )
        total, terms = self.reward_fn.score_one(ctx)
        self._rewards.append(terms)
        self._history += [(ROLE_AGENT, agent_text), (ROLE_USER, user_text)]
        self._turn += 1
        self.last_context = ctx
        terminated = judged is not None
        self._episode_over = terminated or truncated
        info: dict[str, Any] = {
            "reward_terms": terms,
            "turn": self._turn,
            "agent_text": agent_text,
            "user_text": user_text,
            "outcome": outcome,
            "is_success": outcome == "accepted",
        }
        if self.debug:
            info["debug"] = self._debug_info(turn.acts)
        return total, terminated, truncated, info

    def _debug_info(self, true_acts: Sequence[DialogueAct] = ()) -> dict[str, Any]:
        """Privileged state, only when the env was made with ``debug=True``."""
        return {
            "persona": self.persona.to_dict(),
            "goal": self.goal,
            "revealed": dict(self._revealed),
            "true_user_acts": [str(a) for a in true_acts],
        }

    def dialog_state(self) -> dict[str, Any]:
        """A JSON-serialisable record that replays this dialogue exactly.

        It holds the env kwargs, the reset seed and options, and the agent's turns so far (see
        :func:`rewards.to_trl`).

        Raises:
            RuntimeError: The episode was reset without an explicit seed (it cannot be replayed).
        """
        if self._reset_record["seed"] is None:
            raise RuntimeError("dialog_state() needs an episode reset with an explicit seed")
        return {
            "env_kwargs": self._init_kwargs,
            **self._reset_record,
            "agent_turns": [t for r, t in self._history if r == ROLE_AGENT],
        }

    def _split_mask(self) -> None:
        tab = self.act_table
        self._mask_parts = (
            self._mask[tab.ask_start : tab.confirm_start],
            self._mask[tab.confirm_start : tab.recommend_start],
            self._mask[tab.recommend_start : tab.chitchat],
        )  # chitchat and bye stay allowed

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (a training checkpoint's env snapshot) without the mask's views (rebuilt on load) or its embedder."""
        return {k: (None if k == "_embedder" else v) for k, v in self.__dict__.items() if k != "_mask_parts"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_embedder", None)  # snapshots from before envs had one
        self._split_mask()

    def action_masks(self) -> np.ndarray:
        """Bool mask over act-table ids: False for pointless acts (see ``PersonaRec-v0``)."""
        t, (ask, confirm, rec) = self.tracker, self._mask_parts
        np.logical_or(t.informed, t.declined, out=ask)
        np.logical_not(ask, out=ask)
        np.greater(t.informed, t.confirmed, out=confirm)  # informed and not yet confirmed
        np.logical_not(t.rejected, out=rec)
        return self._mask.copy()

    def act_from_id(self, action: int) -> DialogueAct:
        """The act of an act-table id; ``confirm`` takes the tracker's best value (or asks).

        Raises:
            ValueError: ``action`` is not a valid act id.
        """
        if type(action) is int and 0 <= action < len(self._fixed_acts):
            act = self._fixed_acts[action]
        else:
            self.act_table.decode(action)  # validates (numpy ints too), with a clear error
            act = self._fixed_acts[int(action)]
        if act.intent == A.CONFIRM:
            best = self.tracker.best(act.slot)  # type: ignore[arg-type]
            return DialogueAct(A.ASK, act.slot) if best is None else DialogueAct(A.CONFIRM, act.slot, best)
        return act

    # -- rendering ----------------------------------------------------------------------------
    @property
    def turn(self) -> int:
        """Agent turns taken in the current episode."""
        return self._turn

    @contextmanager
    def phrasing_stream(self, rng: random.Random) -> Iterator[None]:
        """Inside the block, agent acts are phrased from ``rng``; the env's own phrasing stream is untouched.

        A second agent that speaks at the same state without being heard (a teacher labelling another
        policy's states) phrases its replies here, so the dialogue goes on exactly as without it.
        """
        own, self._agent_rng = self._agent_rng, rng
        try:
            yield
        finally:
            self._agent_rng = own

    def transcript(self) -> str:
        """The dialogue so far, one ``Role: text`` line a turn."""
        return "\n".join(f"{'User' if r == ROLE_USER else 'Agent'}: {t}" for r, t in self._history)

    def render(self) -> str | None:
        """``ansi``: the transcript with each agent turn's reward terms."""
        if self.render_mode != "ansi":
            return None
        lines = [f"User: {self._history[0][1]}"] if self._history else []
        for i, terms in enumerate(self._rewards):
            agent, user = self._history[1 + 2 * i][1], self._history[2 + 2 * i][1]
            shown = "  ".join(f"{k}={v:+.2f}" for k, v in terms.items())
            lines += [f"Agent: {agent}", f"User: {user}", f"    [{shown}]"]
        return "\n".join(lines) + "\n"

    def messages(self) -> list[dict[str, str]]:
        """The dialogue in chat format (the agent is the ``assistant``)."""
        return [{"role": r, "content": t} for r, t in self._history]
