import sys


def main():
    return {"stdin": sys.stdin.read()}
