"""`python -m evpnd.lab up|down|exec|inspect`, usable before the main CLI wires `lab`."""

import sys

from evpnd.lab.cli import main

sys.exit(main())
