"""The Dagster project and the command line: ``definitions`` merges every domain's
``Definitions`` from ``assets_defs`` with the sensors, schedules and resources configured
from the environment; ``local_run`` runs a batch to completion without a daemon, through the
same sensors; ``local_server`` starts ``vario serve`` from Python (the notebooks); ``cli`` is
the ``vario`` command."""
