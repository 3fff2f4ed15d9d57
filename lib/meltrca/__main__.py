import sys

from meltrca.cli import main

sys.exit(main())
