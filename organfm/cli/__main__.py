import sys

from organfm.cli.main import main

sys.exit(main())
