import sys

from tinytf.apps.cli import main

sys.exit(main())
