import sys


def main():
    print("to stdout")
    print("to stderr", file=sys.stderr)
    return 1
