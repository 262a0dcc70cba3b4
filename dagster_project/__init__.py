"""The Dagster project and the command line: ``definitions`` merges every domain's
``Definitions`` from ``assets_defs`` with the sensors, schedules and resources configured
from the environment; ``local_run`` runs a batch to completion without a daemon, through the
same sensors; ``cli`` is the ``vario`` command."""
