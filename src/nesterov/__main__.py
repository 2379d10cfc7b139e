import sys

from nesterov.cli import main

sys.exit(main())
