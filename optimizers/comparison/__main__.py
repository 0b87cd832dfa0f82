"""``python -m optimizers.comparison``: the same as the ``smallstate-compare`` command."""

from .cli import main

raise SystemExit(main())
