import sys

from evpnd.cli import main

sys.exit(main())
