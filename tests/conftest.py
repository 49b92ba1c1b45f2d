import os
import sys

# Tests use the eager statistics path unless they ask for compilation: compiling costs seconds.
os.environ.setdefault("FEATMON_COMPILE", "0")
sys.path.insert(0, os.path.dirname(__file__))
