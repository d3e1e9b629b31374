"""dialog_env: Gymnasium environments for dialogue policies against a hidden-persona user.

Importing the package registers ``dialog_env/PersonaRec-v0`` (act mode) and
``dialog_env/PersonaRecText-v0`` (text mode) with Gymnasium.
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
__all__ = ["ENV_IDS", "MAX_EPISODE_STEPS", "__version__"]
