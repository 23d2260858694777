import math

limits = {"a": 1}
value = limits["b"]


def main():
    return value
