def main(record):
    return "x" * 80
