import sys

from tinytf.cli import main

sys.exit(main())
