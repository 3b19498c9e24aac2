"""``python -m conv3dt``: the command line (see ``conv3dt --help``)."""
import sys

from conv3dt._cli import main

if __name__ == "__main__":
    sys.exit(main())
