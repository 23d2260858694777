class QuotaExceeded(Exception):
    pass


def check(used):
    if used > 10:
        raise QuotaExceeded(f"used {used} of 10")


def main():
    check(11)
