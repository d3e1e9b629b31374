"""User simulators as plug-ins: the protocol the env calls, the agenda user, and the registry.

Every env takes ``user=`` (default ``"agenda"``): a registered name, ``"package.module:attr"``
or an entry point of the ``dialog_env.users`` group, naming a factory called with the world.
"""

from dialog_env.users.agenda import AgendaUser, AgendaUserConfig
from dialog_env.users.base import OUTCOMES, UserSimulator, UserTurn
from dialog_env.users.registry import DEFAULT_USER, ENTRY_POINT_GROUP, USERS, make_user, register_user

__all__ = [
    "DEFAULT_USER",
    "ENTRY_POINT_GROUP",
    "OUTCOMES",
    "USERS",
    "AgendaUser",
    "AgendaUserConfig",
    "UserSimulator",
    "UserTurn",
    "make_user",
    "register_user",
]
