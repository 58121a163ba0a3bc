import sys

from codeact.m3tooleval.cli import run

sys.exit(run())
