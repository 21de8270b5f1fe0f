import sys

from vecrank.cli import main

sys.exit(main())
