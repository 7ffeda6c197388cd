"""Entry point for `kopf run -m camfleet_operator.entry` (settings from `CAMFLEET_*` env).

`python -m camfleet_operator` is the supported way; this module exists for people who prefer
kopf's own CLI flags (`--namespace`, `--standalone`, `--liveness`, ...).
"""

import kopf

from camfleet_operator.main import register
from camfleet_operator.reconcile import Context
from camfleet_operator.settings import Settings

register(kopf.get_default_registry(), Context.create(Settings()))  # type: ignore[call-arg]
