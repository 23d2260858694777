def main():
    return 10 ** 5000
