import collections
import enum


class Color(enum.IntEnum):
    RED = 1


class Shouty(str):
    def __str__(self):
        return "NOT THIS"


class Weird(float):
    def __repr__(self):
        return "nope"


Pair = collections.namedtuple("Pair", "a b")


def main():
    # Subclasses of JSON types are encoded from their base-type value,
    # never through their own (user) methods.
    return {
        "ordered": collections.OrderedDict([("z", 1), ("a", 2)]),
        "enum": Color.RED,
        "str": Shouty("quiet"),
        "float": Weird(1.5),
        "pair": Pair(1, (2, 3)),
        "bools": [True, False],
        "big": 2 ** 70,
        "neg": -0.0,
    }
