def down(n):
    return down(n + 1)


def main():
    return down(0)
