def ratio(a, b):
    return a / b


def main():
    values = [1, 2, 0]
    return [ratio(1, v) for v in values]
