"""``python -m clothclf`` is the ``clothclf`` command."""

import sys

from clothclf.cli import main

sys.exit(main())
