"""Frozen entry point of the window (`iqk-studio`); PyInstaller starts this script."""

import sys

from iqk_studio.gui.app import main

if __name__ == "__main__":
    sys.exit(main())
