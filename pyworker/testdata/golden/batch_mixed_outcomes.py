import os


def main(record):
    kind = record["kind"]
    print("record", kind)
    os.write(1, b"raw write lands in the run's stdout\n")
    if kind == "set":
        return {1, 2}
    if kind == "big":
        return "y" * 5000
    if kind == "chatty":
        print("z" * 5000)
        return "chatty"
    if kind == "exit":
        raise SystemExit(2)
    return (kind, None)
