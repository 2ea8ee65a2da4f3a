"""Frozen entry point of the command line (`iqk-studio-cli`); PyInstaller starts this script."""

import sys

from iqk_studio.cli import main

if __name__ == "__main__":
    sys.exit(main())
