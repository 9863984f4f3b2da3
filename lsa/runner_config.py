"""Old name of :mod:`lsa.apis.runner_config` (kept so existing imports keep working)."""
from lsa.apis.runner_config import *  # noqa: F401,F403
from lsa.apis.runner_config import __all__  # noqa: F401
