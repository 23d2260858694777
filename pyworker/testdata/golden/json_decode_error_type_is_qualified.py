import json


def main():
    # Frames inside the json module are left out; the type keeps its module.
    json.loads("[1, 2")
