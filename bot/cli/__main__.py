"""`python -m bot.cli`: the `alpaca-bot` command."""

import sys

from bot.cli.main import main

sys.exit(main())
