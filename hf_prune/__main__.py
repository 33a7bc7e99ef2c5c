"""``python -m hf_prune`` runs the CLI."""

import sys

from hf_prune.cli import main

sys.exit(main())
