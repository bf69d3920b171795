import sys

from evaluator_client.cli import main

sys.exit(main())
