"""dialog_env: Gymnasium environments for dialogue policies against a hidden-persona user.

Importing the package registers ``dialog_env/PersonaRec-v0`` (act mode) and
``dialog_env/PersonaRecText-v0`` (text mode) with Gymnasium, and the returning-user envs
``dialog_env/PersonaRecSessions-v0`` / ``PersonaRecSessionsText-v0`` (several sessions with one user);
``make_parallel`` builds
``dialog_env/PersonaRecDuel-v0`` (assistant against a learning user, PettingZoo's parallel API).
"""

from gymnasium.envs.registration import register, registry

__version__ = "0.1.0"

#: Default turn limit (the envs' ``max_turns``). The envs truncate themselves, without a registered
#: ``TimeLimit``: the turn that reaches the limit is charged as a failed dialogue, which a wrapper
#: would hide from the reward.
MAX_EPISODE_STEPS = 20

_ENVS = {
    "dialog_env/PersonaRec-v0": "dialog_env.envs.persona_rec:PersonaRecEnv",
    "dialog_env/PersonaRecText-v0": "dialog_env.envs.persona_rec_text:PersonaRecTextEnv",
}
for _id, _entry in _ENVS.items():
    if _id not in registry:
        register(id=_id, entry_point=_entry)

ENV_IDS = tuple(_ENVS)

#: Returning-user envs: one episode is several sessions with the same user (``dialog_env.envs.sessions``).
SESSION_ENV_IDS = ("dialog_env/PersonaRecSessions-v0", "dialog_env/PersonaRecSessionsText-v0")
for _id, _mode in zip(SESSION_ENV_IDS, ("act", "text"), strict=True):
    if _id not in registry:
        register(id=_id, entry_point="dialog_env.envs.sessions:PersonaRecSessionsEnv", kwargs={"mode": _mode})

#: Multi-agent envs (PettingZoo's parallel API), built with :func:`make_parallel`.
PARALLEL_ENVS = {"dialog_env/PersonaRecDuel-v0": "dialog_env.envs.duel:parallel_env"}


def make_parallel(env_id: str, **kwargs: object) -> object:
    """Build a multi-agent env of :data:`PARALLEL_ENVS` (PettingZoo's parallel API).

    Raises:
        ValueError: ``env_id`` is not one of them.
    """
    import importlib

    if env_id not in PARALLEL_ENVS:
        raise ValueError(f"env_id: expected one of {sorted(PARALLEL_ENVS)}, got {env_id!r}")
    module, attr = PARALLEL_ENVS[env_id].split(":")
    return getattr(importlib.import_module(module), attr)(**kwargs)


__all__ = ["ENV_IDS", "MAX_EPISODE_STEPS", "PARALLEL_ENVS", "SESSION_ENV_IDS", "__version__", "make_parallel"]
