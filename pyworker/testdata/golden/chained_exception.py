def parse(text):
    return int(text)


def main():
    try:
        parse("abc")
    except ValueError as e:
        raise KeyError("config") from e
