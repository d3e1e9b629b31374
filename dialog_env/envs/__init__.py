"""PersonaRec environments (act mode and text mode)."""

from dialog_env.envs.persona_rec import PersonaRecEnv
from dialog_env.envs.persona_rec_text import PersonaRecTextEnv

__all__ = ["PersonaRecEnv", "PersonaRecTextEnv"]
