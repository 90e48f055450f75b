#!/usr/bin/env python3
"""The repository's command line, as Django keeps manage.py: the same commands as the installed
``mmsearch`` and ``python -m mmsearch`` (mmsearch.cli), run from a checkout installed with pip -e."""
from mmsearch.cli import main

if __name__ == "__main__":
    main()
