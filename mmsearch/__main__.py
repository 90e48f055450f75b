"""python -m mmsearch COMMAND: the same command line as the installed ``mmsearch``."""
from mmsearch.cli import main

main()
