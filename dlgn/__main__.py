import sys

from dlgn.cli import main

sys.exit(main())
