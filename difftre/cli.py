"""The ``difftre`` command line."""
import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="difftre", description=__doc__)
    parser.parse_args(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
